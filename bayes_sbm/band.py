"""Band representation of the GOE posterior and its exact log Z (THEORY.md §8).

Under the GOE prior, rotations that fix the first m axes leave the law of W
unchanged, so W can be replaced by a real symmetric banded matrix T of lower
bandwidth m (block Householder reduction, Dumitriu–Edelman for m = 1):
``W' = P T Pᵀ`` with ``P = diag(I_m, H)``, ``A_0 = W'[:m, :m]``.  This
module holds

* :class:`Band` — T in LAPACK-style lower storage, ``lower[..., k, p] = T[p, p−k]``;
* :func:`reduce` — dense W → band (host, NumPy/SciPy), optionally with P;
* the GOE band prior of precision c (``s² = 1/(cN)``): exact sampler
  :func:`sample_goe_band`, normalised density :func:`goe_band_log_prior`, and
  the non-centred NUTS parametrisation (:func:`latent_size`,
  :func:`band_from_latent`, :func:`latent_from_band`,
  :func:`chi_log_density_correction`);
* ``log det(z − T)`` from the LDLᵀ band recursion (:func:`log_det`), the
  saddle ``z*`` without eigenvalues (:func:`saddle_point`) and the exact
  ``log Z(T)`` (:func:`log_partition`) on the contour of
  :mod:`bayes_sbm.sphere` (THEORY.md §2), with a reverse-mode gradient that
  costs O(N m² × nodes);
* :func:`observables` — the §4 observables of a batch of draws (host).

Numerics of log Z (THEORY.md §8)
--------------------------------
For complex z factor ``z − T = L diag(d) Lᵀ`` (scalar pivots, no pivoting)
row by row; the m(m+1)/2 entries of the trailing m×m window are carried as
separate arrays (real and imaginary parts apart), with the quadrature nodes
as the vector axis and the rows as the ``lax.scan`` axis.  For Im z > 0
every pivot lies in the upper half plane, so ``Σ_j Log d_j`` (principal
branch per pivot) equals ``Σ_i Log(z − λ_i)``.  Instead of a complex log per
pivot the scan carries the running product ``Π d_j`` (rescaled by a power of
two each step, exponent counted) and counts the crossings of the negative
real axis (multiplying by an upper-half-plane number turns by less than π);
one log at the end gives ``Σ Log d_j`` exactly on the principal branches.

The gradient is a custom VJP: ``∂ Log det(z − T)/∂T_pq = −(2 − δ_pq)
[(z − T)⁻¹]_pq`` inside the band, and the band of the resolvent follows from
the stored factors by the backward Takahashi recursion
``Z_ij = δ_ij/d_i − Σ_{k=i+1}^{i+m} L_ki Z_kj`` (i ≤ j), with the cotangent of
each node folded into ``1/d_i`` (the recursion is linear in it).

Measured on one core of the project's 2-core AMD EPYC under heavy load from
other jobs (minimum of 15 runs; ``benchmarks/bench_band.py``), m = 2, value +
gradient: 0.3 / 2.0 / 10–16 / 80–100 ms at N = 100 / 1000 / 5000 / 20000
(the prototype of THEORY.md §8: 0.8 / 6.9 / 47 ms; the dense eigh route:
300–800 ms at N = 1000 on the same loaded core).  What each step bought:

* a running product of pivots with a winding count instead of a complex
  ``log`` per pivot: one 64-node scan 0.8 → 0.35 ms at N = 1000 (the logs of
  N × nodes pivots cost more than the recursion itself);
* ``lax.scan`` unrolling: none (unroll 2/4: 0.35 → 0.56/0.70 ms; the body is
  compute bound, the per-iteration overhead is only ≈ 0.15 µs);
* the saddle as a bracketed Newton on G and on 1/G (certified bounds)
  instead of multisection + Newton on G: 7 → 4–5 rounds of one scan each;
* 48 instead of 64 nodes (≤ 3e-14 relative error over 180 spectra with
  N = 2…3000, m = 1…3): value + gradient 1.9 → 1.7 ms (N = 1000), 12.4 →
  10.8 ms (N = 5000);
* the Takahashi VJP instead of autodiff through the scan: gradient of the
  node log-dets 1.4 → 0.9 ms (N = 1000), 24 → 5.6 ms (N = 5000).

Limitations: reverse mode only (custom VJP; no ``jax.jvp``/``jax.hessian``
of :func:`log_partition`); no check for non-finite entries under tracing
(the saddle then runs to its round cap and returns NaN).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special
from jax import lax

from ._checks import is_traced
from .sphere import (
    MIN_DIMENSION,
    TAIL_LOG_CUTOFF,
    _log_prefactor,
    _sinh_nodes,
    _tail_length,
    _tail_trials,
)

__all__ = [
    "Band",
    "BandSaddlePoint",
    "BandObservables",
    "EdgeObservables",
    "reduce",
    "band_from_dense",
    "latent_size",
    "chi_dof",
    "band_from_latent",
    "latent_from_band",
    "chi_log_density_correction",
    "sample_goe_band",
    "goe_band_log_prior",
    "log_det",
    "saddle_point",
    "log_partition",
    "log_partition_and_saddle",
    "observables",
    "edge_observables",
    "NUM_NODES",
    "SADDLE_POINTS",
    "SADDLE_MAX_ROUNDS",
    "SADDLE_RTOL",
]

#: Quadrature nodes on the half contour (sphere's sinh-mapped rule, 64 there): ≤ 3e-14 relative over 180 test spectra.
NUM_NODES = 48
#: Trial points per saddle round (uniform grid of the bracket, ends included); 8/16/24/32 took 4.5/4/4/3.7 rounds.
SADDLE_POINTS = 16
#: Cap on saddle rounds (each one scan); every spectrum tried converged in ≤ 6 (the bracket shrinks ≥ 15× per round).
SADDLE_MAX_ROUNDS = 60
#: The saddle stops when its certified bracket is narrower than this times max(|z*|, 1) (the Newton end is then ~1e-15).
SADDLE_RTOL = 1e-13
#: Cap on Marsaglia–Tsang rounds; an entry is still unaccepted after 64 rounds with probability < 0.05^64.
GAMMA_MAX_ROUNDS = 64
#: Inverse-iteration solves for the top eigenvector in :func:`observables` (error × δ/gap ≲ 1e-4 per solve for gaps ≥ 1e-8).
INVERSE_ITERATIONS = 3
#: Points per eigenvalue bracket and round of the Sturm multisection (each round shrinks a bracket 17×).
EIGEN_POINTS = 16
#: Cap on multisection rounds (17^14 > 1e17: from a Gershgorin bracket to 4 ulps in ≤ 14 rounds).
EIGEN_MAX_ROUNDS = 40
#: Draws per jitted contour call in :func:`observables` (bigger batches are chunked so one shape compiles once).
OBSERVABLES_CHUNK = 64
#: Columns per panel of the host reduction (delayed, dlatrd-style update; 32 balances the BLAS-2 and BLAS-3 parts).
REDUCE_PANEL = 32

_EPS = float(np.finfo(np.float64).eps)
_LOG2 = math.log(2.0)


# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------


class Band(NamedTuple):
    """Real symmetric banded matrix in LAPACK-style lower storage (THEORY.md §8).

    Attributes
    ----------
    lower : array, shape (..., m+1, N)
        ``lower[..., k, p] = T[p, p−k]``: row k = 0 is the diagonal, row m the
        outermost band (the χ entries under the GOE).  Entries with p < k lie
        outside the matrix; they are ignored (treated as 0) everywhere.

    Leading axes batch.  A NamedTuple, hence a JAX pytree (jit, vmap, grad).
    Every function taking a Band validates it (concrete or traced) and raises
    ``ValueError("T: …")`` for a wrong shape, m < 1 or N < 2, and, for a
    concrete one only, for non-finite entries inside the band.
    """

    lower: jax.Array

    @property
    def N(self) -> int:
        """Matrix dimension N."""
        return int(self.lower.shape[-1])

    @property
    def m(self) -> int:
        """Lower bandwidth m."""
        return int(self.lower.shape[-2]) - 1

    def to_dense(self):
        """The dense symmetric matrix, shape (..., N, N) (jnp array; assembled in NumPy unless traced)."""
        n = self.N
        ks, ps = _band_index(n, self.m + 1)  # only entries inside the matrix are read
        rows, cols = np.concatenate([ps, ps - ks]), np.concatenate([ps - ks, ps])
        if is_traced(self.lower):
            vals = jnp.asarray(self.lower)[..., ks, ps]
            return jnp.zeros(vals.shape[:-1] + (n, n), vals.dtype).at[..., rows, cols].set(jnp.concatenate([vals, vals], -1))
        vals = np.asarray(self.lower, dtype=np.float64)[..., ks, ps]
        dense = np.zeros(vals.shape[:-1] + (n, n))
        dense[..., rows, cols] = np.concatenate([vals, vals], -1)  # the diagonal twice, with the same value
        return jnp.asarray(dense)


def _valid_mask(m: int, n: int) -> np.ndarray:
    """``mask[k, p] = p ≥ k``: which stored entries lie inside the matrix, shape (m+1, N)."""
    return np.arange(n)[None, :] >= np.arange(m + 1)[:, None]


def _band_index(n: int, rows: int):
    """(k, p) of the entries inside the matrix of band rows k < ``rows``, in storage order: k = 0 (p = 0…N−1), k = 1 (p = 1…N−1), …"""
    ks = np.concatenate([np.full(max(n - k, 0), k) for k in range(rows)])
    ps = np.concatenate([np.arange(k, n) for k in range(rows)])
    return ks, ps


def _masked(lower):
    """Zero the stored entries with p < k (outside the matrix)."""
    m, n = lower.shape[-2] - 1, lower.shape[-1]
    return jnp.where(_valid_mask(m, n), lower, 0.0)


def _lower_of(T):
    """Validate a :class:`Band` (or its ``lower`` array) as the argument ``T``; ``lower`` as float64.

    A traced array stays traced; a concrete one comes back as a NumPy array
    (the jitted callee moves it to the device once).  The errors are the ones
    listed in :class:`Band`.
    """
    lower = T.lower if isinstance(T, Band) else T
    traced = is_traced(lower)
    if not traced:
        lower = np.asarray(lower)
        if not np.issubdtype(lower.dtype, np.floating) and not np.issubdtype(lower.dtype, np.integer):
            raise ValueError(f"T: expected a real array, got dtype {lower.dtype}")
    if lower.ndim < 2:
        raise ValueError(f"T: expected lower storage of shape (..., m+1, N), got {tuple(lower.shape)}")
    m, n = lower.shape[-2] - 1, lower.shape[-1]
    if m < 1:
        raise ValueError(f"T: need bandwidth m >= 1 (shape[-2] = m+1 >= 2), got shape {tuple(lower.shape)}")
    if n < MIN_DIMENSION:
        raise ValueError(f"T: need N >= {MIN_DIMENSION}, got N = {n}")
    if traced:
        return lower.astype(jnp.float64)
    lower = lower.astype(np.float64)
    if not np.all(np.isfinite(lower[..., _valid_mask(m, n)])):
        raise ValueError("T: entries inside the band must be finite")
    return lower


def band_from_dense(W, m: int) -> Band:
    """The band part of a dense symmetric matrix *as it is* (no reduction), shape (..., N, N) → Band.

    Useful when W is already banded; see :func:`reduce` for a general W.
    """
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[-1]
    ks, ps = _band_index(n, m + 1)
    lower = np.zeros(W.shape[:-2] + (m + 1, n))
    lower[..., ks, ps] = W[..., ps, ps - ks]
    return Band(lower)


# ---------------------------------------------------------------------------
# Host reduction W → T (THEORY.md §8 "Block reduction")
# ---------------------------------------------------------------------------


def _householder(x):
    """Reflector ``I − τ v vᵀ`` (v₀ = 1) mapping x to ``+|x| e₀`` (positive, unlike dlarfg's sign).

    Returns (v, tau, alpha).  Parlett's formula for ``x₀ − |x|`` avoids
    cancellation when x₀ > 0.
    """
    x0 = x[0]
    sigma = float(x[1:] @ x[1:])
    if sigma == 0.0:
        v = np.zeros_like(x)
        v[0] = 1.0
        if x0 >= 0.0:
            return v, 0.0, x0
        return v, 2.0, -x0
    alpha = math.sqrt(x0 * x0 + sigma)
    v0 = x0 - alpha if x0 <= 0.0 else -sigma / (x0 + alpha)
    tau = 2.0 * v0 * v0 / (sigma + v0 * v0)
    v = x / v0
    v[0] = 1.0
    return v, tau, alpha


def reduce(W, m: int, return_transform: bool = False):
    """Reduce a dense symmetric W to a band T with the first m axes fixed (THEORY.md §8).

    Householder reflectors column by column (the block QR of §8 with R's
    diagonal positive), with a delayed panel update (dlatrd-style: the
    trailing matrix is touched once per panel of :data:`REDUCE_PANEL`
    columns by a rank-2·panel GEMM; each column costs one matrix–vector
    product).  O(N³) flops, ~1 s at N = 2000 on one core.

    Parameters
    ----------
    W : array_like, shape (N, N)
        Symmetric (only the lower triangle is read).
    m : int
        Bandwidth, 1 ≤ m ≤ N − 1.
    return_transform : bool
        Also return the orthogonal ``P = diag(I_m, H)`` (O(N³) more work).

    Returns
    -------
    Band, or (Band, ndarray of shape (N, N))
        T with ``W = P T Pᵀ``, ``T[:m, :m] = W[:m, :m]`` exactly and
        ``T[p, p−m] ≥ 0`` (> 0 unless the column below the band was already 0).
    """
    W = np.array(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W: expected shape (N, N), got {W.shape}")
    n, m = W.shape[0], int(m)
    _check_nm(n, m, "W")
    if not np.all(np.isfinite(W)):
        raise ValueError("W: entries must be finite")
    A = np.tril(W) + np.tril(W, -1).T  # symmetric from the lower triangle
    panels = []  # (j0, V, taus): the reflectors I − τ v vᵀ of each panel, v stored on rows j0:
    alphas = np.zeros(n - m)  # T[j+m, j] = |A[j+m:, j]| after the reflector
    j0 = 0
    while j0 <= n - m - 1:
        nb = min(REDUCE_PANEL, n - m - j0)
        V = np.zeros((n - j0, nb))  # rows j0: (full length below j0)
        Wk = np.zeros((n - j0, nb))
        taus = np.zeros(nb)
        for t in range(nb):
            j = j0 + t
            # current column j (rows j0:), A_current = A − V Wᵀ − W Vᵀ
            col = A[j0:, j] - V[:, :t] @ Wk[j - j0, :t] - Wk[:, :t] @ V[j - j0, :t]
            x = col[j + m - j0 :]
            v, tau, alpha = _householder(x)
            taus[t] = tau
            alphas[j] = alpha
            if tau == 0.0:
                continue
            vf = np.zeros(n - j0)
            vf[j + m - j0 :] = v
            # w = τ A_current v − (τ²/2)(vᵀ A_current v) v
            av = A[j0:, j + m :] @ v
            av -= V[:, :t] @ (Wk[:, :t].T @ vf) + Wk[:, :t] @ (V[:, :t].T @ vf)
            w = tau * av
            w -= (0.5 * tau * (w @ vf)) * vf
            V[:, t] = vf
            Wk[:, t] = w
        # trailing update of the panel's rows/columns
        A[j0:, j0:] -= V @ Wk.T + Wk @ V.T
        panels.append((j0, V, taus))
        j0 += nb
    lower = band_from_dense(A, m).lower
    # The outer band exactly as produced by the reflectors (≥ 0; the trailing update only rounds it).
    lower[m, m:] = alphas
    if not return_transform:
        return Band(lower)
    # P = H_0 H_1 ⋯; each panel's product is I − V S Vᵀ (compact WY, S upper triangular as in dlarft).
    P = np.eye(n)
    for j0, V, taus in panels:
        nb = taus.size
        S = np.zeros((nb, nb))
        for t in range(nb):
            S[:t, t] = -taus[t] * (S[:t, :t] @ (V[:, :t].T @ V[:, t]))
            S[t, t] = taus[t]
        sub = P[:, j0:]
        sub -= ((sub @ V) @ S) @ V.T
    return Band(lower), P


# ---------------------------------------------------------------------------
# GOE band prior (THEORY.md §8 "Law")
# ---------------------------------------------------------------------------


def _check_nm(n: int, m: int, n_name: str = "N") -> None:
    """``ValueError`` unless N ≥ MIN_DIMENSION (named ``n_name``) and 1 ≤ m ≤ N − 1."""
    if n < MIN_DIMENSION:
        raise ValueError(f"{n_name}: need N >= {MIN_DIMENSION}, got N = {n}")
    if not 1 <= m <= n - 1:
        raise ValueError(f"m: need 1 <= m <= N - 1 = {n - 1}, got {m}")


def _entry_scales(n: int, m: int) -> np.ndarray:
    """Prior sd of the Gaussian entries in units of s, shape (m+1, N): √2 on the diagonal, 1 off it, 0 outside."""
    scales = np.ones((m + 1, n))
    scales[0] = math.sqrt(2.0)
    return np.where(_valid_mask(m, n), scales, 0.0)


def chi_dof(n: int, m: int) -> np.ndarray:
    """Degrees of freedom ν = N − p of the χ entries T[p, p−m], p = m … N−1, shape (N−m,)."""
    return np.arange(n - m, 0, -1, dtype=np.float64)


def latent_size(N: int, m: int) -> tuple[int, int]:
    """Sizes ``(n_gauss, n_chi)`` of the non-centred latent vectors (THEORY.md §8).

    ``n_gauss = mN − m(m−1)/2`` Gaussian entries (band rows k < m),
    ``n_chi = N − m`` χ entries; together the ``(m+1)N − m(m+1)/2`` free entries.
    """
    N, m = int(N), int(m)
    _check_nm(N, m)
    return m * N - m * (m - 1) // 2, N - m


def _latent_layout(n: int, m: int):
    """Host constants of the non-centred latents (THEORY.md §8).

    Returns ``(ks, ps, sd, nu, tau)``: the (k, p) of the Gaussian entries in
    latent order (band rows k < m), their prior sd in units of s, and ν and
    ``τ = √(2/ν)`` of the χ entries.
    """
    ks, ps = _band_index(n, m)
    nu = chi_dof(n, m)
    return ks, ps, _entry_scales(n, m)[ks, ps], nu, np.sqrt(2.0 / nu)


def band_from_latent(z, xi, N: int, m: int, precision) -> Band:
    """Map standard-normal latents to a band draw (non-centred parametrisation, THEORY.md §8).

    Parameters
    ----------
    z : array, shape (..., n_gauss)
        The Gaussian entries divided by their prior sd (``√2 s`` on the
        diagonal, ``s`` off it), ordered band row k = 0 (p = 0…N−1), then
        k = 1 (p = 1…N−1), …, k = m−1.
    xi : array, shape (..., n_chi)
        Standard-normal sites of the χ entries, p = m … N−1:
        ``χ²_ν = ν exp(τξ)``, ``τ = √(2/ν)``, ``ν = N − p``; under the prior
        ξ has density ``N(0,1)(ξ)·exp(chi_log_density_correction(ξ, ν))``.
    N, m : int
    precision : float or array
        GOE precision c (``s² = 1/(cN)``).

    Returns
    -------
    Band
        ``lower`` of shape (..., m+1, N); ``T[p, p−m] = s √ν exp(τξ/2)``.
    """
    N, m = int(N), int(m)
    ng, nc = latent_size(N, m)
    z = jnp.asarray(z, dtype=jnp.float64)
    xi = jnp.asarray(xi, dtype=jnp.float64)
    if z.shape[-1:] != (ng,):
        raise ValueError(f"z: expected shape (..., {ng}), got {tuple(z.shape)}")
    if xi.shape[-1:] != (nc,):
        raise ValueError(f"xi: expected shape (..., {nc}), got {tuple(xi.shape)}")
    return Band(_band_from_latent_core(z, xi, jnp.asarray(precision, dtype=jnp.float64), N, m))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _band_from_latent_core(z, xi, precision, n, m):
    s = (1.0 / jnp.sqrt(precision * n))[..., None]
    ks, ps, sd, nu, tau = _latent_layout(n, m)
    batch = jnp.broadcast_shapes(z.shape[:-1], xi.shape[:-1], s.shape[:-1])
    chi = s * np.sqrt(nu) * jnp.exp(0.5 * tau * xi)
    gauss = s * (sd * z)
    lower = jnp.zeros(batch + (m + 1, n))
    lower = lower.at[..., ks, ps].set(jnp.broadcast_to(gauss, batch + ks.shape))
    return lower.at[..., m, m:].set(jnp.broadcast_to(chi, batch + nu.shape))


def latent_from_band(T, precision):
    """Inverse of :func:`band_from_latent`: ``(z, xi)`` with shapes (..., n_gauss), (..., n_chi).

    The outermost band entries must be positive (else ξ = −∞ or NaN).
    """
    lower = _lower_of(T)
    _check_nm(lower.shape[-1], lower.shape[-2] - 1)
    return _latent_from_band_core(lower, jnp.asarray(precision, dtype=jnp.float64))


@jax.jit
def _latent_from_band_core(lower, precision):
    n, m = lower.shape[-1], lower.shape[-2] - 1
    s = (1.0 / jnp.sqrt(precision * n))[..., None]
    ks, ps, sd, nu, tau = _latent_layout(n, m)
    z = lower[..., ks, ps] / (s * sd)
    chi = lower[..., m, m:]
    xi = jnp.log(chi * chi / (s * s * nu)) / tau
    return z, xi


def _stirling_error(x):
    """``log Γ(x) − [(x − ½) log x − x + ½ log 2π]`` elementwise (jnp copy of sphere's scalar helper).

    Direct for x < 10 (no cancellation there), asymptotic series otherwise
    (the omitted term is below 1e-17 for x ≥ 10).
    """
    x = jnp.asarray(x, dtype=jnp.float64)
    small = jnp.minimum(x, 10.0)
    direct = jax.scipy.special.gammaln(small) - ((small - 0.5) * jnp.log(small) - small + 0.5 * math.log(2 * math.pi))
    big = jnp.maximum(x, 10.0)
    inv = 1.0 / big
    inv2 = inv * inv
    coeffs = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156)
    series = jnp.zeros_like(big)
    for c in reversed(coeffs):
        series = series * inv2 + c
    series = series * inv
    return jnp.where(x < 10.0, direct, series)


@jax.jit
def chi_log_density_correction(xi, nu):
    """Log-density of ξ under the χ_ν law minus the standard-normal log-density (THEORY.md §8).

    With ``χ²_ν = ν e^{τξ}``, ``τ = √(2/ν)``:

        correction = (ν/2)(τξ − e^{τξ}) + ξ²/2 + C,
        C = ν/2 − stirling(ν/2) = log τ + (ν/2) log(ν/2) − log Γ(ν/2) + ½ log 2π,

    (``stirling(x) = log Γ(x) − (x − ½) log x + x − ½ log 2π``), so that
    ``N(0,1)(ξ) · exp(correction)`` is exactly the normalised density of ξ.
    The correction tends to 0 as ν → ∞ (ξ becomes standard normal).

    Parameters
    ----------
    xi : array, shape (...)
    nu : array, broadcastable to xi
        Degrees of freedom (> 0).

    Returns
    -------
    Array, shape broadcast(xi, nu)
    """
    xi = jnp.asarray(xi, dtype=jnp.float64)
    nu = jnp.asarray(nu, dtype=jnp.float64)
    u = jnp.sqrt(2.0 / nu) * xi
    # (ν/2)(1 + u − e^u) without cancelling e^u − 1 − u for small u.
    return -0.5 * nu * (jnp.expm1(u) - u) + 0.5 * xi * xi - _stirling_error(0.5 * nu)


def _standard_gamma(key, a, shape):
    """Gamma(a, 1) draws by Marsaglia–Tsang squeeze-free rejection (exact), shape ``shape``.

    ``a`` broadcasts to ``shape``; for a < 1 the draw is Gamma(a+1)·U^(1/a).
    All entries propose together each round until every one is accepted
    (acceptance ≥ 0.95 per entry for a ≥ 1, so ~5 rounds for 10⁵ entries);
    at most :data:`GAMMA_MAX_ROUNDS` rounds.  Written out instead of
    ``jax.random.gamma`` because that compiles ~10× slower (≈ 4 s on the
    project's busy machine) for the same draws.
    """
    a = jnp.broadcast_to(jnp.asarray(a, dtype=jnp.float64), shape)
    boost = a < 1.0
    d = jnp.where(boost, a + 1.0, a) - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)

    def cond(state):
        it, _, _, done = state
        return (it < GAMMA_MAX_ROUNDS) & ~jnp.all(done)

    def body(state):
        it, key, out, done = state
        key, sub = jax.random.split(key)
        # one uniform draw per round (each PRNG call site costs compile time): u₀ → normal by Φ⁻¹
        u = jax.random.uniform(sub, (2,) + shape, dtype=jnp.float64, minval=1e-300)
        x = jax.scipy.special.ndtri(u[0])
        log_u = jnp.log(u[1])
        v = (1.0 + c * x) ** 3
        safe_v = jnp.where(v > 0, v, 1.0)
        ok = (v > 0) & (log_u < 0.5 * x * x + d - d * safe_v + d * jnp.log(safe_v))
        take = ok & ~done
        return it + 1, key, jnp.where(take, d * safe_v, out), done | ok

    key, kb = jax.random.split(key)
    state = (jnp.asarray(0), key, jnp.full(shape, jnp.nan), jnp.zeros(shape, bool))
    _, _, out, _ = lax.while_loop(cond, body, state)
    log_ub = jnp.log(jax.random.uniform(kb, shape, dtype=jnp.float64, minval=1e-300))
    return jnp.where(boost, out * jnp.exp(log_ub / jnp.where(boost, a, 1.0)), out)


def sample_goe_band(key, N: int, m: int, precision, sample_shape=()) -> Band:
    """Exact draws of T under the GOE of precision c (THEORY.md §8 "Law").

    Diagonal ``N(0, 2s²)``, other band entries ``N(0, s²)``, outermost band
    ``T[p, p−m] = s χ_{N−p}`` (``χ = √(2 Gamma(ν/2))``), ``s² = 1/(cN)``.

    Parameters
    ----------
    key : PRNGKey
    N, m : int
        Dimension and bandwidth, 1 ≤ m ≤ N − 1.
    precision : float
        c = γη.
    sample_shape : tuple of int

    Returns
    -------
    Band
        ``lower`` of shape (*sample_shape, m+1, N); entries with p < k are 0.
    """
    N, m = int(N), int(m)
    _check_nm(N, m)
    return Band(_sample_lower(key, jnp.asarray(precision, dtype=jnp.float64), N, m, tuple(int(k) for k in sample_shape)))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _sample_lower(key, precision, n, m, sample_shape):
    s = 1.0 / jnp.sqrt(precision * n)
    kg, kc = jax.random.split(key)
    gauss = jax.random.normal(kg, sample_shape + (m, n), dtype=jnp.float64) * _entry_scales(n, m)[:m]
    gam = _standard_gamma(kc, 0.5 * chi_dof(n, m), sample_shape + (n - m,))
    outer = jnp.concatenate([jnp.zeros(sample_shape + (m,)), jnp.sqrt(2.0 * gam)], axis=-1)
    return s * jnp.concatenate([gauss, outer[..., None, :]], axis=-2)


def goe_band_log_prior(T, precision):
    """Normalised log density of the free entries of T under the GOE band law (THEORY.md §8).

    ``Σ log N(T_pp; 0, 2s²) + Σ log N(T_pq; 0, s²) + Σ_p log f_{sχ_{N−p}}(T[p, p−m])``,
    i.e. ``−(cN/4)‖T‖_F² + Σ_p (N−p−1) log T[p, p−m]`` plus the Gaussian and χ
    normalisers (the Jacobian factor of §8 is the ``(ν − 1) log`` term).

    Parameters
    ----------
    T : Band, lower of shape (..., m+1, N)
    precision : float or array broadcastable to the batch shape

    Returns
    -------
    Array, shape (...)
        −inf if an outermost band entry is ≤ 0.
    """
    lower = _lower_of(T)
    _check_nm(lower.shape[-1], lower.shape[-2] - 1)
    return _log_prior_core(lower, jnp.asarray(precision, dtype=jnp.float64))


@jax.jit
def _log_prior_core(lower, c):
    lower = _masked(lower)
    n, m = lower.shape[-1], lower.shape[-2] - 1
    s2 = (1.0 / (c * n))[..., None]  # (..., 1): broadcasts against the band rows
    count = _valid_mask(m, n)[:m]
    var = np.where(count, _entry_scales(n, m)[:m] ** 2, 1.0)  # in units of s² (1 outside: no 0/0 in grads)
    g = lower[..., :m, :]
    s2g = s2[..., None]
    gauss = -0.5 * jnp.sum(jnp.where(count, g * g / (var * s2g) + jnp.log(2 * math.pi * var * s2g), 0.0), axis=(-2, -1))
    y = lower[..., m, m:]
    nu = chi_dof(n, m)
    log_y = jnp.log(jnp.where(y > 0, y, 1.0))  # y ≤ 0 is set to −inf below (a finite log here: no NaN in grads)
    chi = (
        (nu - 1.0) * log_y
        - 0.5 * nu * jnp.log(s2)
        - y * y / (2.0 * s2)
        - (0.5 * nu - 1.0) * _LOG2
        - scipy.special.gammaln(0.5 * nu)
    )
    # ν = 1 (p = N−1): y^0 = 1 even at y = 0 is still outside the support (y > 0).
    chi = jnp.where(y > 0, chi, -jnp.inf)
    return gauss + jnp.sum(chi, axis=-1)


# ---------------------------------------------------------------------------
# LDLᵀ band recursion (THEORY.md §8 "log Z of a banded matrix")
# ---------------------------------------------------------------------------
#
# Elements of the two number systems used by the recursion are tuples of
# arrays over the lanes (nodes or trial points):
#   complex: (re, im); im is None for exactly real numbers (matrix entries);
#   real 2-jet in z: (v, v', v''); derivatives None when identically 0.


def _cx_mul(a, b):
    ar, ai = a
    br, bi = b
    if ai is None and bi is None:
        return ar * br, None
    if ai is None:
        return ar * br, ar * bi
    if bi is None:
        return ar * br, ai * br
    return ar * br - ai * bi, ar * bi + ai * br


def _cx_sub(a, b):
    ar, ai = a
    br, bi = b
    if ai is None and bi is None:
        return ar - br, None
    if bi is None:
        return ar - br, ai
    if ai is None:
        return ar - br, -bi
    return ar - br, ai - bi


def _cx_inv(a):
    ar, ai = a
    den = ar * ar + ai * ai
    return ar / den, -ai / den


def _jet_mul(a, b):
    a0, a1, a2 = a
    b0, b1, b2 = b
    d1 = _jadd(None if a1 is None else a1 * b0, None if b1 is None else a0 * b1)
    t2 = None if a2 is None else a2 * b0
    t2 = _jadd(t2, None if (a1 is None or b1 is None) else 2.0 * a1 * b1)
    t2 = _jadd(t2, None if b2 is None else a0 * b2)
    return a0 * b0, d1, t2


def _jadd(x, y):
    if x is None:
        return y
    if y is None:
        return x
    return x + y


def _jet_sub(a, b):
    out = [a[0] - b[0]]
    for x, y in zip(a[1:], b[1:]):
        if y is None:
            out.append(x)
        elif x is None:
            out.append(-y)
        else:
            out.append(x - y)
    return tuple(out)


def _jet_inv(a):
    a0, a1, a2 = a
    u = 1.0 / a0
    u2 = u * u
    return u, -a1 * u2, (2.0 * a1 * a1 * u - a2) * u2


_CX = (_cx_mul, _cx_sub, _cx_inv)
_JET = (_jet_mul, _jet_sub, _jet_inv)
#: Plain real numbers as 1-tuples (the Sturm counts of :func:`_count_above`).
_REAL = (lambda a, b: (a[0] * b[0],), lambda a, b: (a[0] - b[0],), lambda a: (1.0 / a[0],))


def _eliminate(window, off, diag, ops):
    """One step of the band LDLᵀ: bring in row p, eliminate row p − m.

    Parameters
    ----------
    window : list of lists, ``window[i][j]`` (i ≥ j) = updated entry of rows
        (p−m+i, p−m+j) of ``z − T``.
    off : list, ``off[k]`` = ``(z − T)[p, p−k] = −T[p, p−k]`` for k = 1…m (real).
    diag : ``z − T[p, p]``.
    ops : (mul, sub, inv) of the number system.

    Returns
    -------
    new_window, pivot d (row p−m), 1/d, multipliers ``l = L[p−m+1 … p, p−m]``.
    """
    mul, sub, inv = ops
    m = len(window)
    d = window[0][0]
    dinv = inv(d)
    col = [window[i][0] for i in range(1, m)] + [off[m]]
    mult = [mul(c, dinv) for c in col]
    new = []
    for i in range(m):
        row = []
        for j in range(i + 1):
            if i < m - 1:
                base = window[i + 1][j + 1]
            elif j < m - 1:
                base = off[m - 1 - j]
            else:
                base = diag
            row.append(sub(base, mul(mult[i], col[j])))
        new.append(row)
    return new, d, dinv, mult


def _flatten(window):
    return [x for row in window for x in row]


def _unflatten(flat, m):
    out, it = [], iter(flat)
    for i in range(m):
        out.append([next(it) for _ in range(i + 1)])
    return out


def _scan_rows(lower):
    """Rows fed to the scan, shape (N+m, m+1): ``rows[p, k] = T[p, p−k]`` (0 outside; m zero rows appended).

    The window starts as the identity on m virtual rows −m…−1 (uncoupled, so
    their pivots are exactly 1) and the appended rows are uncoupled too, so
    the N + m steps eliminate exactly the rows 0…N−1.
    """
    m = lower.shape[-2] - 1
    rows = jnp.swapaxes(_masked(lower), -1, -2)
    return jnp.concatenate([rows, jnp.zeros((m, m + 1), rows.dtype)], axis=0)


def _identity_window(m: int, lanes: int, parts: int):
    """The m×m identity as a start window, elements as ``parts``-tuples (1: real, 2: complex, 3: 2-jet) over the lanes."""
    one, zero = jnp.ones(lanes), jnp.zeros(lanes)
    return [[(one if i == j else zero,) + (zero,) * (parts - 1) for j in range(i + 1)] for i in range(m)]


def _accumulate(acc, d):
    """Fold pivot d into the running product (rescaled by 2^e) with the winding count.

    acc = (Pr, Pi, exponent, winding, negatives).  Multiplying by d in the
    upper half plane turns P counter-clockwise by less than π, so it crossed
    the negative real axis iff Im P ≥ 0 before and < 0 after.
    """
    pr, pi, ex, wind, neg = acc
    dr, di = d
    qr = pr * dr - pi * di
    qi = pr * di + pi * dr
    wind = wind + ((pi >= 0) & (qi < 0)).astype(wind.dtype)
    neg = neg + ((dr < 0) & (di == 0)).astype(neg.dtype)
    _, e = jnp.frexp(jnp.maximum(jnp.abs(qr), jnp.abs(qi)))
    return jnp.ldexp(qr, -e), jnp.ldexp(qi, -e), ex + e, wind, neg


def _acc_init(lanes):
    one, zero = jnp.ones(lanes), jnp.zeros(lanes)
    izero = jnp.zeros(lanes, jnp.int32)
    return (one, zero, izero, izero, izero)


def _acc_log(acc, zi):
    """``Σ_j Log d_j`` from the accumulator: (real, imag) arrays over the lanes.

    Non-real lanes: ``arg P + 2π·winding``; real lanes: ``π·#(negative pivots)``.
    """
    pr, pi, ex, wind, neg = acc
    re = 0.5 * jnp.log(pr * pr + pi * pi) + ex * _LOG2
    im = jnp.where(zi == 0, math.pi * neg, jnp.arctan2(pi, pr) + 2 * math.pi * wind)
    return re, im


def _logdet_forward(lower, zr, zi, keep_factors: bool):
    """Scan of the complex recursion at nodes z = zr + i·zi (zi ≥ 0), shape (M,).

    Returns (re, im) of ``Σ_j Log d_j`` and, if ``keep_factors``, the
    factors per row 0…N−1: 1/d as (re, im) each (N, M) and the multipliers
    as 2m arrays (N, M) (re, im of l_0, …, l_{m−1}).
    """
    m = lower.shape[-2] - 1
    lanes = zr.shape[0]
    rows = _scan_rows(lower)

    def body(carry, row):
        flat, acc = carry
        window = _unflatten(flat, m)
        off = [None] + [(-row[k], None) for k in range(1, m + 1)]
        diag = (zr - row[0], zi)
        window, d, dinv, mult = _eliminate(window, off, diag, _CX)
        acc = _accumulate(acc, d)
        out = None
        if keep_factors:
            out = jnp.stack([dinv[0], dinv[1]] + [x for lc in mult for x in lc])
        return (_flatten(window), acc), out

    init = (_flatten(_identity_window(m, lanes, 2)), _acc_init(lanes))
    (_, acc), factors = lax.scan(body, init, rows)
    re, im = _acc_log(acc, zi)
    if keep_factors:
        return re, im, factors[m:]
    return re, im


def _takahashi(factors, cr, ci, m):
    """Backward recursion for the band of ``c_k (z_k − T)⁻¹``, summed over the lanes.

    Parameters
    ----------
    factors : (N, 2 + 2m, M) from :func:`_logdet_forward` (rows 0…N−1).
    cr, ci : (M,), the per-lane complex cotangent factor c = cr + i·ci.

    Returns
    -------
    band : (N, m+1), ``band[i, k] = Σ_lanes Re(c Z[i+k, i])`` (0 where i+k ≥ N).
    trace : (re, im) of ``Σ_i c Z_ii`` per lane, shape (M,) each.
    """
    lanes = cr.shape[0]

    def body(carry, fac):
        flat, tr_re, tr_im = carry
        zw = _unflatten(flat, m)  # rows i+1 … i+m
        dinv = _cx_mul((fac[0], fac[1]), (cr, ci))
        mult = [(fac[2 + 2 * a], fac[3 + 2 * a]) for a in range(m)]

        def zget(a, b):
            return zw[a][b] if a >= b else zw[b][a]

        col = []
        for a in range(m):
            acc_r, acc_i = None, None
            for b in range(m):
                pr, pi = _cx_mul(zget(a, b), mult[b])
                acc_r, acc_i = _jadd(acc_r, pr), _jadd(acc_i, pi)
            col.append((-acc_r, -acc_i))
        zii_r, zii_i = dinv
        for a in range(m):
            pr, pi = _cx_mul(mult[a], col[a])
            zii_r, zii_i = zii_r - pr, zii_i - pi
        new = [[(zii_r, zii_i)]]
        for a in range(1, m):
            new.append([col[a - 1]] + [zw[a - 1][b] for b in range(a)])
        out = jnp.stack([jnp.sum(zii_r)] + [jnp.sum(c[0]) for c in col])
        return (_flatten(new), tr_re + zii_r, tr_im + zii_i), out

    zero = jnp.zeros(lanes)
    init = (_flatten([[(zero, zero) for _ in range(i + 1)] for i in range(m)]), zero, zero)
    (_, tr_re, tr_im), band = lax.scan(body, init, factors, reverse=True)
    return band, (tr_re, tr_im)


@jax.custom_vjp
def _logdet_nodes(lower, zr, zi):
    """(re, im) of ``Σ_j Log d_j(z)`` at z = zr + i·zi, zi ≥ 0; lower (m+1, N) masked; shapes (M,)."""
    return _logdet_forward(lower, zr, zi, keep_factors=False)


def _logdet_nodes_fwd(lower, zr, zi):
    re, im, factors = _logdet_forward(lower, zr, zi, keep_factors=True)
    return (re, im), factors


def _logdet_nodes_bwd(factors, cot):
    n, m = factors.shape[0], (factors.shape[1] - 2) // 2
    gr, gi = cot
    # d(re)/dT = Re D, d(im)/dT = Im D  ⇒  T̄ = Re((gr − i gi) D), D = ∂Log det/∂T.
    band, (tr_re, tr_im) = _takahashi(factors, gr, -gi, m)
    # ∂Log det(z − T)/∂T[p, p−k] = −(2 − δ_k0) Z[p, p−k]; band[i, k] holds Σ Re(c Z[i+k, i]).
    scale = np.where(np.arange(m + 1) == 0, 1.0, 2.0)
    shifted = []
    for k in range(m + 1):
        col = band[:, k]
        shifted.append(jnp.concatenate([jnp.zeros(k), col[: n - k]]))
    lower_bar = -scale[:, None] * jnp.stack(shifted)
    lower_bar = jnp.where(_valid_mask(m, n), lower_bar, 0.0)
    # ∂Log det/∂zr = tr Z, ∂/∂zi = i tr Z ⇒ zr̄ = Re(c trZ), zī = Re(i c trZ) = −Im(c trZ).
    return lower_bar, tr_re, -tr_im


_logdet_nodes.defvjp(_logdet_nodes_fwd, _logdet_nodes_bwd)


def log_det(T, z):
    """``Σ_j Log d_j(z)`` of the band LDLᵀ of ``z − T`` (THEORY.md §8), O(N m²) per node.

    Parameters
    ----------
    T : Band, lower of shape (..., m+1, N)
    z : array_like, complex, shape (M,)
        Nodes.  For Im z > 0 the result equals ``Σ_i Log(z − λ_i)`` on the
        principal branch (every pivot is a Pick function of z); for Im z < 0
        it is the complex conjugate of the value at z̄; for real z it is
        ``log|det(z − T)| + iπ·#(negative pivots)`` (real above λ_1).

    Returns
    -------
    Array, complex128, shape (..., M)
        Differentiable in T (custom VJP through the band of the resolvent).

    Raises
    ------
    ValueError
        For an invalid T (see :class:`Band`) or z not of shape (M,).
    """
    z = jnp.asarray(z)
    if z.ndim != 1:
        raise ValueError(f"z: expected shape (M,), got {tuple(z.shape)}")
    z = z.astype(jnp.complex128)
    return _batched(_log_det_batch, T, jnp.real(z), jnp.imag(z))


@jax.jit
def _log_det_batch(lower, zr, zi):
    """log det at nodes for a flat batch (B, m+1, N); conjugate symmetry for Im z < 0."""
    zi_up = jnp.abs(zi)
    re, im = jax.vmap(lambda lo: _logdet_nodes(_masked(lo), zr, zi_up))(lower)
    return re + 1j * jnp.where(zi < 0, -im, im)


# ---------------------------------------------------------------------------
# Saddle point without eigenvalues
# ---------------------------------------------------------------------------


class BandSaddlePoint(NamedTuple):
    """Saddle of ``φ(z) = Nz/2 − ½ log det(z − T)`` (THEORY.md §2, §8).

    Attributes
    ----------
    mu : Array, shape (...)
        ``z*``, the root of ``G(z) = (1/N) ∂_z log det(z − T) = 1`` above λ_1
        (the finite-N Lagrange multiplier μ).
    inv_sq_sum : Array, shape (...)
        ``Σ_i (z − λ_i)⁻² = −N G'(z)`` at the evaluated point nearest to z*
        (inside the last bracket; ≲ 1e-4 relative from its value at z*): it
        only sets the contour scale ``σ_c = (½ · this)^(−½)``.
    rounds : Array, shape (...)
        Scans spent (one per round), ≤ :data:`SADDLE_MAX_ROUNDS`; 1 for T = 0, 3–5 typically.
    """

    mu: jax.Array
    inv_sq_sum: jax.Array
    rounds: jax.Array


def _jet_scan(lower, x):
    """Real recursion at trial points x (K,) with z-derivatives.

    Returns ``(S1, S2, ok)``: ``S1 = Σ d_j'/d_j = N G(x)``,
    ``S2 = Σ (d_j''/d_j − (d_j'/d_j)²) = N G'(x)``, ``ok`` = all pivots > 0 and finite.
    """
    m = lower.shape[-2] - 1
    lanes = x.shape[0]
    rows = _scan_rows(lower)
    one, zero = jnp.ones(lanes), jnp.zeros(lanes)

    def body(carry, row):
        flat, s1, s2, ok = carry
        window = _unflatten(flat, m)
        off = [None] + [(-row[k], None, None) for k in range(1, m + 1)]
        diag = (x - row[0], one, None)
        window, d, dinv, _ = _eliminate(window, off, diag, _JET)
        r1 = d[1] * dinv[0]
        s1 = s1 + r1
        s2 = s2 + d[2] * dinv[0] - r1 * r1
        ok = ok & (d[0] > 0) & jnp.isfinite(d[0])
        return (_flatten(window), s1, s2, ok), None

    init = (_flatten(_identity_window(m, lanes, 3)), zero, zero, jnp.ones(lanes, bool))
    (_, s1, s2, ok), _ = lax.scan(body, init, rows)
    return s1, s2, ok


def _gershgorin_radii(lower):
    """``Σ_{q≠p} |T_pq|`` per row p of one masked band (m+1, N), shape (N,)."""
    n, m = lower.shape[-1], lower.shape[-2] - 1
    radii = jnp.zeros(n)
    for k in range(1, m + 1):
        a = jnp.abs(lower[k])
        radii = radii + a + jnp.concatenate([a[k:], jnp.zeros(k)])  # T[p, p−k] and T[p+k, p] in row p
    return radii


def _bracket(lower):
    """``lo = max_p T_pp ≤ λ_1`` and ``hi = Gershgorin bound + 1 ≥ z*`` (ε ≤ 1)."""
    return jnp.max(lower[0]), jnp.max(lower[0] + _gershgorin_radii(lower)) + 1.0


def _saddle_single(lower):
    """Saddle for one masked band (m+1, N): bracketed Newton on G and 1/G (THEORY.md §8).

    Above λ_1, G is convex and decreasing and h = 1/G is concave and
    increasing (−G is a Pick function, hence so is 1/G; its poles lie below
    λ_1).  So from any evaluated point the tangent root of h is a lower
    bound of z*, and the chords of G and of h between the best left and
    right points are upper bounds: each round evaluates a uniform grid of
    the certified bracket [L, U] and stops when U − L ≤ SADDLE_RTOL·max(|L|, 1).
    Newton on h is exact for a single pole, the condensed case.
    """
    n = lower.shape[-1]
    lo, hi = _bracket(lower)
    grid = jnp.arange(SADDLE_POINTS) / (SADDLE_POINTS - 1)
    inf = jnp.inf
    # The state is packed in one vector (fewer XLA fusions, hence faster compilation):
    # [lo, hi, x_b, G(x_b), G'(x_b), x_r, G(x_r), G'(x_r)] with b the best left and r the best right point.

    def cond(state):
        it, _, done = state
        return (it < SADDLE_MAX_ROUNDS) & ~done

    def body(state):
        it, vec, _ = state
        lo, hi, base, right = vec[0], vec[1], vec[2:5], vec[5:8]
        x = lo + (hi - lo) * grid
        s1, s2, ok = _jet_scan(lower, x)
        g, gp = s1 / n, s2 / n
        valid = ok & jnp.isfinite(g) & jnp.isfinite(gp) & (g > 0) & (gp < 0)
        is_left = valid & (g >= 1.0)
        is_right = valid & (g < 1.0)
        data = jnp.stack([x, g, gp])
        bl = jnp.argmax(jnp.where(is_left, x, -inf))
        br = jnp.argmin(jnp.where(is_right, x, inf))
        base = jnp.where(is_left[bl] & (x[bl] > base[0]), data[:, bl], base)
        right = jnp.where(is_right[br] & (x[br] < right[0]), data[:, br], right)
        xb, gb, gpb = base[0], base[1], base[2]
        xr, gr, gpr = right[0], right[1], right[2]
        has_b = xb > -inf
        has_r = xr < inf
        both = has_b & has_r
        # Lower bounds: invalid points (below λ_1), left points, tangent roots of h = 1/G from either side.
        newton_b = jnp.where(has_b, xb + gb * (gb - 1.0) / (-gpb), -inf)
        newton_r = jnp.where(has_r, xr - gr * (1.0 - gr) / (-gpr), -inf)
        new_lo = jnp.max(jnp.stack([lo, jnp.max(jnp.where(valid, -inf, x)), xb, newton_b, newton_r]))
        # Upper bounds: right points, chords of G and of h between the best left and right points.
        chord_g = xb + (gb - 1.0) * (xr - xb) / (gb - gr)
        chord_h = xb + (1.0 - 1.0 / gb) * (xr - xb) / (1.0 / gr - 1.0 / gb)
        new_hi = jnp.min(jnp.stack([hi, xr, jnp.where(both, chord_g, inf), jnp.where(both, chord_h, inf)]))
        done = new_hi - new_lo <= SADDLE_RTOL * jnp.maximum(jnp.abs(new_lo), 1.0)
        return it + 1, jnp.concatenate([jnp.stack([new_lo, new_hi]), base, right]), done

    vec0 = jnp.stack([lo, hi, -inf, jnp.nan, jnp.nan, inf, jnp.nan, jnp.nan])
    it, vec, _ = lax.while_loop(cond, body, (jnp.asarray(0), vec0, jnp.asarray(False)))
    lo, hi, base, right = vec[0], vec[1], vec[2:5], vec[5:8]
    # The lower end is the Newton point of h from the best left point (or a bound from the right).
    mu = jnp.minimum(lo, hi)
    # Curvature Σ(z − λ_i)⁻² = −N G' from the evaluated point nearest to z*.
    use_b = (base[0] > -inf) & ((right[0] == inf) | (mu - base[0] <= right[0] - mu))
    inv_sq = -n * jnp.where(use_b, base[2], right[2])
    return BandSaddlePoint(mu=mu, inv_sq_sum=inv_sq, rounds=it)


def _batched(fn, T, *args, **kwargs):
    """Validate T, run the jitted flat-batch ``fn`` on ``(B, m+1, N)`` and give every output T's leading axes back."""
    lower = _lower_of(T)
    out = fn(lower.reshape((-1,) + lower.shape[-2:]), *args, **kwargs)
    return jax.tree_util.tree_map(lambda a: a.reshape(lower.shape[:-2] + a.shape[1:]), out)


@jax.jit
def _saddle_batch(lower):
    """:func:`_saddle_single` over a flat batch (B, m+1, N), masked here; one compilation per shape."""
    return jax.vmap(lambda lo: _saddle_single(_masked(lo)))(lax.stop_gradient(lower))


def saddle_point(T) -> BandSaddlePoint:
    """Saddle ``z*`` of ``φ(z) = Nz/2 − ½ log det(z − T)`` without eigenvalues (THEORY.md §8).

    Bracket ``[max_p T_pp, Gershgorin + 1]``; each round evaluates the real
    recursion with its first two z-derivatives on a uniform grid of
    :data:`SADDLE_POINTS` points of the current bracket.  A point is right of
    z* iff all pivots are positive and finite and ``G < 1``.  Above λ_1, G is
    convex decreasing and 1/G concave increasing, so Newton on 1/G from any
    evaluated point (exact for a single pole, the condensed case) is a lower
    bound of z* and the chords of G and 1/G between the best left and right
    points are upper bounds.  Stops when the certified bracket is narrower
    than :data:`SADDLE_RTOL`·max(|z*|, 1), after at most
    :data:`SADDLE_MAX_ROUNDS` rounds.  Not differentiated (stop_gradient).

    Parameters
    ----------
    T : Band, lower of shape (..., m+1, N)

    Returns
    -------
    BandSaddlePoint
        Fields of shape (...).

    Raises
    ------
    ValueError
        For an invalid T (see :class:`Band`).
    """
    return _batched(_saddle_batch, T)


# ---------------------------------------------------------------------------
# log Z on the hyperbolic contour
# ---------------------------------------------------------------------------


class _BandContour(NamedTuple):
    log_z: jax.Array  # ()
    mu: jax.Array  # ()
    weights: jax.Array  # (M,) complex, normalised: ⟨q⟩ = Σ Im(w q(z_k))
    offsets: jax.Array  # (M,) complex, z_k − z*


def _contour_single(lower, num_nodes: int) -> _BandContour:
    """Exact log Z of one masked band (m+1, N) on sphere's contour (THEORY.md §2, §8)."""
    n = lower.shape[-1]
    # Everything up to the node scan depends on `fixed` only: the contour (z*, σ_c, length, nodes) is
    # constant under autodiff, and only the node log dets carry the gradient.
    fixed = lax.stop_gradient(lower)
    sp = _saddle_single(fixed)
    mu = sp.mu
    sigma = 1.0 / jnp.sqrt(0.5 * sp.inv_sq_sum)

    # Tail length as sphere._contour, with the phase from log dets (lane 0 is z* itself, for log det(z* − T)).
    trial, trial_offsets = _tail_trials(sigma)
    probe = jnp.concatenate([jnp.zeros(1, trial_offsets.dtype), trial_offsets])
    re, _ = _logdet_forward(fixed, mu + probe.real, probe.imag, keep_factors=False)
    length = _tail_length(trial, 0.5 * n * trial_offsets.real - 0.5 * (re[1:] - re[0]) < -TAIL_LOG_CUTOFF)
    offsets, coef = _sinh_nodes(length, sigma, num_nodes)

    ld_re, ld_im = _logdet_nodes(lower, mu + offsets.real, offsets.imag)
    ld_star = lax.stop_gradient(ld_re[0])  # node 0 is z* (φ* cancels between prefactor and J)
    log_mag = 0.5 * n * offsets.real - 0.5 * (ld_re - ld_star)
    ph = 0.5 * n * offsets.imag - 0.5 * ld_im
    weights = jnp.exp(log_mag) * (jnp.cos(ph) + 1j * jnp.sin(ph)) * coef
    norm = jnp.sum(weights.imag)
    log_z = _log_prefactor(n) + 0.5 * (n * mu - n - ld_star) + jnp.log(norm)
    return _BandContour(log_z=log_z, mu=mu, weights=weights / norm, offsets=offsets)


def log_partition_and_saddle(T, num_nodes: int = NUM_NODES):
    """``(log Z(T), z*)`` — the exact log Z and the finite-N μ (THEORY.md §2, §8).

    See :func:`log_partition`; the saddle is returned without gradient.
    """
    ct = _batched(_contour_batch, T, num_nodes=int(num_nodes))
    return ct.log_z, ct.mu


@functools.partial(jax.jit, static_argnames="num_nodes")
def _contour_batch(lower, *, num_nodes: int) -> _BandContour:
    """:func:`_contour_single` over a flat batch (B, m+1, N), masked here.

    Jitted at module level so that every public entry point (log Z, z*,
    observables) shares one compilation per shape.
    """
    return jax.vmap(lambda lo: _contour_single(_masked(lo), num_nodes))(lower)


def log_partition(T, num_nodes: int = NUM_NODES):
    """Exact ``log Z(T) = log E_{x~U(S_N)} exp(½ xᵀTx)`` of a banded T (THEORY.md §2, §8).

    ``log Z = prefactor(N) + ½(N z* − N − log det(z* − T)) + log J`` with J
    the trapezoid rule on the hyperbola through z* (scale
    ``σ_c = (½ Σ_i (z* − λ_i)⁻²)^(−½)``, tail length probed, sinh-mapped
    nodes), ``log det`` from the band recursion; no eigenvalues.  The contour
    is held constant under autodiff; the reverse-mode gradient with respect
    to ``T.lower`` costs one forward scan with stored factors and one
    backward (Takahashi) scan.

    Parameters
    ----------
    T : Band, lower of shape (..., m+1, N)
        N ≥ 2, m ≥ 1; leading axes batch.  Jit- and vmap-able.
    num_nodes : int
        Quadrature nodes on the half contour (static).

    Returns
    -------
    Array, shape (...)
        Reverse-mode differentiable in ``T.lower`` (custom VJP); forward mode
        (``jax.jvp``, ``jax.hessian``) is not supported.

    Raises
    ------
    ValueError
        For an invalid T (see :class:`Band`).
    """
    return log_partition_and_saddle(T, num_nodes)[0]


# ---------------------------------------------------------------------------
# Host observables (THEORY.md §4, §8)
# ---------------------------------------------------------------------------


class BandObservables(NamedTuple):
    """Observables of band draws (THEORY.md §4 "Measurable finite-N counterparts").

    Attributes
    ----------
    eigenvalues : ndarray, shape (..., r+1)
        Top r+1 eigenvalues of T, descending.
    overlaps : ndarray, shape (..., r)
        ``u_k = (v_1(T))_k²`` for the first r kept axes.
    condensate : ndarray, shape (...)
        ``M = (2/N) ∂log Z/∂λ_1 = (1/N)⟨(z − λ_1)⁻¹⟩``.
    mu : ndarray, shape (...)
        Finite-N Lagrange multiplier z*.
    log_z_per_n : ndarray, shape (...)
        ``(1/N) log Z(T)``.
    signal : ndarray, shape (..., r)
        ``(A_0)_kk = T_kk``, k < r.
    trace_sq : ndarray, shape (...)
        ``tr W² = ‖T‖_F²``.
    """

    eigenvalues: np.ndarray
    overlaps: np.ndarray
    condensate: np.ndarray
    mu: np.ndarray
    log_z_per_n: np.ndarray
    signal: np.ndarray
    trace_sq: np.ndarray


def _count_above(lower, x):
    """Number of eigenvalues of T above each x (K,): negative pivots of the LDLᵀ of ``x − T`` (Sylvester).

    A pivot that vanishes (|d| < pivmin) is replaced by −pivmin, as in
    LAPACK's dstebz; pivmin = 1e-250·max(1, max|T|²) keeps every update finite.
    """
    m = lower.shape[-2] - 1
    lanes = x.shape[0]
    rows = _scan_rows(lower)
    pivmin = 1e-250 * jnp.maximum(1.0, jnp.max(jnp.abs(lower)) ** 2)

    def body(carry, row):
        flat, count = carry
        window = _unflatten(flat, m)
        d0 = window[0][0][0]
        window[0][0] = (jnp.where(jnp.abs(d0) < pivmin, -pivmin, d0),)
        off = [None] + [(-row[k],) for k in range(1, m + 1)]
        window, d, _, _ = _eliminate(window, off, (x - row[0],), _REAL)
        return (_flatten(window), count + (d[0] < 0)), None

    (_, count), _ = lax.scan(body, (_flatten(_identity_window(m, lanes, 1)), jnp.zeros(lanes, jnp.int32)), rows)
    return count


def _top_eigenvalues_single(lower, k: int):
    """Top k eigenvalues (descending) of one masked band (m+1, N) by multisection on Sturm counts, O(N m²) per round.

    Each round evaluates :data:`EIGEN_POINTS` points inside each of the k
    brackets in one scan and narrows every bracket with all the counts; it
    stops when every bracket is below 4 ulps (≤ :data:`EIGEN_MAX_ROUNDS`).
    """
    radii = _gershgorin_radii(lower)
    lo0, hi0 = jnp.min(lower[0] - radii), jnp.max(lower[0] + radii)
    frac = jnp.arange(1, EIGEN_POINTS + 1) / (EIGEN_POINTS + 1)
    target = jnp.arange(1, k + 1)[:, None]  # bracket i holds λ_i: count(a) ≥ i > count(b)

    def cond(state):
        it, a, b = state
        return (it < EIGEN_MAX_ROUNDS) & jnp.any(b - a > 4 * _EPS * jnp.maximum(jnp.abs(a), jnp.abs(b)) + 1e-300)

    def body(state):
        it, a, b = state
        x = (a[:, None] + (b - a)[:, None] * frac).ravel()
        count = _count_above(lower, x)
        above = count[None, :] >= target  # (k, K·k)
        a = jnp.maximum(a, jnp.max(jnp.where(above, x, -jnp.inf), axis=1))
        b = jnp.minimum(b, jnp.min(jnp.where(above, jnp.inf, x), axis=1))
        return it + 1, a, b

    state = (jnp.asarray(0), jnp.full(k, lo0), jnp.full(k, hi0))
    _, a, b = lax.while_loop(cond, body, state)
    return 0.5 * (a + b)


@functools.partial(jax.jit, static_argnames="k")
def _top_eigenvalues_batch(lower, *, k: int):
    return jax.vmap(lambda lo: _top_eigenvalues_single(_masked(lo), k))(lower)


def _top_vector_prefix(lower, top: float, r: int):
    """First r components of the top eigenvector of one band (m+1, N) by inverse iteration, O(N m²).

    Banded LU of ``T − (λ_1 + δ)``, δ = 1e-12·max(1, |λ_1|); each of the
    :data:`INVERSE_ITERATIONS` solves shrinks the error by ~δ/(λ_1 − λ_2).
    Near-degenerate top pairs have no well-defined v_1.
    """
    m, n = lower.shape[0] - 1, lower.shape[1]
    shift = top + 1e-12 * max(1.0, abs(top))
    # general band storage for solve_banded with (l, u) = (m, m): ab[m + i − j, j] = (T − shift)[i, j]
    ab = np.zeros((2 * m + 1, n))
    ab[m] = lower[0] - shift
    for k in range(1, m + 1):
        ab[m + k, : n - k] = lower[k, k:]  # below the diagonal, T[j+k, j]
        ab[m - k, k:] = lower[k, k:]  # above the diagonal, T[j−k, j]
    v = np.random.default_rng(0).standard_normal(n)
    for _ in range(INVERSE_ITERATIONS):
        v = scipy.linalg.solve_banded((m, m), ab, v, check_finite=False)
        v /= np.linalg.norm(v)
    return v[:r]


def observables(T, r: int) -> BandObservables:
    """§4 observables of a batch of band matrices, on the host (outside any gradient path).

    Everything is O(N m²) per draw, without any eigen-decomposition: the top
    r+1 eigenvalues by multisection on Sturm counts (negative pivots of the
    band LDLᵀ, jitted and vectorised over draws; LAPACK's ``eig_banded`` would
    cost O(N² m) in its band → tridiagonal step, 160 ms per draw at N = 5000),
    the first r components of the top eigenvector by banded inverse
    iteration (SciPy), log Z, z* and the contour from :func:`log_partition`'s
    quadrature, ``M`` as the contour average of ``(z − λ_1)⁻¹/N``.  The
    jitted parts run in chunks of at most :data:`OBSERVABLES_CHUNK` draws,
    so a large batch compiles once.

    Parameters
    ----------
    T : Band, lower of shape (..., m+1, N)
    r : int
        Number of data modes, 1 ≤ r ≤ min(m, N − 1).

    Returns
    -------
    BandObservables
    """
    lower = np.asarray(_lower_of(T))
    m, n = lower.shape[-2] - 1, lower.shape[-1]
    r = int(r)
    if not 1 <= r <= min(m, n - 1):
        raise ValueError(f"r: need 1 <= r <= min(m, N - 1) = {min(m, n - 1)}, got {r}")
    batch = lower.shape[:-2]
    flat = np.where(_valid_mask(m, n), lower, 0.0).reshape((-1, m + 1, n))
    count = flat.shape[0]
    chunk = min(count, OBSERVABLES_CHUNK)
    parts = []
    for start in range(0, count, chunk):
        block = flat[start : start + chunk]
        pad = chunk - block.shape[0]
        if pad:
            block = np.concatenate([block, np.repeat(block[:1], pad, axis=0)])
        block = jnp.asarray(block)
        ct = _contour_batch(block, num_nodes=NUM_NODES)  # same cache key as log_partition's calls
        eig = _top_eigenvalues_batch(block, k=r + 1)
        parts.append([np.asarray(a)[: chunk - pad] for a in (eig, ct.weights, ct.offsets, ct.mu, ct.log_z)])
    eig, weights, offsets, mu, log_z = (np.concatenate(cols) for cols in zip(*parts))
    vec = np.stack([_top_vector_prefix(flat[b], eig[b, 0], r) for b in range(count)])
    gap = mu[:, None] + offsets - eig[:, :1]
    condensate = np.sum((weights / gap).imag, axis=-1) / n
    signal = flat[:, 0, :r]
    trace_sq = np.sum(flat[:, 0] ** 2, axis=-1) + 2.0 * np.sum(flat[:, 1:] ** 2, axis=(-2, -1))

    def shape(a):
        return a.reshape(batch + a.shape[1:])

    return BandObservables(
        eigenvalues=shape(eig),
        overlaps=shape(vec**2),
        condensate=shape(condensate),
        mu=shape(mu),
        log_z_per_n=shape(log_z / n),
        signal=shape(signal),
        trace_sq=shape(trace_sq),
    )


class EdgeObservables(NamedTuple):
    """The condensate of a draw resolved over its top modes (THEORY.md §4, edge phases FMe and SG).

    In an edge phase the §4 condensate sits on the bulk edge; at finite N the
    top eigenvalues there are O(N^(-2/3)) apart and the condensate is shared
    by several of them, so the top-mode ``M`` and ``u_1`` of
    :class:`BandObservables` see only a part of it.  These observables resolve
    it: exact per-mode occupations, their overlaps with the data axes, and the
    window-free condensate along each data axis.

    Attributes
    ----------
    eigenvalues : ndarray, shape (..., w)
        Top w eigenvalues λ_1 ≥ … ≥ λ_w of T.
    occupations : ndarray, shape (..., w)
        ``f_k = E[(v_k·x)²]/N = (2/N) ∂log Z/∂λ_k = (1/N)⟨(z − λ_k)⁻¹⟩`` under
        p(x | T) on the sphere (exact, by the contour of :func:`log_partition`);
        summed over all N modes they give 1, and ``f_1`` is ``M``.
    overlaps : ndarray, shape (..., w, r)
        ``(v_k · e_j)²`` of the top w eigenvectors with the first r axes.
    data_condensate : ndarray, shape (..., r)
        ``Q_j = E[(e_j·x)²]/N = (2/N) ∂log Z/∂T_jj = Σ_k f_k (v_k·e_j)²`` (all
        modes): the weight of p(x | T) along data axis j.  No window: it tends
        to ``M u_j`` of §4 in condensed phases (the bulk adds O(1/N)) and to 0
        in paramagnetic ones, however the condensate is shared among modes.
    """

    eigenvalues: np.ndarray
    occupations: np.ndarray
    overlaps: np.ndarray
    data_condensate: np.ndarray


@jax.jit
def _data_condensate_batch(lower):
    """``(2/N) ∂log Z/∂T_jj`` for every j of a flat batch (B, m+1, N): E[x_j²]/N, by the Takahashi VJP."""
    grad = jax.grad(lambda lo: jnp.sum(_contour_batch(lo, num_nodes=NUM_NODES).log_z))(lower)
    return 2.0 * grad[:, 0, :] / lower.shape[-1]


def edge_observables(T, r: int, num_modes: int) -> EdgeObservables:
    """Per-mode occupations, overlaps and data-axis condensates of a batch of band draws (host).

    Parameters
    ----------
    T : Band, lower of shape (..., m+1, N)
    r : int
        Number of data axes (the first r coordinates of the band frame), 1 ≤ r ≤ N.
    num_modes : int
        Number w of top modes resolved, 1 ≤ w ≤ N.

    Returns
    -------
    EdgeObservables

    Notes
    -----
    Everything is O(N m²) per draw and mode: the top w eigenvalues by
    multisection on Sturm counts, each eigenvector's first r components by
    banded inverse iteration (as :func:`observables`; LAPACK's ``eig_banded``
    forms the N×N reduction matrix for eigenvectors: 5 s per draw at
    N = 2000), the contour of :func:`log_partition` and its reverse-mode
    gradient.  Modes closer than ~1e-9 of their gap are not resolved.
    """
    lower = np.asarray(_lower_of(T))
    m, n = lower.shape[-2] - 1, lower.shape[-1]
    r, w = int(r), int(num_modes)
    if not 1 <= r <= n:
        raise ValueError(f"r: need 1 <= r <= N = {n}, got {r}")
    if not 1 <= w <= n:
        raise ValueError(f"num_modes: need 1 <= num_modes <= N = {n}, got {w}")
    batch = lower.shape[:-2]
    flat = np.where(_valid_mask(m, n), lower, 0.0).reshape((-1, m + 1, n))
    count = flat.shape[0]
    chunk = min(count, OBSERVABLES_CHUNK)
    eig = np.empty((count, w))
    vec = np.empty((count, w, r))
    occ = np.empty((count, w))
    q = np.empty((count, r))
    for start in range(0, count, chunk):
        block = flat[start : start + chunk]
        size = block.shape[0]
        if size < chunk:
            block = np.concatenate([block, np.repeat(block[:1], chunk - size, axis=0)])
        ct = _contour_batch(jnp.asarray(block), num_nodes=NUM_NODES)
        weights, offsets, mu = (np.asarray(a)[:size] for a in (ct.weights, ct.offsets, ct.mu))
        q[start : start + size] = np.asarray(_data_condensate_batch(jnp.asarray(block)))[:size, :r]
        vals = np.asarray(_top_eigenvalues_batch(jnp.asarray(block), k=w))[:size]
        for b in range(size):
            eig[start + b] = vals[b]
            vec[start + b] = np.stack([_top_vector_prefix(block[b], lam, r) for lam in vals[b]]) ** 2
            gap = mu[b] + offsets[b][None, :] - vals[b][:, None]
            occ[start + b] = np.sum((weights[b][None, :] / gap).imag, axis=-1) / n

    def shape(a):
        return a.reshape(batch + a.shape[1:])

    return EdgeObservables(eigenvalues=shape(eig), occupations=shape(occ), overlaps=shape(vec), data_condensate=shape(q))
