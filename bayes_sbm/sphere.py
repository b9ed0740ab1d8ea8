"""Exact partition function of the spherical Boltzmann machine (THEORY.md §2).

The SBM ``p(x | W) = exp(½ xᵀWx) / Z(W)`` on the sphere ``x·x = N`` has a
partition function that depends on W only through its eigenvalues
``λ_1 ≥ … ≥ λ_N``.  With ``φ(z) = N z/2 − ½ Σ_i log(z − λ_i)``,

    Z(λ) = Γ(N/2) (N/2)^(1−N/2) · (1/2πi) ∫_{z*−i∞}^{z*+i∞} e^{φ(z)} dz .

Everything here works from the saddle point ``z* = λ_1 + ε`` of φ (the root of
``(1/N) Σ 1/(z − λ_i) = 1`` above the spectrum) and the gaps
``d_i = z* − λ_i``.  The contour is the hyperbola of THEORY.md §2, scaled by
the saddle curvature; the trapezoid rule on it gives ``log Z`` to ~1e-12
absolute for N = 2…5000 in paramagnetic, critical, spin-glass and condensed
spectra (the recipe's uniform 512-node rule; here the nodes are uniform in t
with ``s = 2 sinh t``, which reaches the same accuracy with 64 nodes).  The
same quadrature nodes give

* the gradient ``g_i = ∂log Z/∂λ_i = ½⟨(z − λ_i)⁻¹⟩`` (``Σ g_i = N/2``), so
  ``E[y_i²] = 2 g_i`` for the eigen-coordinates ``y = Vᵀx``;
* the Hessian ``∂²log Z/∂λ_i∂λ_j = ¼R_ij + ½δ_ij R_ii − g_i g_j`` with
  ``R_ij = ⟨(z − λ_i)⁻¹(z − λ_j)⁻¹⟩``;
* the divided differences ``(g_i − g_j)/(λ_i − λ_j) = ½R_ij`` without ever
  dividing by an eigenvalue gap.

These feed custom JVP rules, so ``log Z(W)`` costs one ``eigh`` per gradient
and its first and second derivatives stay finite at repeated eigenvalues
(W = 0, W = I, degenerate spikes), where differentiating ``eigh``'s
eigenvectors gives NaN.

Exact sampling of the eigen-coordinates (:func:`sample_eigen`): rejection from
an angular central Gaussian, or — when a mode is condensed, where that envelope
accepts only ∝ 1/√N — the condensed-mode split, which draws the top coordinate
and the rest jointly with acceptance ≈ 0.98 (see ``_split_envelope``).

All functions take float64 arrays (the package enables ``jax_enable_x64``);
the last axis holds the N eigenvalues (or the N×N matrix) and leading axes
batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._checks import finite_array, is_traced, one_of

__all__ = [
    "MIN_DIMENSION",
    "DEFAULT_NUM_NODES",
    "SaddlePoint",
    "saddle_point",
    "log_partition",
    "log_partition_saddle",
    "log_partition_and_gradient",
    "partition_gradient",
    "partition_hessian",
    "log_partition_matrix",
    "log_partition_matrix_and_gradient",
    "second_moment_eigen",
    "SAMPLER_METHODS",
    "SPLIT_MIN_DIMENSION",
    "MAX_REJECTION_ROUNDS",
    "sampler_acceptance",
    "sample_eigen",
    "check_draws",
]

#: Smallest dimension supported (N = 1 is two points, not a sphere with a density).
MIN_DIMENSION = 2
#: Quadrature nodes on the half-contour s ≥ 0.  With the sinh map, 48 nodes gave
#: ≤ 1e-13 and 64 nodes ≤ 1e-15 absolute in log Z against a 2048-node uniform rule, for
#: N = 2…3000 in PM, critical, SG, condensed (λ_1 = 3, 50), doubly degenerate spectra.
DEFAULT_NUM_NODES = 64
#: Scale a of the node map s = a·sinh(t) (a = 2 was the most accurate of 0.5, 1, 2 at 32–64 nodes).
SINH_SCALE = 2.0
#: Bend of the hyperbolic contour (s₀ in THEORY.md §2).
CONTOUR_BEND = 4.0
#: The tail is cut where the integrand is below exp(-TAIL_LOG_CUTOFF) of its value at the saddle.
TAIL_LOG_CUTOFF = 40.0
#: Trial points of the tail-length probe (geometric between s = 2 and MAX_CONTOUR_LENGTH).
TAIL_PROBES = 24
#: Longest half-contour ever used (s units); the integrand is far below e^-40 there for N ≥ 2.
MAX_CONTOUR_LENGTH = 76.8
#: Newton iterations cap for the saddle (converges monotonically in ≲ log2(N) + 10 steps).
SADDLE_MAX_ITER = 200


def _stirling_error(x: float) -> float:
    """``log Γ(x) − [(x − ½) log x − x + ½ log 2π]`` in double precision.

    Direct for small x (no cancellation there), asymptotic series otherwise
    (the omitted term is below 1e-17 for x ≥ 10).
    """
    if x < 10.0:
        return math.lgamma(x) - ((x - 0.5) * math.log(x) - x + 0.5 * math.log(2 * math.pi))
    inv = 1.0 / x
    inv2 = inv * inv
    coeffs = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156)
    total, power = 0.0, inv
    for c in coeffs:
        total += c * power
        power *= inv2
    return total


def _log_prefactor(n: int) -> float:
    """``½ log(N/2) + ½ log 2π + stirling_error(N/2)``: the O(1) part of
    ``log Γ(N/2) + (1 − N/2) log(N/2) − N/2`` (THEORY.md §2)."""
    return 0.5 * math.log(n / 2) + 0.5 * math.log(2 * math.pi) + _stirling_error(n / 2)


def _check_dimension(n: int) -> None:
    if n < MIN_DIMENSION:
        raise ValueError(
            f"eigenvalues: need N >= {MIN_DIMENSION} eigenvalues on the last axis, got N = {n}"
        )


def _check_finite(values, name: str = "eigenvalues") -> None:
    """``ValueError`` naming the first non-finite entry of concrete input (:func:`finite_array`); a no-op
    under tracing and for an empty batch."""
    if not is_traced(values) and np.size(values):
        finite_array(name, values)


def _saddle_value(gaps, lam):
    """``½Σ(d_i − 1 − log d_i) + ½Σλ_i``: the saddle value of ``log Z`` without its O(1) prefactor."""
    return 0.5 * jnp.sum(gaps - 1.0 - jnp.log(gaps), axis=-1) + 0.5 * jnp.sum(lam, axis=-1)


def _gaussian_correction(sum_inv_gaps2, n: int):
    """``log Z`` − saddle value at Gaussian order: prefactor + ``log(σ/√2π)`` with ``σ⁻² = ½Σ d_i⁻²``."""
    return _log_prefactor(n) - 0.5 * jnp.log(0.5 * sum_inv_gaps2) - 0.5 * math.log(2 * math.pi)


class SaddlePoint(NamedTuple):
    """Saddle point of ``φ(z) = Nz/2 − ½Σlog(z − λ_i)`` (THEORY.md §2).

    Attributes
    ----------
    mu : Array, shape (...)
        Finite-N Lagrange multiplier ``z* = λ_1 + ε``, root of ``G(z) = 1``.
    eps : Array, shape (...)
        ``z* − λ_1``, in ``[1/N, 1]``.
    gaps : Array, shape (..., N)
        ``d_i = z* − λ_i > 0``.
    """

    mu: jax.Array
    eps: jax.Array
    gaps: jax.Array


def saddle_point(eigenvalues) -> SaddlePoint:
    """Solve ``(1/N) Σ_i 1/(ε + λ_1 − λ_i) = 1`` for ε by monotone Newton.

    Parameters
    ----------
    eigenvalues : array_like, shape (..., N)
        Eigenvalues of βW (any order).

    Returns
    -------
    SaddlePoint
        ``mu``, ``eps`` with shape (...), ``gaps`` with shape (..., N).

    Notes
    -----
    THEORY.md §2: starting from ε = 1/(2N) (where the sum exceeds 1) Newton
    on this convex decreasing function increases monotonically to the root.
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    n = lam.shape[-1]
    _check_dimension(n)
    _check_finite(lam)
    top = jnp.max(lam, axis=-1)
    delta = top[..., None] - lam

    def newton(eps):
        inv = 1.0 / (eps[..., None] + delta)
        f = jnp.mean(inv, axis=-1) - 1.0
        fp = -jnp.mean(inv * inv, axis=-1)
        return eps - f / fp

    def cond(state):
        it, eps, prev = state
        moving = jnp.any(eps - prev > 4 * jnp.finfo(jnp.float64).eps * eps)
        return (it < SADDLE_MAX_ITER) & moving

    def body(state):
        it, eps, _ = state
        return it + 1, newton(eps), eps

    eps0 = jnp.full(top.shape, 0.5 / n)
    _, eps, _ = lax.while_loop(cond, body, (0, newton(eps0), eps0))
    eps = lax.stop_gradient(eps)
    return SaddlePoint(mu=top + eps, eps=eps, gaps=eps[..., None] + delta)


class _Contour(NamedTuple):
    """Quadrature on the hyperbolic contour: ``⟨q⟩ = Σ_k Im(w_k q(z_k)) / J``."""

    log_norm: jax.Array  # log J, shape (...)
    weights: jax.Array  # complex, shape (..., M): exp(φ(z_k) − φ*) z'(s_k) · trapezoid weight / π
    offsets: jax.Array  # complex, shape (..., M): Δ_k = z_k − z*
    gaps: jax.Array  # d_i, shape (..., N)
    log_z: jax.Array  # exact log Z, shape (...)


def _phase_real(offsets, gaps, n):
    """``Re[φ(z* + Δ) − φ*]`` for offsets (..., M) and gaps (..., N)."""
    ratio = offsets[..., :, None] / gaps[..., None, :]
    return 0.5 * n * offsets.real - 0.25 * jnp.sum(jnp.log(jnp.abs(1.0 + ratio) ** 2), axis=-1)


def _hyperbola(s, sigma):
    root = jnp.sqrt(1.0 + (s / CONTOUR_BEND) ** 2)
    offset = sigma[..., None] * (1j * s - CONTOUR_BEND * (root - 1.0))
    deriv = sigma[..., None] * (1j - (s / CONTOUR_BEND) / root)
    return offset, deriv


def _tail_trials(sigma):
    """Trial points ``s`` of the tail probe (TAIL_PROBES,) and their contour offsets (..., TAIL_PROBES)."""
    trial = jnp.geomspace(2.0, MAX_CONTOUR_LENGTH, TAIL_PROBES)
    return trial, _hyperbola(trial, sigma)[0]


def _tail_length(trial, small):
    """Half-contour length: the first trial point where the integrand is below e^-TAIL_LOG_CUTOFF (``small``)."""
    return jnp.where(jnp.any(small, axis=-1), trial[jnp.argmax(small, axis=-1)], MAX_CONTOUR_LENGTH)


def _sinh_nodes(length, sigma, num_nodes: int):
    """Nodes uniform in t with s = a·sinh(t) on ``[0, length]``: offsets Δ_k (..., M) and trapezoid weights
    ``z'(s_k) ds/dt · trap_k · step / π`` (..., M) (the integrand exp(φ − φ*) still to be multiplied in).

    Fine steps near the saddle (where a near-singularity sits at distance ≥ 1/√2 in s), geometric spacing
    in the exponential tail, so O(log s_max) nodes suffice.
    """
    t_max = jnp.arcsinh(length / SINH_SCALE)
    unit = jnp.linspace(0.0, 1.0, num_nodes)
    t = t_max[..., None] * unit
    step = t_max / (num_nodes - 1)
    offsets, deriv = _hyperbola(SINH_SCALE * jnp.sinh(t), sigma)
    jac = SINH_SCALE * jnp.cosh(t)
    return offsets, deriv * (jac * jnp.where(unit == 0.0, 0.5, 1.0) * step[..., None] / math.pi)


def _contour(eigenvalues, num_nodes: int = DEFAULT_NUM_NODES) -> _Contour:
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    n = lam.shape[-1]
    sp = saddle_point(lam)
    gaps = sp.gaps
    sigma = 1.0 / jnp.sqrt(0.5 * jnp.sum(gaps**-2, axis=-1))

    trial, trial_offsets = _tail_trials(sigma)
    length = lax.stop_gradient(_tail_length(trial, _phase_real(trial_offsets, gaps, n) < -TAIL_LOG_CUTOFF))
    offsets, coef = _sinh_nodes(length, sigma, num_nodes)
    ratio = offsets[..., :, None] / gaps[..., None, :]
    log_integrand = 0.5 * n * offsets - 0.5 * jnp.sum(jnp.log1p(ratio), axis=-1)
    weights = jnp.exp(log_integrand) * coef
    norm = jnp.sum(weights.imag, axis=-1)
    log_norm = jnp.log(norm)
    trace = jnp.sum(lam, axis=-1)
    log_z = (
        _log_prefactor(n)
        + 0.5 * jnp.sum(gaps - 1.0 - jnp.log(gaps), axis=-1)
        + 0.5 * trace
        + log_norm
    )
    return _Contour(log_norm=log_norm, weights=weights / norm[..., None], offsets=offsets, gaps=gaps, log_z=log_z)


def _resolvent(ct: _Contour):
    """``(z_k − λ_i)⁻¹ = 1/(d_i + Δ_k)``, shape (..., M, N)."""
    return 1.0 / (ct.gaps[..., None, :] + ct.offsets[..., :, None])


def _average(ct: _Contour, values):
    """Contour average ``⟨q⟩`` of values with shape (..., M, *rest)."""
    w = ct.weights.reshape(ct.weights.shape + (1,) * (values.ndim - ct.weights.ndim))
    return jnp.sum((w * values).imag, axis=ct.weights.ndim - 1)


def _gradient_from(ct: _Contour):
    return 0.5 * _average(ct, _resolvent(ct))


def _hessian_vector(ct: _Contour, res, grad, vec):
    """``H v`` with ``H = ¼R + ½ diag(R_ii) − g gᵀ`` (no N×N matrix formed)."""
    rv = _average(ct, res * jnp.sum(res * vec[..., None, :], axis=-1, keepdims=True))
    rii = _average(ct, res * res)
    return 0.25 * rv + 0.5 * rii * vec - grad * jnp.sum(grad * vec, axis=-1, keepdims=True)


@jax.custom_jvp
def _logz_and_grad(eigenvalues):
    ct = _contour(eigenvalues)
    return ct.log_z, _gradient_from(ct)


@_logz_and_grad.defjvp
def _logz_and_grad_jvp(primals, tangents):
    # The primal outputs come from the custom function itself, so that
    # differentiating the gradient again uses this rule (not the quadrature).
    (lam,), (dlam,) = primals, tangents
    log_z, grad = _logz_and_grad(lam)
    return (log_z, grad), (jnp.sum(grad * dlam, axis=-1), _hessian_vector_product(lam, dlam))


def _hessian_vector_product(lam, dlam):
    ct = _contour(lam)
    res = _resolvent(ct)
    return _hessian_vector(ct, res, 0.5 * _average(ct, res), dlam)


def log_partition(eigenvalues):
    """Exact ``log Z`` of the SBM from the eigenvalues of βW (THEORY.md §2).

    Parameters
    ----------
    eigenvalues : array_like, shape (..., N)
        Eigenvalues of βW (any order), N ≥ 2; leading axes batch.

    Returns
    -------
    Array, shape (...)
        ``log E_{x~U(S_N)}[exp(½ Σ λ_i y_i²)]``, float64.  Differentiable to
        any order (custom JVP: gradient ``½⟨(z − λ_i)⁻¹⟩``, Hessian from
        ``R_ij``), finite at repeated eigenvalues.

    Raises
    ------
    ValueError
        For concrete (not traced) input with a non-finite eigenvalue or N < 2.
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    _check_dimension(lam.shape[-1])
    _check_finite(lam)
    return _logz_and_grad(lam)[0]


def log_partition_and_gradient(eigenvalues):
    """``(log Z, ∂log Z/∂λ)`` from one quadrature; shapes (...) and (..., N)."""
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    _check_dimension(lam.shape[-1])
    _check_finite(lam)
    return _logz_and_grad(lam)


def partition_gradient(eigenvalues):
    """``g_i = ∂log Z/∂λ_i = ½⟨(z − λ_i)⁻¹⟩``, shape (..., N); ``Σ_i g_i = N/2``.

    ``2 g_i = E[y_i²]`` is the mean square of the i-th eigen-coordinate and
    ``2 g_i / N`` the fraction of ``|x|²`` it carries (the condensate, for the
    top mode).
    """
    return log_partition_and_gradient(eigenvalues)[1]


def partition_hessian(eigenvalues):
    """Full Hessian ``∂²log Z/∂λ_i∂λ_j = ¼R_ij + ½δ_ij R_ii − g_i g_j``, shape (..., N, N).

    Forms the N×N matrix (O(N²M) work); use JVPs of :func:`partition_gradient`
    for Hessian-vector products.
    """
    ct = _contour(jnp.asarray(eigenvalues, dtype=jnp.float64))
    res = _resolvent(ct)
    grad = 0.5 * _average(ct, res)
    r = _pair_average(ct, res)
    rii = jnp.diagonal(r, axis1=-2, axis2=-1)
    eye = jnp.eye(res.shape[-1])
    return 0.25 * r + 0.5 * eye * rii[..., None, :] - grad[..., :, None] * grad[..., None, :]


def _pair_average(ct: _Contour, res):
    """``R_ij = ⟨(z − λ_i)⁻¹ (z − λ_j)⁻¹⟩`` as one (N×M)·(M×N) product, shape (..., N, N)."""
    weighted = res * ct.weights[..., :, None]
    return jnp.einsum("...mi,...mj->...ij", weighted, res).imag


def log_partition_saddle(eigenvalues, gaussian_correction: bool = False):
    """Large-N (saddle-point) value of ``log Z`` (THEORY.md §2).

    ``log Z ≈ (N/2)[μ − 1 − (1/N) Σ log(μ − λ_i)]`` with μ the finite-N
    saddle ``z*``.  With ``gaussian_correction=True`` adds the Gaussian
    fluctuation term ``½log(N/2) + ½log 2π + stirling(N/2) + log(σ_c/√2π)``.

    Parameters
    ----------
    eigenvalues : array_like, shape (..., N)

    Returns
    -------
    Array, shape (...)
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    sp = saddle_point(lam)
    value = _saddle_value(sp.gaps, lam)
    if gaussian_correction:
        value = value + _gaussian_correction(jnp.sum(sp.gaps**-2, axis=-1), lam.shape[-1])
    return value


def second_moment_eigen(eigenvalues):
    """``E[y_i²] = 2 ∂log Z/∂λ_i`` in the eigenbasis, shape (..., N); sums to N."""
    return 2.0 * partition_gradient(eigenvalues)


# ---------------------------------------------------------------------------
# Matrix level: log Z(W) with one eigh per value-and-gradient.
# ---------------------------------------------------------------------------


def _check_square(W):
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"W: expected shape (..., N, N), got {tuple(W.shape)}")
    _check_dimension(W.shape[-1])


def _sandwich(V, diag_or_mat):
    if diag_or_mat.ndim == V.ndim - 1:
        return jnp.einsum("...ij,...j,...kj->...ik", V, diag_or_mat, V)
    return jnp.einsum("...ij,...jl,...kl->...ik", V, diag_or_mat, V)


@jax.custom_jvp
def log_partition_matrix_and_gradient(W):
    """``(log Z(W), ∇_W log Z(W))`` with ``∇_W log Z = V diag(g) Vᵀ``.

    Parameters
    ----------
    W : array_like, shape (..., N, N)
        Symmetric coupling matrices (β already applied); only the symmetric
        part is used.

    Returns
    -------
    log_z : Array, shape (...)
    grad : Array, shape (..., N, N)
        ``½ E[x xᵀ]``.

    Notes
    -----
    Custom JVP (THEORY.md §2): ``d log Z = tr(∇ dW)`` and, for the gradient,
    the Daleckii–Krein / Lewis–Sendov rule
    ``d∇ = V [diag(H diag(Ẽ)) + A ∘ Ẽ] Vᵀ`` with ``Ẽ = Vᵀ dW V``,
    ``A_ij = (g_i − g_j)/(λ_i − λ_j) = ½R_ij`` (i ≠ j) from the contour, so
    no eigenvalue gap is divided by and second derivatives are finite at
    repeated eigenvalues.
    """
    lam, V = jnp.linalg.eigh(W)
    ct = _contour(lam)
    grad = _gradient_from(ct)
    return ct.log_z, _sandwich(V, grad)


@log_partition_matrix_and_gradient.defjvp
def _matrix_jvp(primals, tangents):
    (W,), (dW,) = primals, tangents
    log_z, grad = log_partition_matrix_and_gradient(W)
    dsym = 0.5 * (dW + jnp.swapaxes(dW, -1, -2))
    dlogz = jnp.sum(grad * dsym, axis=(-2, -1))
    return (log_z, grad), (dlogz, _gradient_matrix_tangent(W, dsym))


def _gradient_matrix_tangent(W, dsym):
    """Daleckii–Krein derivative of ``V diag(g) Vᵀ`` in direction dsym."""
    lam, V = jnp.linalg.eigh(W)
    ct = _contour(lam)
    res = _resolvent(ct)
    grad = 0.5 * _average(ct, res)
    rotated = jnp.einsum("...ji,...jk,...kl->...il", V, dsym, V)
    diag = jnp.diagonal(rotated, axis1=-2, axis2=-1)
    hv = _hessian_vector(ct, res, grad, diag)
    divided = 0.5 * _pair_average(ct, res)
    eye = jnp.eye(W.shape[-1])
    inner = (1.0 - eye) * divided * rotated + eye * hv[..., None, :]
    return _sandwich(V, inner)


def log_partition_matrix(W):
    """Exact ``log Z(W)`` from a symmetric matrix, shape (..., N, N) → (...).

    One ``eigh`` per value and gradient; finite first and second derivatives
    everywhere (see :func:`log_partition_matrix_and_gradient`).
    """
    W = jnp.asarray(W, dtype=jnp.float64)
    _check_square(W)
    return log_partition_matrix_and_gradient(W)[0]


# ---------------------------------------------------------------------------
# Exact samplers (THEORY.md §2).
#
# * "acg": rejection from an angular central Gaussian (Kent, Ganeiber, Mardia)
#   on the whole sphere; acceptance exp(log Z − saddle value) ≈ 0.86 in PM
#   spectra but ∝ 1/√N with a condensed mode.
# * "split" (condensed-mode split): with t = y_top²/N, the uniform measure on
#   S_N factorises as t ~ Beta(½, (N−1)/2) times a uniform point of the
#   sub-sphere of radius² N(1 − t) in the other N − 1 eigen-directions, so
#
#       p(t, w) ∝ t^{-1/2} (1 − t)^{(N−3)/2} e^{Nλ_top t/2} · exp(½ κ(t) Σ_{i≠top} λ_i w_i²),
#
#   with w on the (N−1)-sphere of radius² N − 1 and κ(t) = (1 − t) N/(N − 1);
#   the marginal of t is t^{-1/2}(1 − t)^{(N−3)/2} e^{Nλ_top t/2} Z_{N−1}(κ(t) λ_rest)
#   (normalised by B(½, (N−1)/2) Z_N).  (t, w) are drawn *jointly* by rejection:
#   t from a piecewise-exponential envelope, w from an ACG whose shape is fixed
#   on each t-interval, accepted with the exact ratio.  No value of Z_{N−1} is
#   ever needed, and the envelope is valid by convexity (see _split_envelope).
# ---------------------------------------------------------------------------

#: Samplers accepted by :func:`sample_eigen` and :func:`sampler_acceptance`.
SAMPLER_METHODS = ("auto", "acg", "split")
#: Smallest N for the condensed-mode split: the remaining N − 1 directions must form a sphere with a density.
SPLIT_MIN_DIMENSION = MIN_DIMENSION + 1
#: Intervals of the piecewise envelope in t = y_top²/N (static).  Measured with 96: split acceptance ≈ 0.98 with
#: one condensed mode and ≈ the ACG's 0.87 in PM/critical spectra for N = 3…2·10⁴ (the rest's ACG sets the ceiling).
SPLIT_INTERVALS = 96
#: First interval [0, t₁] with t₁ = SPLIT_FIRST_NODE/N, bounded by c·t^{-1/2}: its slack is ≤ e^{t₁(N/2 + 1)} − 1 ≈ 5e-4
#: (ζ ≤ 1/κ, so the log-slope there is at most about N/2 + 1), and it holds little mass since E[t] ≥ 1/N.
SPLIT_FIRST_NODE = 1e-3
#: Last interval [1 − δ, 1] (uniform proposal for the rest): δ = SPLIT_LAST_FRACTION·min(1 − E[t], 1/(1 + N·spread)),
#: so it holds little mass and its inner acceptance is ≥ exp(−SPLIT_LAST_FRACTION/2).
SPLIT_LAST_FRACTION = 1e-3
#: Width of the fine core of the grid, in standard deviations of logit(t) (the grid is v = v̄ + w·sinh(x), x uniform).
SPLIT_CORE_WIDTH = 1.0
#: Hard cap on rejection rounds in one call (every loop has a cap; rows not filled come back as NaN).
MAX_REJECTION_ROUNDS = 100_000
#: Data-dependent round cap: enough rounds for ROUND_SAFETY·num_samples + ROUND_SLACK expected acceptances;
#: a binomial count falls below a quarter of a mean ≥ 200 with probability < e^{-56} (Chernoff).
ROUND_SAFETY = 4.0
#: See ROUND_SAFETY.
ROUND_SLACK = 200.0
#: The cap's acceptance uses the Gaussian-corrected saddle for log Z (no contour in the sampler), whose error is
#: ≥ −½(1 − log 2) ≈ −0.153 (THEORY §2; measured worst −0.1534 for N = 2…2000 in PM, condensed, degenerate spectra):
#: the cap assumes an acceptance e^{ROUND_LOG_MARGIN} times smaller than that proxy.
ROUND_LOG_MARGIN = 1.0
#: log Γ(½) = ½ log π (for B(½, (N−1)/2)).
_LOG_BETA_HALF = math.lgamma(0.5)


def check_draws(draws, what: str = "draws"):
    """Host-side check that every row of ``draws`` was filled; returns ``draws``.

    The samplers return NaN rows when their round cap is hit (non-finite or
    pathological eigenvalues under ``jit``).  Raises ``RuntimeError`` naming
    ``what`` if any row is not finite; a no-op on tracers.
    """
    if is_traced(draws):
        return draws
    bad = ~np.all(np.isfinite(np.atleast_1d(np.asarray(draws))), axis=-1)
    if bad.any():
        raise RuntimeError(
            f"{what}: {int(bad.sum())} of {bad.size} draws could not be filled (NaN rows): the rejection "
            "sampler hit its round cap; the eigenvalues are non-finite or the acceptance is too small"
        )
    return draws


def _uses_split(method: str, n: int) -> bool:
    """Whether ``method`` runs the split code (``"split"``, or ``"auto"`` for N ≥ SPLIT_MIN_DIMENSION, which
    still picks the plain ACG inside when it accepts more); ``ValueError`` for an unknown method or
    ``"split"`` below SPLIT_MIN_DIMENSION."""
    one_of("method", method, SAMPLER_METHODS)
    if n >= SPLIT_MIN_DIMENSION:
        return method != "acg"
    if method == "split":
        raise ValueError(f"eigenvalues: the split sampler needs N >= {SPLIT_MIN_DIMENSION}, got N = {n}")
    return False


def _log_exprel(x):
    """``log((eˣ − 1)/x)`` without overflow or cancellation (0 at x = 0)."""
    safe = jnp.where(x == 0, 1.0, x)
    pos = safe + jnp.log(-jnp.expm1(-safe) / safe)
    neg = jnp.log(jnp.expm1(safe) / safe)
    return jnp.where(x == 0, 0.0, jnp.where(x > 0, pos, neg))


def _exponential_inverse_cdf(u, beta, width):
    """τ ∈ [0, w] with density ∝ e^{βτ}, from u ~ U(0, 1) (stable for any sign and size of βw)."""
    x = beta * width
    safe = jnp.where(x == 0, 1.0, beta)
    neg = jnp.log1p(u * jnp.expm1(jnp.minimum(x, 0.0))) / safe
    pos = width + jnp.log1p((1.0 - u) * jnp.expm1(-jnp.maximum(x, 0.0))) / safe
    tau = jnp.where(x == 0, u * width, jnp.where(x > 0, pos, neg))
    return jnp.clip(tau, 0.0, width)


def _psi(t):
    """``−½ log t − log(1 − t)``: the convex t-dependence of the envelope inside one ACG interval."""
    return -0.5 * jnp.log(t) - jnp.log1p(-t)


class _SplitEnvelope(NamedTuple):
    """Envelope of the condensed-mode split sampler for one spectrum (see :func:`_split_envelope`).

    K intervals ``[lo_k, lo_k + width_k]`` cover [0, 1]: k = 0 is ``[0, t₁]`` (bound c·t^{-1/2}),
    k = 1…K−2 use an ACG for the rest with shape ``ζ_k − μ_i``, k = K−1 is ``[1 − δ, 1]``
    (uniform proposal for the rest).  ``rows[k]`` are the normal scales of interval k
    (0 at the top coordinate); ``rows[K]`` is the plain ACG row ``√(ε/d_i)``.

    Acceptances are ``Z_N(μ) · exp(log_norm_*)`` exactly, with ``Z_N(μ) = Z_N(λ) e^{−Nλ_top/2}``,
    so comparing them needs no partition function.
    """

    top: jax.Array  # index of the split (largest) eigenvalue
    mu: jax.Array  # λ − λ_top, (N,)
    mu2: jax.Array  # max_{i≠top} μ_i ≤ 0
    eps: jax.Array  # ε of the full-sphere saddle (plain ACG)
    lo: jax.Array  # (K,)
    width: jax.Array  # (K,)
    zeta: jax.Array  # (K,) ACG shape parameter (unused for k = K−1)
    # log target r_k(t) = −½ log t + target_log1m_k · log(1 − t) + target_lin_k · t + target_const_k
    target_log1m: jax.Array  # (K,)
    target_lin: jax.Array  # (K,)
    target_const: jax.Array  # (K,)
    # log envelope_k(t) = env_log_k · log t + alpha_k + beta_k · (t − lo_k)  (env_log = −½ on k = 0, else 0)
    env_log: jax.Array  # (K,)
    alpha: jax.Array  # (K,)
    beta: jax.Array  # (K,)
    log_mass: jax.Array  # (K,) log ∫ envelope over interval k
    rows: jax.Array  # (K + 1, N)
    log_norm_split: jax.Array  # log B(½, (N−1)/2) − log Σ_k ∫ envelope_k
    log_norm_acg: jax.Array  # −(saddle value of log Z(μ)) = N/2 − φ*(μ) − log Γ-prefactor … (Kent bound)
    log_z_approx: jax.Array  # Gaussian-corrected saddle value of log Z_N(μ) (round cap only)


def _split_envelope(eigenvalues) -> _SplitEnvelope:
    """Build the piecewise envelope of the joint (t, rest) rejection sampler for a 1-D spectrum.

    With μ = λ − λ_top (so μ_top = 0 ≥ μ_i), n' = N − 1, κ(t) = (1 − t)N/n' and any ζ > max μ_rest,
    the ACG with precision ∝ κ(ζ − μ_i) on the rest satisfies (Kent's bound, z = κζ)

        exp(½κ n' Σ μ_i u_i²) / ACG(u) ≤ exp(B(t)),  B(t) = n'κζ/2 − ½Σ log(κ(ζ − μ_i)) − n'/2,

    with ratio (q e^{1−q})^{n'/2}, q = κ(ζ − Σ μ_i u_i²).  Hence the t-proposal must dominate
    t^{-1/2}(1 − t)^{(N−3)/2} e^{B(t)} = t^{-1/2}(1 − t)^{-1} e^{−Nζt/2 + C}: the O(N) powers of
    (1 − t) cancel exactly and ψ(t) = −½log t − log(1 − t) is convex, so its chord on each
    interval gives an exact piecewise-exponential envelope (no tangent slack of order N).
    On [0, t₁] the convex factor (1 − t)^{-1}e^{−Nζt/2} is bounded by its endpoint maximum and
    t^{-1/2} kept.  Near t = 1 (κ → 0) the rest is proposed uniformly with bound
    exp(½κ n' μ₂): target t^{-1/2}(1 − t)^{(N−3)/2} e^{N(1−t)μ₂/2}, bounded by the chord of
    −½log t and the tangent of the concave (N−3)/2·log(1 − t) at 1 − δ.

    ζ_k = z*(κ̂_k μ_rest)/κ̂_k at the interval's midpoint κ̂_k (the saddle of the rest), so the bound
    is nearly tight there; the grid is v = logit(t) = v̄ + w sinh(x), x uniform, v̄ = logit E[t],
    w = SPLIT_CORE_WIDTH·sd(logit t): fine where the mass is, geometric towards t = 0 and 1.
    E[t] and sd(t) are saddle-point estimates (E[y_i²] ≈ 1/d_i, Var(y_i²) ≈ 4∂²S/∂λ_i²
    = (2/d_i²)(1 − d_i⁻²/Σ_j d_j⁻²)); they only place the grid, the envelope is valid for any grid.

    The overall acceptance is exactly B(½, n'/2) Z_N(μ) / Σ_k ∫ envelope_k; the plain ACG's is
    Z_N(μ) e^{−S(μ)} with S the saddle value (THEORY.md §2).
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    n = lam.shape[-1]
    n_rest = n - 1
    k_int = SPLIT_INTERVALS
    top = jnp.argmax(lam)
    mu = lam - lam[top]
    idx = jnp.arange(n)
    is_top = idx == top
    rest_pos = jnp.arange(n_rest)
    mu_rest = jnp.where(rest_pos < top, mu[:-1], mu[1:])
    mu2 = jnp.max(mu_rest)
    spread = mu2 - jnp.min(mu_rest)

    # Full-sphere saddle: plain ACG row, its normaliser, and saddle estimates of E[t], sd(t).
    sp_full = saddle_point(mu)
    gaps = sp_full.gaps
    eps = gaps[top]
    inv = 1.0 / gaps
    inv2 = inv * inv
    saddle_value = _saddle_value(gaps, mu)
    sum_inv2 = jnp.sum(inv2)
    log_z_approx = saddle_value + _gaussian_correction(sum_inv2, n)
    mean_t = 1.0 / (n * eps)
    one_minus_mean = jnp.sum(jnp.where(is_top, 0.0, inv)) / n  # Σ_j 1/d_j = N at the saddle
    sd_t = jnp.sqrt(2.0 * jnp.sum(jnp.where(is_top, 0.0, inv2)) / sum_inv2) / (n * eps)

    # Grid in v = logit(t): K − 1 inner nodes t_1 = t₁ < … < t_{K−1} = 1 − δ; interval k = [t_k, t_{k+1}]
    # with t_0 = 0 and t_K = 1 (all arrays below have length K, indexed by interval).
    t1 = SPLIT_FIRST_NODE / n
    delta = SPLIT_LAST_FRACTION * jnp.minimum(one_minus_mean, 1.0 / (1.0 + n * spread))
    v1 = math.log(t1) - math.log1p(-t1)
    v_last = jnp.log1p(-delta) - jnp.log(delta)
    v_mean = jnp.clip(jnp.log(mean_t) - jnp.log(one_minus_mean), v1, v_last)
    w = jnp.clip(SPLIT_CORE_WIDTH * sd_t / (mean_t * one_minus_mean), 1e-6, 1e3)
    # (asinh, sinh and sigmoid written with exp/log: the library versions cost ~0.1 s of compile time each)
    x_ends = (jnp.stack([v1 - v_mean, v_last - v_mean]) / w)
    x_ends = jnp.sign(x_ends) * jnp.log(jnp.abs(x_ends) + jnp.sqrt(x_ends * x_ends + 1.0))
    x = x_ends[0] + (x_ends[1] - x_ends[0]) * jnp.linspace(0.0, 1.0, k_int - 1)
    v = jnp.clip(v_mean + 0.5 * w * (jnp.exp(x) - jnp.exp(-x)), v1, v_last)
    v = lax.cummax(v)  # monotone after rounding
    kk = jnp.arange(k_int)
    first, last = kk == 0, kk == k_int - 1
    v_lo = v[jnp.maximum(kk - 1, 0)]
    v_hi = v[jnp.minimum(kk, k_int - 2)]
    # exact end nodes t₁ and 1 − δ (so that the intervals tile [0, 1])
    lo = jnp.select([first, kk == 1, last], [0.0, t1, 1.0 - delta], 1.0 / (1.0 + jnp.exp(-v_lo)))
    hi = jnp.select([first, last, kk == k_int - 2], [t1, 1.0, 1.0 - delta], 1.0 / (1.0 + jnp.exp(-v_hi)))
    width = jnp.where(last, delta, hi - lo)

    # ACG shape per interval from the saddle of the rest at the interval's midpoint κ̂_k (in v).
    kappa_hat = (n / n_rest) * jnp.select([first, last], [1.0 - 0.5 * t1, 0.5], 1.0 / (1.0 + jnp.exp(0.5 * (v_lo + v_hi))))
    sp = saddle_point(kappa_hat[:, None] * mu_rest[None, :])
    zeta = sp.mu / kappa_hat
    gaps_rest = sp.gaps / kappa_hat[:, None]  # ζ_k − μ_i, (K, n')
    log_c = (
        0.5 * n * zeta - 0.5 * n_rest * math.log(n / n_rest) - 0.5 * jnp.sum(jnp.log(gaps_rest), axis=-1)
        - 0.5 * n_rest
    )

    # Targets r_k(t) = −½ log t + target_log1m·log(1 − t) + target_lin·t + target_const:
    #   ACG intervals: −½log t − log(1 − t) − Nζ_k t/2 + C_k;  last: (N−3)/2·log(1 − t) + N(1 − t)μ₂/2.
    target_log1m = jnp.where(last, 0.5 * (n - 3), -1.0)
    target_lin = jnp.where(last, -0.5 * n * mu2, -0.5 * n * zeta)
    target_const = jnp.where(last, 0.5 * n * mu2, log_c)
    env_log = jnp.where(first, -0.5, 0.0)
    # Envelopes.  k = 0: c·t^{-1/2}, c = C_0 + max over the endpoints of the convex −log(1 − t) − Nζ_0 t/2.
    alpha_first = log_c + jnp.maximum(0.0, -math.log1p(-t1) - 0.5 * n * zeta * t1)
    # middle: C_k − Nζ_k t/2 + chord of the convex ψ.
    safe_w = jnp.where(width > 0, width, 1.0)
    safe_lo = jnp.where(first, t1, lo)
    chord = jnp.where(width > 0, (_psi(jnp.where(last, 0.5, hi)) - _psi(safe_lo)) / safe_w, 0.0)
    alpha_mid = log_c - 0.5 * n * zeta * lo + _psi(safe_lo)
    beta_mid = chord - 0.5 * n * zeta
    # last [1 − δ, 1]: chord of −½log t, tangent of (N−3)/2·log(1 − t) at 1 − δ, linear N(1 − t)μ₂/2.
    a_l = 1.0 - delta
    alpha_last = -0.5 * jnp.log(a_l) + 0.5 * (n - 3) * jnp.log(delta) + 0.5 * n * delta * mu2
    beta_last = 0.5 * jnp.log(a_l) / delta - 0.5 * (n - 3) / delta - 0.5 * n * mu2
    alpha = jnp.select([first, last], [alpha_first, alpha_last], alpha_mid)
    beta = jnp.select([first, last], [0.0, beta_last], beta_mid)
    log_mass = jnp.where(
        first,
        alpha + math.log(2.0) + 0.5 * math.log(t1),
        jnp.where(width > 0, alpha + jnp.log(safe_w) + _log_exprel(beta * width), -jnp.inf),
    )

    # Normal scales in the original coordinate order (0 at the top coordinate); uniform rest on the last.
    src = jnp.clip(idx - (idx > top), 0, n_rest - 1)
    acg_rows = jnp.where(is_top[None, :], 0.0, jnp.where(last[:, None], 1.0, jax.lax.rsqrt(gaps_rest)[:, src]))
    rows = jnp.concatenate([acg_rows, jnp.sqrt(eps / gaps)[None, :]], axis=0)

    log_beta = _LOG_BETA_HALF + math.lgamma(0.5 * n_rest) - math.lgamma(0.5 * n)
    return _SplitEnvelope(
        top=top, mu=mu, mu2=mu2, eps=eps, lo=lo, width=width, zeta=zeta, target_log1m=target_log1m,
        target_lin=target_lin, target_const=target_const, env_log=env_log, alpha=alpha, beta=beta,
        log_mass=log_mass, rows=rows,
        log_norm_split=log_beta - jax.scipy.special.logsumexp(log_mass), log_norm_acg=-saddle_value,
        log_z_approx=log_z_approx,
    )


def _split_log_target_and_envelope(env: _SplitEnvelope, k, t):
    """``(log r_k(t), log envelope_k(t))`` for interval k (for tests): r_k is the t-factor that the
    envelope must dominate (t^{-1/2}(1 − t)^{(N−3)/2} e^{B_k(t)} for ACG intervals, with the uniform
    bound on the last one), normalised like the exact t^{-1/2}(1 − t)^{(N−3)/2} Z_{N−1}(κ(t)μ_rest)."""
    log_t = jnp.log(t)
    target = -0.5 * log_t + env.target_log1m[k] * jnp.log1p(-t) + env.target_lin[k] * t + env.target_const[k]
    envelope = env.env_log[k] * log_t + env.alpha[k] + env.beta[k] * (t - env.lo[k])
    return target, envelope


def sampler_acceptance(eigenvalues, method: str = "acg"):
    """Predicted acceptance probability of the exact sampler, shape (...).

    ``method="acg"`` (default): the angular-central-Gaussian envelope, equal to
    ``Z · exp(N/2 − φ*) = √(πN) e^{stirling(N/2)} J`` exactly (≈ 0.86 in paramagnetic spectra,
    ∝ 1/√N with one condensed mode).  ``"split"``: the condensed-mode split sampler,
    ``B(½, (N−1)/2) Z_N / ∫envelope`` exactly (N ≥ SPLIT_MIN_DIMENSION).  ``"auto"``: the larger
    of the two, which is the sampler :func:`sample_eigen` uses by default.
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    n = lam.shape[-1]
    _check_dimension(n)
    split = _uses_split(method, n)
    _check_finite(lam)
    if not split:
        return jnp.exp(_log_prefactor(n) + _contour(lam).log_norm)

    def one(l):
        env = _split_envelope(l)
        log_z = _contour(env.mu).log_z  # exact log Z_N(μ)
        if method == "split":
            return jnp.exp(log_z + env.log_norm_split)
        return jnp.exp(log_z + jnp.maximum(env.log_norm_split, env.log_norm_acg))

    return jnp.vectorize(one, signature="(n)->()")(lam)


def _proposal_batch(n: int) -> int:
    """Static proposals per round: ~4M numbers per round, at least 64."""
    return int(max(64, min(8192, (1 << 22) // max(n, 1))))


def _round_cap(log_acceptance, num_samples: int, batch: int, finite):
    """Rounds allowed (float; 0 for non-finite input or NaN acceptance, see ROUND_SAFETY)."""
    log_acceptance = jnp.minimum(log_acceptance, 0.0) - ROUND_LOG_MARGIN
    expected = (ROUND_SAFETY * num_samples + ROUND_SLACK) / (jnp.exp(log_acceptance) * batch)
    cap = jnp.minimum(jnp.ceil(expected) + 1.0, float(MAX_REJECTION_ROUNDS))
    return jnp.where(finite & jnp.isfinite(log_acceptance), cap, 0.0)


class _SamplerInfo(NamedTuple):
    rounds: jax.Array
    proposals: jax.Array
    accepted: jax.Array  # all accepted proposals (may exceed num_samples in the last round)
    split: jax.Array  # whether the condensed-mode split was used
    log_norm: jax.Array  # exact acceptance = Z_N(λ − λ_max) · exp(log_norm)


def _rejection_loop(key, lam, num_samples: int, batch: int, log_acceptance, propose):
    """Shared capped rejection loop: each round ``propose(kg, ku) -> (y (batch, N), accept (batch,))``;
    accepted rows fill ``out`` in order, rows never filled stay NaN.  Returns ``(out, rounds, filled)``.

    Stops at ``num_samples`` acceptances or at the round cap from the predicted ``log_acceptance``
    (:func:`_round_cap`; 0 rounds for non-finite ``lam``)."""
    n = lam.shape[-1]
    cap = _round_cap(log_acceptance, num_samples, batch, jnp.all(jnp.isfinite(lam)))

    def round_(state):
        key, rounds, filled, out = state
        key, kg, ku = jax.random.split(key, 3)
        y, accept = propose(kg, ku)
        slot = filled + jnp.cumsum(accept) - 1
        slot = jnp.where(accept & (slot < num_samples), slot, num_samples)  # out of range = dropped
        out = out.at[slot].set(y, mode="drop")
        return key, rounds + 1, filled + jnp.sum(accept), out

    def cond(state):
        return (state[2] < num_samples) & (state[1] < cap)

    out = jnp.full((num_samples, n), jnp.nan, dtype=jnp.float64)
    _, rounds, filled, out = lax.while_loop(cond, round_, (key, jnp.asarray(0), jnp.asarray(0), out))
    return out, rounds, filled


def _sample_acg(key, lam, num_samples: int, batch: int):
    """Plain ACG rejection on the whole sphere (the original sampler) with a round cap."""
    n = lam.shape[-1]
    sp = saddle_point(lam)
    eps = sp.eps
    scale = jnp.sqrt(eps / sp.gaps)
    delta = sp.gaps - eps
    # acceptance = Z e^{−S}; the cap uses the Gaussian-corrected saddle for log Z (ROUND_LOG_MARGIN)
    log_acc = _gaussian_correction(jnp.sum(sp.gaps**-2), n)

    def propose(kg, ku):
        # float32 normals (half the random bits), cast up and scaled once; the barrier
        # materialises g so the acceptance test and the output see the same numbers (without
        # it XLA may recompute g in two fusions with different rounding: rows off the sphere
        # by ~1e-7 and a test evaluated on a different vector).
        g = jax.lax.optimization_barrier(jax.random.normal(kg, (batch, n), dtype=jnp.float32).astype(jnp.float64) * scale)
        sq = g * g
        norm2 = jnp.sum(sq, axis=-1)
        t = eps + jnp.sum(sq * delta, axis=-1) / norm2
        log_u = jnp.log(jax.random.uniform(ku, (batch,), dtype=jnp.float64, minval=1e-300))
        accept = log_u < 0.5 * n * (jnp.log(t) - t + 1.0)
        return g * jnp.sqrt(n / norm2)[:, None], accept

    out, rounds, filled = _rejection_loop(key, lam, num_samples, batch, log_acc, propose)
    log_norm = -_saddle_value(sp.gaps, lam - jnp.max(lam))
    return out, _SamplerInfo(rounds, rounds * batch, filled, jnp.asarray(False), log_norm)


def _sample_split(key, lam, num_samples: int, batch: int, force_split):
    """Joint (t, rest) rejection of the condensed-mode split, or the plain ACG (chosen by data
    unless ``force_split``, a bool that may be traced) in one loop body, so that the choice
    costs nothing under vmap."""
    n = lam.shape[-1]
    n_rest = n - 1
    env = _split_envelope(lam)
    k_int = env.lo.shape[0]
    last = k_int - 1
    # exact comparison of the two acceptances (the common factor Z_N cancels)
    use_split = jnp.asarray(force_split) | (env.log_norm_split > env.log_norm_acg)
    log_norm = jnp.where(use_split, env.log_norm_split, env.log_norm_acg)
    p = jnp.exp(env.log_mass - jnp.max(env.log_mass))
    cdf = jnp.cumsum(p) / jnp.sum(p)

    def propose(kg, ku):
        normals = jax.random.normal(kg, (batch, n), dtype=jnp.float32).astype(jnp.float64)
        u_piece, u_pos, u_acc = jax.random.uniform(ku, (3, batch), dtype=jnp.float64)
        # t-proposal from the piecewise envelope
        k = jnp.clip(jnp.searchsorted(cdf, u_piece, side="right"), 0, last)
        lo, width, beta = env.lo[k], env.width[k], env.beta[k]
        t_first = width * u_pos * u_pos  # density ∝ t^{-1/2} on [0, t₁]
        t_exp = lo + _exponential_inverse_cdf(u_pos, beta, width)
        t = jnp.where(k == 0, t_first, jnp.minimum(t_exp, lo + width))
        t = jnp.where(use_split, t, 0.0)
        kappa = (1.0 - t) * (n / n_rest)
        # envelope slack log r_k(t) − log env_k(t) ≤ 0 (the log t terms cancel exactly on k = 0, where t may be 0)
        log_t = jnp.log(jnp.maximum(t, jnp.finfo(jnp.float64).tiny))
        slack = (
            (-0.5 - env.env_log[k]) * log_t
            + env.target_log1m[k] * jnp.log1p(-t)
            + env.target_lin[k] * t
            + (env.target_const[k] - env.alpha[k])
            - beta * (t - lo)
        )
        # rest (or whole sphere for the plain ACG) from the ACG row of interval k
        row = jnp.where(use_split, k, k_int)
        g = jax.lax.optimization_barrier(normals * env.rows[row])  # one rounding for test and output
        sq = g * g
        norm2 = jnp.sum(sq, axis=-1)
        a_mean = jnp.sum(sq * env.mu, axis=-1) / norm2  # Σ μ_i u_i² ≤ 0
        q = jnp.where(use_split, kappa * (env.zeta[k] - a_mean), env.eps - a_mean)
        coef = jnp.where(use_split, 0.5 * n_rest, 0.5 * n)
        inner_acg = coef * (jnp.log(q) - q + 1.0)
        inner_uni = 0.5 * n_rest * kappa * (a_mean - env.mu2)
        inner = jnp.where(use_split & (k == last), inner_uni, inner_acg)
        log_accept = jnp.where(use_split, slack, 0.0) + inner
        accept = jnp.log(jnp.maximum(u_acc, 1e-300)) < log_accept
        sign = jnp.where(jnp.take(normals, env.top, axis=1) < 0, -1.0, 1.0)
        y = g * jnp.sqrt(n * (1.0 - t) / norm2)[:, None]
        y_top = jnp.where(use_split, sign * jnp.sqrt(n * t), jnp.take(y, env.top, axis=1))
        return lax.dynamic_update_slice_in_dim(y, y_top[:, None], env.top, axis=1), accept

    out, rounds, filled = _rejection_loop(key, lam, num_samples, batch, env.log_z_approx + log_norm, propose)
    return out, _SamplerInfo(rounds, rounds * batch, filled, use_split, log_norm)


def _sample_eigen_impl(key, lam, num_samples: int, batch: int, method: str):
    if _uses_split(method, lam.shape[-1]):
        return _sample_split(key, lam, num_samples, batch, force_split=(method == "split"))
    return _sample_acg(key, lam, num_samples, batch)


# One compilation per (shape, num_samples, batch, method) when called eagerly (op-by-op dispatch of
# the envelope would otherwise cost seconds); inlined as a nested call under an outer jit/vmap.
_sample_eigen_jit = jax.jit(_sample_eigen_impl, static_argnums=(2, 3, 4))


def sample_eigen(key, eigenvalues, num_samples: int, batch: int | None = None, method: str = "auto"):
    """Exact draws of the eigen-coordinates ``y = Vᵀx`` (|y|² = N), shape (num_samples, N).

    Rejection samplers of THEORY.md §2:

    * ``"acg"``: propose ``g_i ~ N(0, ε/d_i)``, ``u = g/|g|``, ``t = ε + Σ_i (λ_1 − λ_i) u_i²`` and
      accept if ``log U < (N/2)(log t − t + 1)``; return ``√N u``.
    * ``"split"``: the condensed-mode split — the top coordinate ``t = y_top²/N`` and the other
      N − 1 coordinates are drawn jointly: t from a piecewise-exponential envelope of its exact
      marginal, the rest from an ACG on the sub-sphere of radius² N(1 − t), one exact
      acceptance test (see :func:`_split_envelope`), random sign for ``y_top``.  Acceptance
      ≈ 0.85–0.98 whether or not the top mode is condensed.
    * ``"auto"`` (default): whichever has the larger predicted acceptance
      (:func:`sampler_acceptance`), decided inside the same compiled loop (no extra cost
      under ``jit``/``vmap``); the plain ACG for N < SPLIT_MIN_DIMENSION.

    Every loop is capped (:data:`MAX_REJECTION_ROUNDS` and a data-dependent cap from the
    predicted acceptance): rows that could not be filled are NaN.  Called on concrete arrays
    (not under ``jit``), non-finite eigenvalues raise ``ValueError`` and unfilled rows raise
    ``RuntimeError`` (:func:`check_draws`); under ``jit`` use :func:`check_draws` on the result.

    Parameters
    ----------
    key : PRNGKey
    eigenvalues : array_like, shape (N,)
        Eigenvalues of βW (any order); coordinates follow the same order.
    num_samples : int
        Static number of draws.
    batch : int, optional
        Proposals per round (static); default keeps a round near 4M numbers.
    method : {"auto", "acg", "split"}
        Static choice of sampler (see above).
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    if lam.ndim != 1:
        raise ValueError(f"eigenvalues: expected shape (N,), got {tuple(lam.shape)}")
    n = lam.shape[-1]
    _check_dimension(n)
    _uses_split(method, n)  # validates method (and N for "split") before tracing
    _check_finite(lam)
    num_samples = int(num_samples)
    batch = int(batch or _proposal_batch(n))
    out, _ = _sample_eigen_jit(key, lam, num_samples, batch, method)
    return check_draws(out, "sample_eigen")
