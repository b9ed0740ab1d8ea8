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

All functions take float64 arrays (the package enables ``jax_enable_x64``);
the last axis holds the N eigenvalues (or the N×N matrix) and leading axes
batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

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
    "sampler_acceptance",
    "sample_eigen",
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


def _contour(eigenvalues, num_nodes: int = DEFAULT_NUM_NODES) -> _Contour:
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    n = lam.shape[-1]
    sp = saddle_point(lam)
    gaps = sp.gaps
    sigma = 1.0 / jnp.sqrt(0.5 * jnp.sum(gaps**-2, axis=-1))

    # Tail length: first trial point where the integrand is below e^-40 of its saddle value.
    trial = jnp.geomspace(2.0, MAX_CONTOUR_LENGTH, 24)
    trial_offsets, _ = _hyperbola(trial, sigma)
    small = _phase_real(trial_offsets, gaps, n) < -TAIL_LOG_CUTOFF
    first = jnp.argmax(small, axis=-1)
    length = jnp.where(jnp.any(small, axis=-1), trial[first], MAX_CONTOUR_LENGTH)
    length = lax.stop_gradient(length)

    # Nodes uniform in t with s = a·sinh(t): fine steps near the saddle (where a
    # near-singularity sits at distance ≥ 1/√2 in s), geometric spacing in the
    # exponential tail, so O(log s_max) nodes suffice.
    t_max = jnp.arcsinh(length / SINH_SCALE)
    unit = jnp.linspace(0.0, 1.0, num_nodes)
    t = t_max[..., None] * unit
    step = t_max / (num_nodes - 1)
    s = SINH_SCALE * jnp.sinh(t)
    jac = SINH_SCALE * jnp.cosh(t)
    offsets, deriv = _hyperbola(s, sigma)
    ratio = offsets[..., :, None] / gaps[..., None, :]
    log_integrand = 0.5 * n * offsets - 0.5 * jnp.sum(jnp.log1p(ratio), axis=-1)
    trap = jnp.where(unit == 0.0, 0.5, 1.0)
    weights = jnp.exp(log_integrand) * deriv * (jac * trap * step[..., None] / math.pi)
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
    """
    return _logz_and_grad(jnp.asarray(eigenvalues, dtype=jnp.float64))[0]


def log_partition_and_gradient(eigenvalues):
    """``(log Z, ∂log Z/∂λ)`` from one quadrature; shapes (...) and (..., N)."""
    return _logz_and_grad(jnp.asarray(eigenvalues, dtype=jnp.float64))


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
    value = 0.5 * jnp.sum(sp.gaps - 1.0 - jnp.log(sp.gaps), axis=-1) + 0.5 * jnp.sum(lam, axis=-1)
    if gaussian_correction:
        sigma = 1.0 / jnp.sqrt(0.5 * jnp.sum(sp.gaps**-2, axis=-1))
        value = value + _log_prefactor(lam.shape[-1]) + jnp.log(sigma / jnp.sqrt(2 * jnp.pi))
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
# Exact sampler: angular-central-Gaussian envelope (Kent, Ganeiber, Mardia).
# ---------------------------------------------------------------------------


def sampler_acceptance(eigenvalues):
    """Acceptance probability of the ACG rejection sampler, shape (...).

    Equals ``Z · exp(N/2 − φ*) = √(πN) e^{stirling(N/2)} J`` exactly
    (≈ 0.86 in paramagnetic spectra, ∝ 1/√N with one condensed mode).
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    ct = _contour(lam)
    return jnp.exp(_log_prefactor(lam.shape[-1]) + ct.log_norm)


def _proposal_batch(n: int) -> int:
    """Static proposals per round: ~4M numbers per round, at least 64."""
    return int(max(64, min(8192, (1 << 22) // max(n, 1))))


def sample_eigen(key, eigenvalues, num_samples: int, batch: int | None = None):
    """Exact draws of the eigen-coordinates ``y = Vᵀx`` (|y|² = N), shape (num_samples, N).

    Rejection from an angular central Gaussian (THEORY.md §2): propose
    ``g_i ~ N(0, ε/d_i)``, ``u = g/|g|``, ``t = ε + Σ_i (λ_1 − λ_i) u_i²`` and
    accept if ``log U < (N/2)(log t − t + 1)``; return ``√N u``.

    Parameters
    ----------
    key : PRNGKey
    eigenvalues : array_like, shape (N,)
        Eigenvalues of βW (any order); coordinates follow the same order.
    num_samples : int
        Static number of draws.
    batch : int, optional
        Proposals per round (static); default keeps a round near 4M numbers.
    """
    lam = jnp.asarray(eigenvalues, dtype=jnp.float64)
    if lam.ndim != 1:
        raise ValueError(f"eigenvalues: expected shape (N,), got {tuple(lam.shape)}")
    n = lam.shape[-1]
    _check_dimension(n)
    num_samples = int(num_samples)
    batch = int(batch or _proposal_batch(n))
    sp = saddle_point(lam)
    scale = jnp.sqrt(sp.eps / sp.gaps)
    delta = sp.gaps - sp.eps

    def round_(state):
        key, filled, out = state
        key, kg, ku = jax.random.split(key, 3)
        # float32 normals (half the random bits), cast up and scaled once; the barrier
        # materialises g so the acceptance test and the output see the same numbers (without
        # it XLA may recompute g in two fusions with different rounding: rows off the sphere
        # by ~1e-7 and a test evaluated on a different vector).
        g = jax.lax.optimization_barrier(jax.random.normal(kg, (batch, n), dtype=jnp.float32).astype(jnp.float64) * scale)
        sq = g * g
        norm2 = jnp.sum(sq, axis=-1)
        t = sp.eps + jnp.sum(sq * delta, axis=-1) / norm2
        log_u = jnp.log(jax.random.uniform(ku, (batch,), dtype=jnp.float64, minval=1e-300))
        accept = log_u < 0.5 * n * (jnp.log(t) - t + 1.0)
        slot = filled + jnp.cumsum(accept) - 1
        slot = jnp.where(accept & (slot < num_samples), slot, num_samples)  # out of range = dropped
        y = g * jnp.sqrt(n / norm2)[:, None]
        out = out.at[slot].set(y, mode="drop")
        return key, filled + jnp.sum(accept), out

    def cond(state):
        return state[1] < num_samples

    out = jnp.zeros((num_samples, n), dtype=jnp.float64)
    _, _, out = lax.while_loop(cond, round_, (key, jnp.asarray(0), out))
    return out
