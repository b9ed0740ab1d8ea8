"""Tests of ``bayes_sbm.band`` (THEORY.md §8, band representation).

Every check compares with an independent computation: dense NumPy
eigen-decompositions of a matrix assembled here (not by ``Band.to_dense``),
``sphere.log_partition`` on those eigenvalues (itself tested against Kummer's
function and quadrature in ``test_sphere.py``), closed forms (Z(0) = 1 and
∇log Z(0) = I/2, the N = 2 Bessel form), central finite differences,
scipy.stats densities, Gauss–Legendre quadrature, Brent's method for the
saddle and a two-sample KS test against dense GOE draws.

Compiled shapes are few on purpose (each new (batch, m, N) costs a few
seconds of XLA compilation on a busy machine): the fast tests share the
module-level jitted functions below on a handful of shapes; the larger
sweeps are marked ``slow``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special, stats

from bayes_sbm import band, sphere

# ---------------------------------------------------------------------------
# Tolerances
# ---------------------------------------------------------------------------

#: Orthogonal reductions in float64: entries O(1), N ≤ 300 ⇒ accumulated rounding ≲ 1e-13; allow 1e-11.
ROUNDTRIP_ATOL = 1e-11
#: Σ log d_j vs Σ log(z − λ_i): both sums of N logs in float64 (≲ N·1e-16 each), N ≤ 300 ⇒ 1e-11 relative to max(1, |ref|).
LOGDET_RTOL = 1e-11
#: The brief's accuracy target for log Z against the eigenvalue route, relative to max(1, |log Z|).
LOGZ_RTOL = 1e-10
#: The saddle's certified bracket is 1e-13·max(|z*|, 1); sphere's Newton is at machine precision.
SADDLE_RTOL = 1e-12
#: Two exact gradient formulas (contour average of the band resolvent vs eigen route) agree to quadrature accuracy,
#: relative to max(1, largest entry) (a spike of 50 makes ∂log Z/∂T_00 ≈ 30).
GRAD_ATOL = 1e-10
#: Central differences, step 1e-5: truncation h²f'''/6 ~ 1e-11 plus rounding ε|f|/h ~ 1e-10 ⇒ 1e-7 is safe.
FD_STEP = 1e-5
FD_ATOL = 1e-7
#: KS two-sample test of exact samplers: a p-value below 1e-3 is a false alarm with probability 1e-3 per check.
KS_MIN_PVALUE = 1e-3
#: Draws per sample in the KS tests (the test's power against a wrong law of the χ entries is then ~1).
KS_DRAWS = 3000
#: Composite Gauss–Legendre (4000 nodes) on a smooth density that is < 1e-30 outside the range: ~1e-14; allow 1e-10.
QUAD_ATOL = 1e-10
#: Observables of a well separated top eigenvector: eig_banded vs dense eigh agree to ~1e-13; allow 1e-10.
OBS_ATOL = 1e-10
#: log-density identities among sums of O(N) float64 terms of size ≤ 1e3.
DENSITY_ATOL = 1e-9
#: log Z(0) = 0: O(1) terms (prefactor, ½(N z* − N), log J) cancel to a few ulps.
ZERO_ATOL = 1e-14
#: Σ(z − λ_i)⁻² is taken at the evaluated point nearest to z* (≲ 1e-4 relative away, BandSaddlePoint docs); allow 1e-3.
INV_SQ_RTOL = 1e-3
#: Σ_p ∂log Z/∂T_pp = N/2: N contour averages of ~1e-14 quadrature error each, summed.
SUM_RULE_RTOL = 1e-12
#: z = (T − μ)/sd and ξ = log(χ²/(s²ν))/τ inverted: a few ulps of O(1) latents.
LATENT_ATOL = 1e-12
#: ‖T‖_F² from band storage vs from the dense matrix: N² float64 terms summed in two orders (N = 12).
TRACE_RTOL = 1e-13
#: The same per-lane arithmetic under jit + vmap and eagerly; XLA may fuse it differently (a few ulps).
JIT_ATOL = 1e-14
#: N = 2000 reduction: ‖T‖_F² = ‖W‖_F² (orthogonal invariance) from N² float64 terms, rounding ~N·ε.
LARGE_FRO_RTOL = 1e-12
#: N = 2000 reduction: top eigenvalues after O(N³) flops of rounding ~N·ε·‖W‖ ≈ 1e-12; allow 1e-10.
LARGE_EIG_ATOL = 1e-10
#: Top-eigenvector overlaps at N = 1000: both routes err by ~ε‖T‖/gap; the paramagnetic gap ~N^(-2/3) ≈ 0.01 ⇒ ~1e-12.
LARGE_OVERLAP_ATOL = 1e-8
#: brentq's smallest allowed rtol and no absolute floor: the reference z* to machine precision.
BRENT_RTOL = 4 * np.finfo(float).eps
BRENT_XTOL = 1e-300

# band's public functions are jitted inside (one compilation per batch shape, shared by log Z, z* and the
# observables); the fast tests reuse three value shapes, (7, 2, 2), (8, 3, 12) and (8, 4, 40), and one
# gradient shape.  A batched, jitted gradient also exercises vmap over the whole pipeline.
_grad_batch = jax.jit(jax.vmap(jax.grad(lambda lo: band.log_partition(band.Band(lo)))))
_sph_logz = jax.jit(sphere.log_partition)
#: The common batch size of the fast value checks at N = 12, m = 2.
BATCH = 8


# ---------------------------------------------------------------------------
# Independent helpers (NumPy)
# ---------------------------------------------------------------------------


def dense(lower: np.ndarray) -> np.ndarray:
    """Dense symmetric matrix from lower storage, assembled entry by entry (independent of Band.to_dense)."""
    lower = np.asarray(lower, dtype=np.float64)
    m, n = lower.shape[-2] - 1, lower.shape[-1]
    out = np.zeros(lower.shape[:-2] + (n, n))
    for k in range(m + 1):
        for p in range(k, n):
            out[..., p, p - k] = lower[..., k, p]
            out[..., p - k, p] = lower[..., k, p]
    return out


def goe_band(rng: np.random.Generator, n: int, m: int, precision: float) -> np.ndarray:
    """A GOE band draw (THEORY §8 law) with NumPy: N(0, 2s²) diagonal, N(0, s²) inside, s·χ_{N−p} outermost."""
    s = 1.0 / math.sqrt(precision * n)
    lower = np.zeros((m + 1, n))
    lower[0] = rng.normal(0.0, math.sqrt(2.0) * s, n)
    for k in range(1, m):
        lower[k, k:] = rng.normal(0.0, s, n - k)
    lower[m, m:] = s * np.sqrt(rng.chisquare(np.arange(n - m, 0, -1)))
    return lower


def make_band(kind: str, n: int, m: int, seed: int) -> np.ndarray:
    """Test spectra: paramagnetic, critical, spin-glass bulk, condensed spikes, degenerate pair, shifted, zero."""
    rng = np.random.default_rng(seed)
    if kind == "zero":
        return np.zeros((m + 1, n))
    precision = {"pm": 2.0, "critical": 1.0, "sg": 0.5}.get(kind, 1.0)
    lower = goe_band(rng, n, m, precision)
    if kind == "spike3":
        lower[0, 0] += 3.0
    elif kind == "spike50":
        lower[0, 0] += 50.0
    elif kind == "shift":
        lower[0] -= 7.0
    elif kind == "degenerate":
        # rows 0 and 1 decoupled from everything, both with diagonal 5: a doubly degenerate top eigenvalue
        for k in range(1, m + 1):
            lower[k, : min(n, k + 2)] = 0.0
        lower[0, :2] = 5.0
    return lower


KINDS = ("zero", "pm", "critical", "sg", "spike3", "spike50", "shift", "degenerate")


def kinds_batch(n: int, m: int, seed: int) -> tuple[tuple[str, ...], np.ndarray]:
    kinds = tuple(k for k in KINDS if not (k == "degenerate" and n < 4))
    return kinds, np.stack([make_band(k, n, m, seed + i) for i, k in enumerate(kinds)])


def valid_mask(m: int, n: int) -> np.ndarray:
    """Stored entries inside the matrix: ``lower[k, p]`` with p ≥ k."""
    return np.arange(n)[None, :] >= np.arange(m + 1)[:, None]


def logz(lowers):
    """Band log Z for a batch padded to BATCH copies at (m, N) = (2, 12), so every call shares one compilation."""
    lowers = np.asarray(lowers)
    if lowers.shape[-2:] == (3, 12) and lowers.shape[0] < BATCH:
        pad = np.repeat(lowers[:1], BATCH - lowers.shape[0], axis=0)
        return np.asarray(band.log_partition(band.Band(np.concatenate([lowers, pad]))))[: lowers.shape[0]]
    return np.asarray(band.log_partition(band.Band(lowers)))


def saddle_reference(lam: np.ndarray) -> np.ndarray:
    """z* by Brent's method on (1/N)Σ1/(z − λ_i) = 1 in [λ_1 + 1/N, λ_1 + 1] (THEORY §2 bounds on ε), per row."""
    lam = np.asarray(lam).reshape(-1, np.shape(lam)[-1])
    out = []
    for row in lam:
        top, n = row.max(), row.size
        out.append(optimize.brentq(lambda z: np.mean(1.0 / (z - row)) - 1.0, top + 1.0 / n, top + 1.0, xtol=BRENT_XTOL, rtol=BRENT_RTOL))
    return np.array(out).reshape(np.shape(lam)[:-1])


def rel_err(value, ref):
    value, ref = np.asarray(value), np.asarray(ref)
    return np.abs(value - ref) / np.maximum(1.0, np.abs(ref))


# ---------------------------------------------------------------------------
# Reduction W → T
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "m", "spike"),
    [(2, 1, 0.0), (7, 1, 2.0), (7, 2, 0.0), (9, 3, 4.0), (40, 2, 3.0), (80, 3, 0.0), (300, 1, 2.0), (300, 2, 0.0)],
)
def test_reduce_round_trip(rng, n, m, spike):
    a = rng.normal(size=(n, n))
    W = (a + a.T) / math.sqrt(2 * n)
    W[0, 0] += spike
    T, P = band.reduce(W, m, return_transform=True)
    D = dense(T.lower)
    assert T.lower.shape == (m + 1, n)
    np.testing.assert_allclose(P @ D @ P.T, W, atol=ROUNDTRIP_ATOL, rtol=0)
    np.testing.assert_allclose(P.T @ P, np.eye(n), atol=ROUNDTRIP_ATOL, rtol=0)
    np.testing.assert_array_equal(P[:m, :m], np.eye(m))  # P = diag(I_m, H)
    np.testing.assert_array_equal(P[:m, m:], 0.0)
    np.testing.assert_array_equal(D[:m, :m], W[:m, :m])  # A_0 = W[:m, :m] exactly
    assert np.all(T.lower[m, m:] > 0.0)
    np.testing.assert_allclose(np.linalg.eigvalsh(D), np.linalg.eigvalsh(W), atol=ROUNDTRIP_ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(T.to_dense()), D, atol=0, rtol=0)


@pytest.mark.parametrize(("n", "m"), [(6, 1), (11, 2), (25, 3)])
def test_reduce_fixes_a_band_matrix(rng, n, m):
    """The reduction with the first m axes fixed and a positive outer band is unique: a band T maps to itself."""
    lower = goe_band(rng, n, m, 1.0)
    T, P = band.reduce(dense(lower), m, return_transform=True)
    np.testing.assert_allclose(T.lower, np.where(valid_mask(m, n), lower, 0.0), atol=ROUNDTRIP_ATOL, rtol=0)
    np.testing.assert_allclose(np.abs(P), np.eye(n), atol=ROUNDTRIP_ATOL, rtol=0)


@pytest.mark.slow
def test_reduce_large(rng):
    n, m = 2000, 2
    a = rng.normal(size=(n, n))
    W = (a + a.T) / math.sqrt(2 * n)
    T = band.reduce(W, m)
    np.testing.assert_allclose(np.sum(dense(T.lower) ** 2), np.sum(W**2), rtol=LARGE_FRO_RTOL)
    np.testing.assert_allclose(np.linalg.eigvalsh(dense(T.lower))[-5:], np.linalg.eigvalsh(W)[-5:], atol=LARGE_EIG_ATOL)


# ---------------------------------------------------------------------------
# log det(z − T)
# ---------------------------------------------------------------------------


LOG_DET_CASES = [(2, 1, "pm"), (12, 2, "spike3"), (12, 2, "degenerate"), (12, 2, "sg"), (40, 3, "spike50")]


@pytest.mark.parametrize(
    ("n", "m", "kind"), LOG_DET_CASES + [pytest.param(300, 1, "critical", marks=pytest.mark.slow), pytest.param(1000, 2, "spike3", marks=pytest.mark.slow)]
)
def test_log_det_matches_eigenvalues(n, m, kind):
    lower = make_band(kind, n, m, 7)
    lam = np.linalg.eigvalsh(dense(lower))
    top = lam[-1]
    z = np.array(
        [
            top + 0.5,  # real, above the spectrum: real result
            top + 0.3 + 0.2j,
            top - 1.0 + 0.05j,  # Re z < λ_1 (inside the spectrum), Im z > 0
            lam[0] - 0.5 + 0.1j,  # left of everything
            0.5 * (lam[0] + top) + 3.0j,
            top - 0.7 - 0.4j,  # lower half plane: conjugate symmetry
        ]
    )
    ref = np.array([np.sum(np.log(complex(zz) - lam)) if zz.imag >= 0 else np.conj(np.sum(np.log(np.conj(zz) - lam))) for zz in z])
    got = np.asarray(band.log_det(band.Band(lower), z))
    assert np.all(rel_err(got.real, ref.real) <= LOGDET_RTOL)
    assert np.all(rel_err(got.imag, ref.imag) <= LOGDET_RTOL)
    assert got[0].imag == 0.0


def test_log_det_real_below_top_counts_negative_pivots():
    lower = make_band("spike3", 12, 2, 3)
    lam = np.linalg.eigvalsh(dense(lower))
    z = np.array([0.5 * (lam[-1] + lam[-2]), lam[0] - 1.0])
    got = np.asarray(band.log_det(band.Band(lower), z))
    np.testing.assert_allclose(got.real, [np.sum(np.log(np.abs(zz - lam))) for zz in z.real], rtol=LOGDET_RTOL)
    # the imaginary part is π times the integer count of negative pivots, bit for bit
    np.testing.assert_array_equal(got.imag, [math.pi * np.sum(lam > zz) for zz in z.real])


# ---------------------------------------------------------------------------
# Saddle and log Z against the eigenvalue route
# ---------------------------------------------------------------------------

FAST_SHAPES = [(2, 1), (12, 2), (40, 3)]
SLOW_SHAPES = [(3, 1), (3, 2), (5, 2), (100, 1), (100, 2), (100, 3), (500, 2), (1000, 1), (2000, 2), (2000, 3)]


def _check_logz_batch(n, m, seed):
    kinds, lowers = kinds_batch(n, m, seed)
    lam = np.linalg.eigvalsh(dense(lowers))
    ref = np.asarray(_sph_logz(lam))
    ref_mu = saddle_reference(lam)
    log_z, mu = band.log_partition_and_saddle(band.Band(lowers))
    err = rel_err(log_z, ref)
    assert np.all(err <= LOGZ_RTOL), dict(zip(kinds, err))
    mu_err = rel_err(mu, ref_mu)
    assert np.all(mu_err <= SADDLE_RTOL), dict(zip(kinds, mu_err))
    return kinds, lowers, lam, ref_mu, np.asarray(mu)


@pytest.mark.parametrize(("n", "m"), FAST_SHAPES)
def test_log_partition_matches_eigenvalue_route(n, m):
    _check_logz_batch(n, m, seed=100 * n + m)


def test_saddle_point():
    kinds, lowers, lam, ref_mu, mu = _check_logz_batch(12, 2, seed=100 * 12 + 2)
    sp = band.saddle_point(band.Band(lowers))
    np.testing.assert_array_equal(np.asarray(sp.mu), mu)
    assert np.all(np.asarray(sp.rounds) < band.SADDLE_MAX_ROUNDS)
    # Σ(z − λ_i)⁻² at the last left point of the bracket (within ~1e-4 of z*): it only scales the contour
    np.testing.assert_allclose(np.asarray(sp.inv_sq_sum), np.sum((ref_mu[:, None] - lam) ** -2.0, axis=-1), rtol=INV_SQ_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "m"), SLOW_SHAPES)
def test_log_partition_matches_eigenvalue_route_sweep(n, m):
    _check_logz_batch(n, m, seed=100 * n + m)


def test_log_partition_closed_forms():
    """Z(0) = 1 and log Z(T + aI) = log Z(T) + Na/2 (the sphere constraint), through the same compiled batch."""
    n, m = 12, 2
    kinds, lowers = kinds_batch(n, m, 5)
    shifted = lowers.copy()
    shifted[:, 0] += 0.75
    a, b = logz(lowers), logz(shifted)
    assert a[kinds.index("zero")] == pytest.approx(0.0, abs=ZERO_ATOL)
    assert np.all(rel_err(b, a + 0.5 * n * 0.75) <= LOGZ_RTOL)


# ---------------------------------------------------------------------------
# Gradient
# ---------------------------------------------------------------------------


def _eigen_route_grad(lower):
    n, m = lower.shape[-1], lower.shape[-2] - 1

    def f(lo):
        D = jnp.zeros((n, n))
        for k in range(m + 1):
            idx = np.arange(k, n)
            D = D.at[idx, idx - k].set(lo[k, k:])
            if k:
                D = D.at[idx - k, idx].set(lo[k, k:])
        return sphere.log_partition(jnp.linalg.eigvalsh(D))

    return np.asarray(jax.jit(jax.grad(f))(jnp.asarray(lower)))


def test_gradient(rng):
    """One jitted, vmapped gradient over three points: a non-degenerate spectrum (vs the eigen route and
    central differences), W = 0 (closed form) and a doubly degenerate top eigenvalue (finite, symmetric)."""
    n, m = 12, 2
    mask = valid_mask(m, n)
    points = np.stack([make_band("spike3", n, m, 11), np.zeros((m + 1, n)), make_band("degenerate", n, m, 2)])
    g, g0, gd = np.asarray(_grad_batch(jnp.asarray(points)))
    assert np.all(g[~mask] == 0.0)
    ref = _eigen_route_grad(points[0])
    np.testing.assert_allclose(g, ref, atol=GRAD_ATOL * max(1.0, np.abs(ref).max()), rtol=0)
    # directional central differences along 3 random directions (6 evaluations in the shared batch shape)
    dirs = rng.normal(size=(3, m + 1, n)) * mask
    vals = logz(np.concatenate([points[0] + FD_STEP * dirs, points[0] - FD_STEP * dirs]))
    fd = (vals[:3] - vals[3:]) / (2 * FD_STEP)
    np.testing.assert_allclose(np.sum(g * dirs, axis=(-2, -1)), fd, atol=FD_ATOL, rtol=0)
    # ∇ log Z(0) = E[x xᵀ]/2 = I/2: ½ on the diagonal, 0 off it (THEORY §1)
    expected = np.zeros((m + 1, n))
    expected[0] = 0.5
    np.testing.assert_allclose(g0, expected, atol=GRAD_ATOL, rtol=0)
    assert np.all(np.isfinite(gd))
    assert gd[0, 0] == pytest.approx(gd[0, 1], rel=GRAD_ATOL)  # the two decoupled, equal rows share the condensate
    # d/da log Z(T + aI) = N/2: the diagonal of every gradient sums to N/2
    np.testing.assert_allclose([np.sum(g[0]), np.sum(g0[0]), np.sum(gd[0])], n / 2, rtol=SUM_RULE_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "m", "kind"), [(60, 1, "pm"), (60, 3, "spike50"), (200, 2, "sg")])
def test_gradient_sweep(n, m, kind):
    lower = make_band(kind, n, m, 3)
    g = np.asarray(_grad_batch(jnp.asarray(lower[None])))[0]
    ref = _eigen_route_grad(lower)
    np.testing.assert_allclose(g, ref, atol=GRAD_ATOL * max(1.0, np.abs(ref).max()), rtol=0)


# ---------------------------------------------------------------------------
# Prior: sampler, density, non-centred parametrisation
# ---------------------------------------------------------------------------


def test_sampler_matches_dense_goe():
    n, m, c = 30, 2, 1.5
    T = band.sample_goe_band(jax.random.key(0), n, m, c, (KS_DRAWS,))
    D_band = dense(np.asarray(T.lower))
    rng = np.random.default_rng(1)
    s = 1.0 / math.sqrt(c * n)
    a = rng.normal(size=(KS_DRAWS, n, n))
    D_goe = (a + np.swapaxes(a, -1, -2)) * (s / math.sqrt(2.0))  # off-diagonal var s², diagonal var 2s²
    for stat in (lambda D: np.linalg.eigvalsh(D)[:, -1], lambda D: np.sum(D * D, axis=(-2, -1))):
        p = stats.ks_2samp(stat(D_band), stat(D_goe)).pvalue
        assert p > KS_MIN_PVALUE


def test_prior_density_matches_scipy(rng):
    n, m, c = 9, 3, 0.7
    lower = goe_band(rng, n, m, c)
    s = 1.0 / math.sqrt(c * n)
    ref = np.sum(stats.norm.logpdf(lower[0], scale=math.sqrt(2.0) * s))
    for k in range(1, m):
        ref += np.sum(stats.norm.logpdf(lower[k, k:], scale=s))
    ref += np.sum(stats.chi.logpdf(lower[m, m:] / s, np.arange(n - m, 0, -1)) - math.log(s))
    got = float(band.goe_band_log_prior(band.Band(lower), c))
    assert got == pytest.approx(ref, abs=DENSITY_ATOL)
    # −(cN/4)‖T‖_F² + Σ (N−p−1) log T[p, p−m] + const: changing T changes the density by exactly that
    other = goe_band(rng, n, m, c)
    diff = float(band.goe_band_log_prior(band.Band(other), c)) - got
    fro = lambda lo: np.sum(dense(lo) ** 2)  # noqa: E731
    jac = lambda lo: np.sum((np.arange(n - m, 0, -1) - 1) * np.log(lo[m, m:]))  # noqa: E731
    assert diff == pytest.approx(-c * n / 4 * (fro(other) - fro(lower)) + jac(other) - jac(lower), abs=DENSITY_ATOL)
    bad = lower.copy()
    bad[m, -1] = -0.1
    assert float(band.goe_band_log_prior(band.Band(bad), c)) == -np.inf


def _gauss_legendre(lo: float, hi: float, panels: int = 200, order: int = 20):
    """Composite Gauss–Legendre nodes and weights on [lo, hi] (exact for the smooth densities here to ~1e-15)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    return (mid[:, None] + half[:, None] * x).ravel(), (half[:, None] * w).ravel()


@pytest.mark.parametrize("nu", [1, 2, 3, 10, 200, 5000])
def test_chi_correction_is_the_chi_law(nu):
    """N(0,1)(ξ)·exp(correction) integrates to 1 and gives the χ_ν moments of χ = √(ν e^{τξ})."""
    tau = math.sqrt(2.0 / nu)
    # the density is < 1e-30 outside: left tail ~ exp(νu/2) with u = τξ, right tail ~ exp(−ν e^u/2)
    lo, hi = -2.0 * (70.0 / nu + 6.0) / tau, (2.0 * math.log(1.0 + 140.0 / nu) + 6.0) / tau
    x, w = _gauss_legendre(lo, hi)
    dens = np.exp(stats.norm.logpdf(x) + np.asarray(band.chi_log_density_correction(x, nu)))
    assert np.sum(w * dens) == pytest.approx(1.0, abs=QUAD_ATOL)
    chi = np.sqrt(nu * np.exp(tau * x))
    assert np.sum(w * dens * chi**2) == pytest.approx(nu, rel=QUAD_ATOL)
    assert np.sum(w * dens * chi) == pytest.approx(math.sqrt(2.0) * math.exp(special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2)), rel=QUAD_ATOL)
    # and the density of ξ is the χ_ν density pushed through ξ ↦ χ (scipy.stats.chi), at a few points
    pts = np.array([-1.5, 0.0, 0.7])
    chi_p = np.sqrt(nu * np.exp(tau * pts))
    ref = stats.chi.logpdf(chi_p, nu) + np.log(0.5 * tau * chi_p)
    got = stats.norm.logpdf(pts) + np.asarray(band.chi_log_density_correction(pts, nu))
    np.testing.assert_allclose(got, ref, atol=DENSITY_ATOL)


def test_latent_round_trip_and_jacobian(rng):
    n, m, c = 10, 2, 1.3
    ng, nc = band.latent_size(n, m)
    assert (ng, nc) == (m * n - m * (m - 1) // 2, n - m)
    assert ng + nc == (m + 1) * n - m * (m + 1) // 2
    z, xi = rng.normal(size=ng), rng.normal(size=nc)
    T = band.band_from_latent(z, xi, n, m, c)
    z2, xi2 = band.latent_from_band(T, c)
    np.testing.assert_allclose(np.asarray(z2), z, atol=LATENT_ATOL)
    np.testing.assert_allclose(np.asarray(xi2), xi, atol=LATENT_ATOL)
    lower = np.asarray(T.lower)
    s = 1.0 / math.sqrt(c * n)
    nu = np.arange(n - m, 0, -1)
    # latent density = prior density of T × |∂T/∂(z, ξ)|, with ∂T/∂z = sd and ∂T[p,p−m]/∂ξ = T τ/2
    latent = np.sum(stats.norm.logpdf(z)) + np.sum(stats.norm.logpdf(xi) + np.asarray(band.chi_log_density_correction(xi, nu)))
    log_jac = n * math.log(math.sqrt(2.0) * s) + (ng - n) * math.log(s) + np.sum(np.log(lower[m, m:] * np.sqrt(2.0 / nu) / 2))
    assert latent == pytest.approx(float(band.goe_band_log_prior(T, c)) + log_jac, abs=DENSITY_ATOL)
    # batched latents: the first row is the draw above, the second has its Gaussian entries negated
    Tb = np.asarray(band.band_from_latent(np.stack([z, -z]), np.stack([xi, xi]), n, m, c).lower)
    assert Tb.shape == (2, m + 1, n)
    np.testing.assert_array_equal(Tb[0], lower)
    np.testing.assert_array_equal(Tb[1, :m], -lower[:m])
    np.testing.assert_array_equal(Tb[1, m], lower[m])


# ---------------------------------------------------------------------------
# Observables
# ---------------------------------------------------------------------------


def test_observables_match_dense():
    n, m, r = 12, 2, 2
    kinds, lowers = kinds_batch(n, m, 21)
    pick = [kinds.index(k) for k in ("pm", "spike3", "spike50", "shift")]
    lowers = lowers[pick + pick].reshape(4, 2, m + 1, n)  # leading batch axes (4, 2); 8 draws share the compiled shape
    obs = band.observables(band.Band(lowers), r)
    D = dense(lowers)
    lam, vec = np.linalg.eigh(D)
    assert obs.eigenvalues.shape == (4, 2, r + 1)
    np.testing.assert_allclose(obs.eigenvalues, lam[..., ::-1][..., : r + 1], atol=OBS_ATOL)
    np.testing.assert_allclose(obs.overlaps, vec[..., :r, -1] ** 2, atol=OBS_ATOL)
    # M = (2/N) ∂log Z/∂λ_1 by central differences of the eigenvalue route (batch shape (8, N) as above)
    flat = lam.reshape(-1, n)
    bump = np.zeros(n)
    bump[-1] = FD_STEP
    fd = (np.asarray(_sph_logz(flat + bump)) - np.asarray(_sph_logz(flat - bump))) / (2 * FD_STEP)
    np.testing.assert_allclose(obs.condensate, (2.0 * fd / n).reshape(lam.shape[:-1]), atol=FD_ATOL)
    np.testing.assert_allclose(obs.mu, saddle_reference(lam).reshape(lam.shape[:-1]), rtol=SADDLE_RTOL)
    np.testing.assert_allclose(obs.log_z_per_n, np.asarray(_sph_logz(flat)).reshape(lam.shape[:-1]) / n, atol=LOGZ_RTOL)
    np.testing.assert_array_equal(obs.signal, lowers[..., 0, :r])
    np.testing.assert_allclose(obs.trace_sq, np.sum(D * D, axis=(-2, -1)), rtol=TRACE_RTOL)


def test_edge_observables_match_dense():
    n, m, r = 12, 2, 2
    kinds, lowers = kinds_batch(n, m, 21)
    pick = [kinds.index(k) for k in ("pm", "spike3", "spike50", "shift")]
    lowers = lowers[pick + pick]  # 8 draws: the compiled shape of the value checks
    edge = band.edge_observables(band.Band(lowers), r, num_modes=n)  # every mode: the sum rules close
    D = dense(lowers)
    lam, vec = np.linalg.eigh(D)
    lam, vec = lam[..., ::-1], vec[..., ::-1]
    np.testing.assert_allclose(edge.eigenvalues, lam, atol=OBS_ATOL)
    np.testing.assert_allclose(edge.overlaps, np.swapaxes(vec[..., :r, :], -1, -2) ** 2, atol=OBS_ATOL)
    # f_k = (2/N) ∂log Z/∂λ_k by the eigenvalue route (sphere's own contour and derivative)
    f = 2.0 * np.asarray(sphere.partition_gradient(lam)) / n
    np.testing.assert_allclose(edge.occupations, f, atol=OBS_ATOL)
    np.testing.assert_allclose(edge.occupations.sum(-1), 1.0, atol=OBS_ATOL)  # quadrature averages, like f_k
    # Q_j = Σ_k f_k (v_k·e_j)² over all modes, against the band gradient route
    np.testing.assert_allclose(edge.data_condensate, np.einsum("bk,bjk->bj", f, vec[:, :r, :] ** 2), atol=OBS_ATOL)
    top3 = band.edge_observables(band.Band(lowers[:2]), 1, num_modes=3)
    np.testing.assert_allclose(top3.occupations, edge.occupations[:2, :3], atol=OBS_ATOL)
    assert top3.overlaps.shape == (2, 3, 1) and top3.data_condensate.shape == (2, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"r": 0, "num_modes": 2}, "r: need"),
    ({"r": 2, "num_modes": 0}, "num_modes: need"),
    ({"r": 2, "num_modes": 13}, "num_modes: need"),
])
def test_edge_observables_refuse_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        band.edge_observables(band.Band(make_band("pm", 12, 2, 1)), **kwargs)


@pytest.mark.slow
def test_observables_large():
    n, m, r = 1000, 2, 2
    lowers = np.stack([make_band("spike3", n, m, 5), make_band("pm", n, m, 6)])
    obs = band.observables(band.Band(lowers), r)
    lam, vec = np.linalg.eigh(dense(lowers))
    np.testing.assert_allclose(obs.eigenvalues, lam[..., ::-1][..., : r + 1], atol=OBS_ATOL)
    # the condensed draw has a well separated top eigenvector; the paramagnetic one a gap ~ N^(-2/3)
    np.testing.assert_allclose(obs.overlaps, vec[..., :r, -1] ** 2, atol=LARGE_OVERLAP_ATOL)
    np.testing.assert_allclose(obs.mu, saddle_reference(lam), rtol=SADDLE_RTOL)


# ---------------------------------------------------------------------------
# Transformations, edge cases, validation
# ---------------------------------------------------------------------------


def test_log_det_under_jit_and_vmap():
    lowers = np.stack([make_band(k, 12, 2, 9) for k in ("pm", "spike3")])
    z = np.array([3.0 + 0.5j, 0.2 + 1.0j])
    batched = np.asarray(band.log_det(band.Band(lowers), z))
    mapped = np.asarray(jax.jit(jax.vmap(lambda lo: band.log_det(band.Band(lo), z)))(jnp.asarray(lowers)))
    np.testing.assert_allclose(mapped, batched, rtol=JIT_ATOL, atol=JIT_ATOL)


def test_band_is_a_pytree():
    lower = jnp.asarray(make_band("pm", 12, 2, 31))
    doubled = jax.tree_util.tree_map(lambda a: 2.0 * a, band.Band(lower))
    assert isinstance(doubled, band.Band) and doubled.N == 12 and doubled.m == 2
    np.testing.assert_array_equal(np.asarray(doubled.to_dense()), 2.0 * dense(np.asarray(lower)))
    # to_dense assembles in NumPy when concrete and with scatters when traced: both give the same matrix
    traced = jax.jit(lambda lo: band.Band(lo).to_dense())(lower)
    np.testing.assert_array_equal(np.asarray(traced), dense(np.asarray(lower)))


def test_dimension_two():
    """N = 2 closed form: Z = e^{(a+c)/2} · I₀((λ₁ − λ₂)/2) (x on the circle of radius √2: ½xᵀWx = (a+c)/2 + ((λ₁−λ₂)/2) cos θ)."""
    kinds, lowers = kinds_batch(2, 1, 77)  # the (7, 2, 2) batch shape of the accuracy test
    lowers[1] = [[0.7, 0.2], [0.0, -1.3]]
    lam = np.linalg.eigvalsh(dense(lowers))
    ref = 0.5 * np.sum(lam, axis=-1) + np.log(special.i0(0.5 * (lam[:, 1] - lam[:, 0])))
    got = np.asarray(band.log_partition(band.Band(lowers)))
    assert np.all(rel_err(got, ref) <= LOGZ_RTOL)
    assert got[kinds.index("zero")] == pytest.approx(0.0, abs=ZERO_ATOL)


def test_ignored_entries_do_not_matter():
    """Stored entries with p < k lie outside the matrix: garbage (even NaN) there changes nothing."""
    lower = make_band("pm", 12, 2, 4)
    junk = lower.copy()
    junk[1, 0] = np.nan
    junk[2, :2] = 1e300
    a, b = logz(np.stack([junk, lower]))
    assert a == b
    np.testing.assert_array_equal(np.asarray(band.Band(junk).to_dense()), dense(lower))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: band.log_partition(band.Band(np.full((3, 5), np.nan))), "T: "),
        (lambda: band.log_partition(band.Band(np.zeros(5))), "T: "),
        (lambda: band.log_partition(band.Band(np.zeros((1, 5)))), "T: "),
        (lambda: band.log_partition(band.Band(np.zeros((2, 1)))), "T: "),
        (lambda: band.saddle_point(band.Band(np.array([[0.0, np.inf], [0.0, 1.0]]))), "T: "),
        (lambda: band.log_det(band.Band(np.zeros((2, 4))), np.ones((2, 2))), "z: "),
        (lambda: band.reduce(np.zeros((3, 4)), 1), "W: "),
        (lambda: band.reduce(np.zeros((1, 1)), 1), "W: "),
        (lambda: band.reduce(np.zeros((4, 4)), 4), "m: "),
        (lambda: band.band_from_latent(np.zeros(3), np.zeros(2), 4, 1, 1.0), "z: "),
        (lambda: band.band_from_latent(np.zeros(4), np.zeros(2), 4, 1, 1.0), "xi: "),
        (lambda: band.observables(band.Band(np.zeros((2, 4))), 2), "r: "),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
