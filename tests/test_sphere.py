"""Tests of ``bayes_sbm.sphere`` (THEORY.md §1–2).

Every value of the library is compared with an independent computation:
closed forms (Z(0) = 1, shifts, moments of the uniform sphere), Kummer's
function in mpmath, deterministic quadrature (scipy) at N = 2 and 3, brute
force Monte Carlo over the sphere, finite differences, and the large-N
semicircle theory.  Tolerances are module constants with their reason.
"""

from __future__ import annotations

import math

import jax
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats
from scipy.interpolate import CubicHermiteSpline

from bayes_sbm import sphere
from bayes_sbm.distribution import SphericalBoltzmann

# ---------------------------------------------------------------------------
# Tolerances
# ---------------------------------------------------------------------------

#: THEORY §2: the contour quadrature gives log Z to ~1e-12 absolute; scaled by max(1, |log Z|) for float64 rounding of large values.
EXACT_RTOL = 1e-12
#: Kummer 1F1 in mpmath at 30 digits is exact at float64; the library claims ~1e-12 relative to max(1, |log Z|).
KUMMER_RTOL = 1e-12
#: scipy quad with epsrel=1e-13 on a smooth periodic/analytic integrand plus the library's ~1e-12: 1e-11 relative to max(1, |log Z|).
QUAD_RTOL = 1e-11
#: Monte Carlo checks: a deviation beyond 5 standard errors has probability < 6e-7 per check under the CLT.
MC_SIGMAS = 5.0
#: Brute-force Monte Carlo sample size over the sphere.
MC_POINTS = 2_000_000
#: Central finite-difference step (balances truncation h² f'''/6 ~ 1e-11 against rounding ε|f|/h ~ 1e-11).
FD_STEP = 1e-5
#: FD error budget: truncation + rounding are each ~1e-11·O(|f|, |f'''|); 1e-8 leaves room for third derivatives ~100.
FD_ATOL = 1e-8
#: Two code paths for the same quadrature formula (HVP vs full R matrix) agree to accumulated rounding.
ROUNDING_ATOL = 1e-12
#: The saddle equation (1/N)Σ1/(μ − λ_i) = 1 is solved to machine precision by Newton (brief: 1e-13).
SADDLE_EQ_ATOL = 1e-13
#: |y|²/N − 1 after normalising in float64: a few ulps.
SPHERE_NORM_RTOL = 1e-12
#: KS test at N = 2: under an exact sampler p ~ U(0, 1); a p-value below 1e-4 is a false alarm with probability 1e-4.
KS_MIN_PVALUE = 1e-4
#: Saddle minus exact in PM tends to ½log(c/(c−1)); finite-N corrections and GOE sample fluctuations are O(1/N) (observed ≲ 0.8/N): allow 2/N.
PM_OFFSET_COEFF = 2.0
#: Gaussian-corrected saddle error is O(1/N) in PM (observed ≈ 0.5/N): allow 2/N.
GAUSS_OFFSET_COEFF = 2.0
#: (1/N) log Z − 1/(4c) = O(1/N) in PM (the O(1) part of log Z, measured ≈ 0.5/N): allow 4/N.
LOGZ_PER_N_COEFF = 4.0
#: Large-N acceptance √(1 − 1/c) of the ACG sampler: at N = 3200 finite-N and GOE corrections are O(1/N) ≪ 1e-2.
ACCEPTANCE_ATOL = 1e-2
#: Tail probability used for the χ² aggregate of the per-coordinate z-scores (two-sided).
CHI2_TAIL = 1e-6

# Jitted copies of the API, compiled once per shape (~0.3 s each; eager JAX compiles every primitive
# separately and costs 2-15x more, which dominates this file's run time otherwise).
_logz = jax.jit(sphere.log_partition)
_logz_and_grad = jax.jit(sphere.log_partition_and_gradient)
_grad = jax.jit(sphere.partition_gradient)
_second_moment = jax.jit(sphere.second_moment_eigen)
_hess = jax.jit(sphere.partition_hessian)
_hess_autodiff = jax.jit(jax.hessian(sphere.log_partition))
_saddle = jax.jit(sphere.saddle_point)
_saddle_value = jax.jit(sphere.log_partition_saddle, static_argnames="gaussian_correction")
_acceptance = jax.jit(sphere.sampler_acceptance)
_sample_eigen = jax.jit(sphere.sample_eigen, static_argnums=2)
_logz_matrix = jax.jit(sphere.log_partition_matrix)
_grad_matrix = jax.jit(jax.grad(sphere.log_partition_matrix))
_hess_matrix = jax.jit(jax.hessian(sphere.log_partition_matrix))
_hvp_matrix = jax.jit(lambda W, D: jax.jvp(jax.grad(sphere.log_partition_matrix), (W,), (D,))[1])


def _scale(value) -> float:
    return max(1.0, abs(float(value)))


def _haar_orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _symmetric_with_spectrum(rng, eigenvalues):
    q = _haar_orthogonal(rng, len(eigenvalues))
    w = (q * np.asarray(eigenvalues)) @ q.T
    return 0.5 * (w + w.T)


def _random_symmetric_direction(rng, n):
    a = rng.standard_normal((n, n))
    return 0.5 * (a + a.T)


# ---------------------------------------------------------------------------
# Exact values: Z(0) = 1, constant spectra, Kummer, quadrature, Monte Carlo
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7, 50, 400, 2000], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("s", [0.0, 0.7, -3.0, 12.0], ids=lambda s: f"s{s}")
def test_constant_spectrum(n, s):
    """Z(0) = 1, and all eigenvalues s: x·x = N makes ½xᵀ(sI)x = Ns/2 constant, so log Z = Ns/2."""
    expected = 0.5 * n * s
    got = float(_logz(np.full(n, s)))
    assert abs(got - expected) <= EXACT_RTOL * _scale(expected)


KUMMER_N = [2, 3, 10, 100, 1000]
KUMMER_ELL = [-20.0, -5.0, -1.0, 0.3, 1.0, 1.5, 3.0, 10.0, 20.0]


@pytest.mark.parametrize("n", KUMMER_N, ids=lambda n: f"N{n}")
def test_rank_one_matches_kummer(n):
    """One non-zero eigenvalue ℓ: (x·v)²/N ~ Beta(½, (N−1)/2), so Z = ₁F₁(½; N/2; Nℓ/2) (THEORY §2)."""
    mpmath.mp.dps = 30
    spectra = np.zeros((len(KUMMER_ELL), n))
    spectra[:, 0] = KUMMER_ELL
    got = np.asarray(_logz(spectra))  # batched over ℓ
    for ell, value in zip(KUMMER_ELL, got):
        ref = float(mpmath.log(mpmath.hyp1f1(0.5, n / 2, n * ell / 2)))
        assert abs(value - ref) <= KUMMER_RTOL * _scale(ref), (n, ell, value, ref)


def test_batched_log_partition_matches_single(rng):
    """Leading axes batch: each row equals the unbatched value."""
    spectra = rng.uniform(-3, 3, size=(2, 3, 5))
    batched = np.asarray(_logz(spectra))
    assert batched.shape == (2, 3)
    for idx in np.ndindex(2, 3):
        assert abs(batched[idx] - float(_logz(spectra[idx]))) <= ROUNDING_ATOL * _scale(batched[idx])


N2_CASES = {
    "mild": (0.5, -0.3),
    "spread": (3.0, -2.0),
    "strong": (10.0, 0.0),
    "negative": (-7.0, -8.0),
    "degenerate": (1.3, 1.3),
}


@pytest.mark.parametrize("lam", list(N2_CASES.values()), ids=list(N2_CASES))
def test_n2_against_angular_quadrature(lam):
    """N = 2: x = √2(cos θ, sin θ) is exact, Z = (1/2π)∫ exp(λ₁cos²θ + λ₂sin²θ) dθ."""
    l1, l2 = lam
    top = max(l1, l2)
    val, _ = integrate.quad(
        lambda t: math.exp(l1 * math.cos(t) ** 2 + l2 * math.sin(t) ** 2 - top),
        0.0, 2 * math.pi, epsabs=0.0, epsrel=1e-13, limit=200,
    )
    ref = top + math.log(val / (2 * math.pi))
    got = float(_logz(np.array(lam)))
    assert abs(got - ref) <= QUAD_RTOL * _scale(ref)


N3_CASES = {
    "mild": (0.4, -0.2, 0.9),
    "spread": (2.0, -1.5, 0.3),
    "condensed": (8.0, 0.0, 0.0),
    "two_equal": (5.0, 5.0, -5.0),
    "negative": (-10.0, -4.0, -1.0),
}


def _n3_log_z(lam):
    """N = 3 by a 1-D integral over u = cos θ of the third eigen-coordinate; the φ-average is a Bessel I₀.

    ½·3·Σλ_i u_i² with u = (sinθ cosφ, sinθ sinφ, cosθ); E_φ exp(A cos²φ + B sin²φ) = e^{(A+B)/2} I₀((A−B)/2).
    """
    l1, l2, l3 = lam
    top = 1.5 * max(lam)

    def integrand(u):
        s2 = 1.0 - u * u
        a = 0.75 * s2 * (l1 - l2)
        expo = 1.5 * l3 * u * u + 0.75 * s2 * (l1 + l2) + abs(a) - top
        return 0.5 * math.exp(expo) * special.ive(0, a)

    val, _ = integrate.quad(integrand, -1.0, 1.0, epsabs=0.0, epsrel=1e-13, limit=200)
    return top + math.log(val)


@pytest.mark.parametrize("lam", list(N3_CASES.values()), ids=list(N3_CASES))
def test_n3_against_bessel_quadrature(lam):
    ref = _n3_log_z(lam)
    got = float(_logz(np.array(lam)))
    assert abs(got - ref) <= QUAD_RTOL * _scale(ref)


def _mc_log_z(rng, W, n_points, chunk=250_000):
    """log of E_U[exp(½xᵀWx)] over x = √N g/|g| and the CLT standard error of the log."""
    n = W.shape[0]
    total, total_sq, count = 0.0, 0.0, 0
    while count < n_points:
        m = min(chunk, n_points - count)
        g = rng.standard_normal((m, n))
        x = g * np.sqrt(n / np.sum(g * g, axis=1))[:, None]
        f = np.exp(0.5 * np.einsum("ki,ij,kj->k", x, W, x))
        total += f.sum()
        total_sq += (f * f).sum()
        count += m
    mean = total / count
    var = total_sq / count - mean**2
    return math.log(mean), math.sqrt(var / count) / mean  # delta method: se(log) = se(mean)/mean


@pytest.mark.parametrize("n", [3, 4, 6], ids=lambda n: f"N{n}")
def test_brute_force_monte_carlo(rng, n):
    """Z(W) = E_{x~U(S_N)}[exp(½xᵀWx)] with 2·10⁶ uniform points; W random with spectrum in [−2, 2]."""
    W = _symmetric_with_spectrum(rng, rng.uniform(-2.0, 2.0, n))
    est, se = _mc_log_z(rng, W, MC_POINTS)
    got = float(_logz_matrix(W))
    assert abs(got - est) <= MC_SIGMAS * se, (got, est, se)


# ---------------------------------------------------------------------------
# Saddle point and the large-N approximations
# ---------------------------------------------------------------------------


def _saddle_cases(goe, rng):
    pm = goe(rng, 50)
    condensed = pm.copy()
    condensed[-1] = 4.0
    strongly = np.zeros(200)
    strongly[0] = 100.0
    return {
        "pm_goe50": pm,
        "condensed_goe50_plus4": condensed,
        "rank_one_100_N200": strongly,
        "constant": np.full(10, 0.3),
        "two_points": np.array([2.0, -1.0]),
        "negative": -np.linspace(1.0, 30.0, 25),
    }


def test_saddle_point_equation(goe, rng):
    """z* solves (1/N)Σ1/(z* − λ_i) = 1 above the spectrum, with 1/N ≤ ε ≤ 1 (THEORY §2)."""
    for name, lam in _saddle_cases(goe, rng).items():
        n = lam.size
        sp = _saddle(lam)
        mu, eps, gaps = float(sp.mu), float(sp.eps), np.asarray(sp.gaps)
        assert mu > lam.max(), name
        # evaluate in the ε form: μ − λ_i = ε + (λ₁ − λ_i) keeps full relative precision of every gap
        # (recomputing μ − λ_i from the rounded μ costs |μ|·ulp/ε, ~3e-12 for the rank-one case)
        assert abs(np.mean(1.0 / (eps + (lam.max() - lam))) - 1.0) <= SADDLE_EQ_ATOL, name
        assert mu == pytest.approx(lam.max() + eps, rel=1e-15), name
        assert 1.0 / n * (1 - 1e-12) <= eps <= 1.0 + 1e-12, (name, eps)
        np.testing.assert_allclose(gaps, mu - lam, rtol=0, atol=4e-16 * _scale(mu), err_msg=name)


SADDLE_NS = (50, 200, 800, 3200)


def test_saddle_vs_exact_paramagnetic(goe, rng):
    """Semicircle PM spectrum (edge 1, c = 4): plain saddle − exact → ½log(c/(c−1)) = O(1), so the
    error per N decreases; the Gaussian-corrected saddle is closer; acceptance = exp(exact − saddle) → √(1 − 1/c)."""
    c = 4.0
    limit_offset = 0.5 * math.log(c / (c - 1.0))
    per_n = []
    for n in SADDLE_NS:
        lam = goe(rng, n)
        exact = float(_logz(lam))
        plain = float(_saddle_value(lam))
        gauss = float(_saddle_value(lam, gaussian_correction=True))
        per_n.append(abs(plain - exact) / n)
        assert abs((plain - exact) - limit_offset) <= PM_OFFSET_COEFF / n, (n, plain - exact)
        assert abs(gauss - exact) < abs(plain - exact), n
        assert abs(gauss - exact) <= GAUSS_OFFSET_COEFF / n, (n, gauss - exact)
        # THEORY §2: the ACG acceptance is exp(log Z − saddle value) exactly
        acc = float(_acceptance(lam))
        assert 0.0 < acc <= 1.0
        assert abs(acc - math.exp(exact - plain)) <= EXACT_RTOL * 10
        # leading order of (1/N) log Z for a semicircle PM bulk is 1/(4c); finite-N error is O(1)
        assert abs(exact / n - 1.0 / (4 * c)) <= LOGZ_PER_N_COEFF / n, (n, exact / n)
    assert all(a > b for a, b in zip(per_n, per_n[1:])), per_n
    assert abs(acc - math.sqrt(1.0 - 1.0 / c)) <= ACCEPTANCE_ATOL, acc  # N = 3200


# ---------------------------------------------------------------------------
# Derivatives
# ---------------------------------------------------------------------------

GRAD_SPECTRA = {
    "uniform_pm": np.array([0.9, 0.4, -0.1, -0.6, -1.2, 0.05]),
    "condensed": np.array([4.0, 0.3, 0.1, -0.2, -0.5, -1.0]),
    "negative": np.array([-2.0, -2.5, -5.0, -7.0, -1.0, -3.0]),
}


def _fd_gradient(f, x, h=FD_STEP):
    out = np.empty(x.size)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        out[i] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return out


def _fd_jacobian(f, x, h=FD_STEP):
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("lam", list(GRAD_SPECTRA.values()), ids=list(GRAD_SPECTRA))
def test_gradient_and_hessian_eigen(lam):
    """partition_gradient vs FD of log_partition, Σg = N/2; partition_hessian vs jax.hessian and FD of the gradient."""
    n = lam.size
    g = np.asarray(_grad(lam))
    np.testing.assert_allclose(g, _fd_gradient(_logz, lam), rtol=0, atol=FD_ATOL)
    assert abs(g.sum() - n / 2) <= ROUNDING_ATOL * n
    assert np.all(g > 0)
    logz2, g2 = _logz_and_grad(lam)
    np.testing.assert_allclose(np.asarray(g2), g, rtol=0, atol=ROUNDING_ATOL)
    assert float(logz2) == pytest.approx(float(_logz(lam)), abs=ROUNDING_ATOL)
    np.testing.assert_allclose(2 * g, np.asarray(_second_moment(lam)), rtol=0, atol=ROUNDING_ATOL)

    H = np.asarray(_hess(lam))
    np.testing.assert_allclose(H, H.T, rtol=0, atol=ROUNDING_ATOL)
    np.testing.assert_allclose(H, np.asarray(_hess_autodiff(lam)), rtol=0, atol=ROUNDING_ATOL)
    np.testing.assert_allclose(H, _fd_jacobian(_grad, lam), rtol=0, atol=FD_ATOL)
    # Σ_i g_i = N/2 for every λ, so the Hessian rows sum to zero
    np.testing.assert_allclose(H.sum(axis=1), 0.0, atol=ROUNDING_ATOL * n)


def test_gradient_matrix_random_directions(rng):
    """jax.grad(log_partition_matrix) vs FD along random symmetric directions; trace = N/2; = V diag(g) Vᵀ."""
    n = 6  # same shape as the degenerate cases below: one compilation
    W = _symmetric_with_spectrum(rng, rng.uniform(-2, 3, n))
    G = np.asarray(_grad_matrix(W))
    np.testing.assert_allclose(G, G.T, rtol=0, atol=ROUNDING_ATOL)
    assert abs(np.trace(G) - n / 2) <= ROUNDING_ATOL * n
    lam, V = np.linalg.eigh(W)
    np.testing.assert_allclose(G, (V * np.asarray(_grad(lam))) @ V.T, rtol=0, atol=1e-11)
    for _ in range(3):
        D = _random_symmetric_direction(rng, n)
        fd = (float(_logz_matrix(W + FD_STEP * D)) - float(_logz_matrix(W - FD_STEP * D))) / (2 * FD_STEP)
        assert abs(np.sum(G * D) - fd) <= FD_ATOL


DEGENERATE_W = {
    "zero_N6": np.zeros((6, 6)),
    "identity_N6": np.eye(6),
    "diag333000": np.diag([3.0, 3.0, 3.0, 0.0, 0.0, 0.0]),
    "zero_N2": np.zeros((2, 2)),
}


@pytest.mark.parametrize("W", list(DEGENERATE_W.values()), ids=list(DEGENERATE_W))
def test_derivatives_at_repeated_eigenvalues(rng, W):
    """Gradient, Hessian and HVPs finite where eigh's eigenvector derivatives are singular, and equal to FD."""
    n = W.shape[0]
    G = np.asarray(_grad_matrix(W))
    H4 = np.asarray(_hess_matrix(W))
    assert np.all(np.isfinite(G)) and np.all(np.isfinite(H4))
    for _ in range(2):
        D = _random_symmetric_direction(rng, n)
        fd = (float(_logz_matrix(W + FD_STEP * D)) - float(_logz_matrix(W - FD_STEP * D))) / (2 * FD_STEP)
        assert abs(np.sum(G * D) - fd) <= FD_ATOL
        fd_grad = (np.asarray(_grad_matrix(W + FD_STEP * D)) - np.asarray(_grad_matrix(W - FD_STEP * D))) / (2 * FD_STEP)
        hvp = np.asarray(_hvp_matrix(W, D))
        assert np.all(np.isfinite(hvp))
        np.testing.assert_allclose(hvp, fd_grad, rtol=0, atol=FD_ATOL)
        np.testing.assert_allclose(np.einsum("ijkl,kl->ij", H4, D), fd_grad, rtol=0, atol=FD_ATOL)
    lam = np.linalg.eigvalsh(W)
    He = np.asarray(_hess(lam))
    assert np.all(np.isfinite(He))
    np.testing.assert_allclose(He, _fd_jacobian(_grad, lam), rtol=0, atol=FD_ATOL)


@pytest.mark.parametrize("n", [2, 3, 6, 40], ids=lambda n: f"N{n}")
def test_derivatives_at_zero_match_uniform_sphere_moments(n):
    """At W = 0 (uniform on the sphere): E[xxᵀ] = I, and ∂²logZ/∂λ_i∂λ_j = ¼Cov(y_i², y_j²) with
    E[y_i⁴] = 3N/(N+2), E[y_i²y_j²] = N/(N+2): H_ii = (N−1)/(2(N+2)), H_ij = −1/(2(N+2))."""
    G = np.asarray(_grad_matrix(np.zeros((n, n))))
    np.testing.assert_allclose(G, 0.5 * np.eye(n), rtol=0, atol=EXACT_RTOL)
    H = np.asarray(_hess(np.zeros(n)))
    expected = np.full((n, n), -0.5 / (n + 2))
    np.fill_diagonal(expected, (n - 1) / (2.0 * (n + 2)))
    np.testing.assert_allclose(H, expected, rtol=0, atol=EXACT_RTOL)


# ---------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------

#: Draws for the second-moment checks (relative standard error ~√(2/n) ≈ 0.7 % per coordinate).
SAMPLER_DRAWS = 40_000


def test_matrix_second_moments_from_samples(rng):
    """E[xxᵀ] from SphericalBoltzmann(W).sample vs 2∇_W log Z, entrywise CLT bound with the sample sd of x_i x_j."""
    draws = 200_000
    W = _symmetric_with_spectrum(rng, np.array([2.5, 0.8, -0.4, -1.7]))
    d = SphericalBoltzmann(W)
    x = np.asarray(d.sample(jax.random.PRNGKey(11), (draws,)))
    prods = x[:, :, None] * x[:, None, :]
    mean = prods.mean(axis=0)
    se = prods.std(axis=0, ddof=1) / math.sqrt(draws)
    expected = np.asarray(d.second_moment)
    np.testing.assert_allclose(expected, 2 * np.asarray(_grad_matrix(W)), rtol=0, atol=ROUNDING_ATOL)
    assert np.all(np.abs(mean - expected) <= MC_SIGMAS * se), (mean - expected) / se


def _sampler_cases(goe, rng):
    pm = goe(rng, 50)
    condensed = pm.copy()
    condensed[-1] = 4.0
    return {"paramagnetic": pm, "condensed": condensed}


@pytest.mark.parametrize("case", ["paramagnetic", "condensed"])
def test_sampler_eigen_second_moments(goe, rng, case):
    """E[y_i²] from sample_eigen vs 2∂logZ/∂λ_i (per coordinate 5σ, and a χ² aggregate); |y|² = N."""
    lam = _sampler_cases(goe, rng)[case]
    n = lam.size
    y = np.asarray(_sample_eigen(jax.random.PRNGKey(7), lam, SAMPLER_DRAWS))
    assert y.shape == (SAMPLER_DRAWS, n)
    np.testing.assert_allclose(np.sum(y * y, axis=1) / n, 1.0, rtol=0, atol=SPHERE_NORM_RTOL)
    sq = y * y
    expected = 2 * np.asarray(_grad(lam))
    z = (sq.mean(axis=0) - expected) / (sq.std(axis=0, ddof=1) / math.sqrt(SAMPLER_DRAWS))
    assert np.all(np.abs(z) <= MC_SIGMAS), z
    # Σz² ≈ χ²_N (one fewer degree of freedom since Σy² is fixed): stay inside the two-sided 1e-6 tails
    lo = stats.chi2.ppf(CHI2_TAIL, n - 1)
    hi = stats.chi2.ppf(1 - CHI2_TAIL, n)
    assert lo <= np.sum(z * z) <= hi, np.mean(z * z)
    # condensate: the top mode carries 2g/N of |x|²; symmetric sign of y (mean zero within CLT)
    se_mean = y.std(axis=0, ddof=1) / math.sqrt(SAMPLER_DRAWS)
    assert np.all(np.abs(y.mean(axis=0)) <= MC_SIGMAS * se_mean)


@pytest.mark.parametrize("case", ["paramagnetic", "condensed"])
def test_sampler_acceptance_matches_envelope(goe, rng, case):
    """sampler_acceptance vs the acceptance rate of the ACG envelope of THEORY §2 simulated in NumPy
    (propose g_i ~ N(0, ε/d_i), u = g/|g|, t = ε + Σ(λ₁ − λ_i)u_i², accept w.p. exp((N/2)(log t − t + 1)))."""
    lam = _sampler_cases(goe, rng)[case]
    n, proposals = lam.size, 200_000
    sp = _saddle(lam)
    eps, gaps = float(sp.eps), np.asarray(sp.gaps)
    g = rng.standard_normal((proposals, n)) * np.sqrt(eps / gaps)
    u2 = g * g / np.sum(g * g, axis=1, keepdims=True)
    t = eps + u2 @ (lam.max() - lam)
    p_acc = np.exp(0.5 * n * (np.log(t) - t + 1.0))
    est, se = p_acc.mean(), p_acc.std(ddof=1) / math.sqrt(proposals)
    acc = float(_acceptance(lam))
    assert 0.0 < acc <= 1.0
    assert abs(acc - est) <= MC_SIGMAS * se, (acc, est, se)


@pytest.mark.parametrize(
    "n", [2, 3, 4, 5, 8, 17], ids=lambda n: f"N{n}"
)
def test_samples_exactly_on_sphere(n):
    """Every draw of sample_eigen satisfies |y|² = N to float64 rounding (docstring and THEORY §1)."""
    lam = np.linspace(-1.0, 1.5, n)
    y = np.asarray(sphere.sample_eigen(jax.random.PRNGKey(0), lam, 2000))
    np.testing.assert_allclose(np.sum(y * y, axis=1) / n, 1.0, rtol=0, atol=SPHERE_NORM_RTOL)


#: Draws for the N = 2 KS test (KS distance resolution ~1.4/√n ≈ 0.004).
KS_DRAWS = 100_000

N2_SAMPLER_CASES = {"mild": (1.5, -0.5), "strong": (6.0, -2.0), "degenerate": (0.7, 0.7)}


@pytest.mark.parametrize("lam", list(N2_SAMPLER_CASES.values()), ids=list(N2_SAMPLER_CASES))
def test_sampler_n2_angular_distribution(lam):
    """N = 2: θ = atan2(y₂, y₁) has density ∝ exp(λ₁cos²θ + λ₂sin²θ) on [0, 2π); KS test against the
    CDF from scipy quad on a grid (cubic Hermite interpolation with the exact density as slope)."""
    l1, l2 = lam
    top = max(lam)

    def density(t):
        return np.exp(l1 * np.cos(t) ** 2 + l2 * np.sin(t) ** 2 - top)

    grid = np.linspace(0.0, 2 * math.pi, 2049)
    pieces = [integrate.quad(density, a, b, epsabs=0.0, epsrel=1e-12)[0] for a, b in zip(grid[:-1], grid[1:])]
    cum = np.concatenate([[0.0], np.cumsum(pieces)])
    total = cum[-1]
    cdf = CubicHermiteSpline(grid, cum / total, density(grid) / total)

    y = np.asarray(_sample_eigen(jax.random.PRNGKey(3), np.array(lam), KS_DRAWS))
    theta = np.mod(np.arctan2(y[:, 1], y[:, 0]), 2 * math.pi)
    result = stats.kstest(theta, cdf)
    assert result.pvalue > KS_MIN_PVALUE, result


def test_input_errors():
    """Bad shapes raise ValueError naming the argument (the public, un-jitted API)."""
    with pytest.raises(ValueError, match="eigenvalues"):
        sphere.log_partition(np.array([0.5]))
    with pytest.raises(ValueError, match="eigenvalues"):
        sphere.sample_eigen(jax.random.PRNGKey(0), np.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match="W"):
        sphere.log_partition_matrix(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="W"):
        sphere.log_partition_matrix(np.zeros(3))


# ---------------------------------------------------------------------------
# Condensed-mode split sampler (THEORY §2, last sampler sentence)
# ---------------------------------------------------------------------------

#: Gauss–Legendre in s = √t (64 panels × 24 nodes) of an analytic integrand plus log Z's ~1e-12: 1e-10 relative is ample.
MARGINAL_RTOL = 1e-10
#: The envelope inequalities hold exactly; evaluating both sides in float64 (terms up to ~N·|λ|) costs ~1e-12 relative.
ENVELOPE_SLACK = 1e-9
#: Draws for the split sampler's moment and KS checks (relative standard error of E[y_i²] ~ √(2/n) ≈ 1 %).
SPLIT_DRAWS = 20_000
#: Points of the s-grid for the exact marginal CDF of t (cumulative Simpson: CDF error ≪ 1e-6 ≪ KS resolution ~1e-2).
MARGINAL_GRID = 4001
#: The split must beat the plain ACG where a mode is condensed: ≥ 0.95 predicted (measured 0.984) at N = 1000.
SPLIT_MIN_CONDENSED_ACCEPTANCE = 0.95

_split_env = jax.jit(sphere._split_envelope)
_split_bounds = jax.jit(sphere._split_log_target_and_envelope)
# (key, λ, num, batch, force_split): force_split is traced, so "split" and "auto" share one compilation per shape
_sample_split_info = jax.jit(sphere._sample_split, static_argnums=(2, 3))
_sample_acg_info = jax.jit(sphere._sample_acg, static_argnums=(2, 3))
_acceptance_method = jax.jit(sphere.sampler_acceptance, static_argnums=1)
#: Random interior points per envelope interval (plus both endpoints) in the pointwise envelope check.
ENVELOPE_POINTS = 14
#: Interval ends lo + width vs the next lo, and the last end vs 1: one addition of numbers ≤ 1 (≤ 1 ulp = 2.2e-16 relative).
TILE_RTOL = 1e-14
#: Last interval end vs 1 (absolute): 1 − δ + δ rounds to within one ulp of 1.
TILE_END_ATOL = 1e-15
#: Two evaluations of the same exact acceptance (sampler info vs sampler_acceptance): rounding of log-sums of size ~N only.
SAME_ACCEPTANCE_RTOL = 1e-12
#: In PM spectra the split's ceiling is its rest's ACG, so both accept ≈ 0.87 (SPLIT_INTERVALS); this bounds their difference.
PM_SPLIT_ACG_ATOL = 0.05


def _split_spectra(goe, rng, n):
    """PM (GOE edge 1), one condensed spike (top 3) and two near-degenerate spikes (3, 3.05) on the same bulk."""
    bulk = goe(rng, n)
    one = bulk.copy()
    one[-1] = 3.0
    two = bulk.copy()
    two[-2:] = (3.0, 3.05)
    return {"paramagnetic": bulk, "one_spike": one, "two_spikes": two}


def _split_log_marginal(lam, s):
    """Exact log density of s = |y_top|/√N (up to a constant), independent of any sampler:
    t = s² has density ∝ t^{-1/2}(1 − t)^{(N−3)/2} e^{Nλ_top t/2} Z_{N−1}((1 − t)N/(N−1) · λ_rest)."""
    lam = np.asarray(lam)
    n = lam.size
    top = int(np.argmax(lam))
    rest = np.delete(lam, top)
    t = s * s
    kappa = (1.0 - t) * n / (n - 1)
    log_z_rest = np.asarray(_logz(kappa[:, None] * rest[None, :]))
    with np.errstate(divide="ignore"):
        log_base = 0.5 * (n - 3) * np.log1p(-t) if n > 3 else np.zeros_like(t)
    return log_base + 0.5 * n * lam[top] * t + log_z_rest


@pytest.mark.parametrize("lam", [
    np.array([0.8, -0.3, 0.1]),
    np.array([4.0, 0.5, -1.0, 0.2, -0.7, 1.1, 0.0]),
    pytest.param(np.r_[np.linspace(-1.0, 1.0, 50), 3.0], marks=pytest.mark.slow),
], ids=["N3", "N7_condensed", "N51_condensed"])
def test_split_marginal_normalisation(lam):
    """Derivation check of the split: ∫₀¹ 2(1 − s²)^{(N−3)/2} e^{Nλ_top s²/2} Z_{N−1}(κ(s²)λ_rest) ds
    = B(½, (N−1)/2) Z_N(λ) (the uniform measure gives y_top²/N ~ Beta(½, (N−1)/2))."""
    n = lam.size
    nodes, weights = np.polynomial.legendre.leggauss(24)
    edges = np.linspace(0.0, 1.0, 65)
    half = 0.5 * np.diff(edges)
    s = (edges[:-1, None] + half[:, None] * (nodes[None, :] + 1.0)).ravel()
    w = (half[:, None] * weights[None, :]).ravel()
    log_f = _split_log_marginal(lam, s)
    ref = float(_logz(lam)) + special.betaln(0.5, 0.5 * (n - 1))
    shift = log_f.max()
    got = shift + math.log(np.sum(2.0 * w * np.exp(log_f - shift)))
    assert abs(got - ref) <= MARGINAL_RTOL * _scale(ref), (got, ref)


@pytest.mark.parametrize("n", [50, pytest.param(5, marks=pytest.mark.slow), pytest.param(300, marks=pytest.mark.slow)],
                         ids=lambda n: f"N{n}")
def test_split_envelope_dominates(goe, rng, n):
    """Envelope validity (by convexity; checked pointwise): on every interval, at the endpoints and
    ENVELOPE_POINTS random interior points, log envelope ≥ log r_k(t) ≥ log f(t), where f is the exact t-factor
    t^{-1/2}(1 − t)^{(N−3)/2} Z_{N−1}(κμ_rest) (μ = λ − λ_top) and r_k uses Kent's ACG bound
    (or the uniform bound on the last interval).  Also: intervals tile [0, 1]."""
    for name, lam in _split_spectra(goe, rng, n).items():
        env = _split_env(lam)
        lo, width = np.asarray(env.lo), np.asarray(env.width)
        assert lo[0] == 0.0 and np.all(width >= 0), name
        np.testing.assert_allclose(lo[1:], lo[:-1] + width[:-1], rtol=TILE_RTOL, atol=0, err_msg=name)
        assert abs(lo[-1] + width[-1] - 1.0) <= TILE_END_ATOL, name
        k_int = lo.size
        frac = np.concatenate([[0.0, 1.0], rng.uniform(size=ENVELOPE_POINTS)])
        k = np.repeat(np.arange(k_int), frac.size)
        # t = 0 and t = 1 are limits (both sides ±inf); the nearest representable interior points stand in
        t = np.clip(lo[k] + np.tile(frac, k_int) * width[k], np.finfo(float).tiny, 1.0 - np.finfo(float).eps)
        target, envelope = (np.asarray(a) for a in _split_bounds(env, k, t))
        mu = lam - lam.max()
        rest = np.delete(mu, int(np.argmax(lam)))
        kappa = (1.0 - t) * n / (n - 1)
        log_z_rest = np.asarray(_logz(kappa[:, None] * rest[None, :]))
        exact = -0.5 * np.log(t) + 0.5 * (n - 3) * np.log1p(-t) + log_z_rest
        scale = np.maximum(1.0, np.abs(envelope))
        assert np.all(envelope - target >= -ENVELOPE_SLACK * scale), (name, np.min(envelope - target))
        # target − exact = B_k(t) − log Z_{N−1}(κμ_rest) ≥ 0 (Kent's ACG bound; e^{½κn'μ₂} ≥ Z on the last interval)
        assert np.all(target - exact >= -ENVELOPE_SLACK * scale), (name, np.min(target - exact))


@pytest.mark.parametrize(("n", "case"), [
    (50, "one_spike"),
    (50, "two_spikes"),
    pytest.param(50, "paramagnetic", marks=pytest.mark.slow),
    pytest.param(300, "paramagnetic", marks=pytest.mark.slow),
    pytest.param(300, "one_spike", marks=pytest.mark.slow),
    pytest.param(300, "two_spikes", marks=pytest.mark.slow),
])
def test_split_sampler_moments_and_rate(goe, rng, n, case):
    """Split sampler (forced, so PM is covered too): E[y_i²] vs 2∂logZ/∂λ_i (5σ per coordinate and a χ²
    aggregate), E[y_i] = 0, |y|² = N; and its acceptance rate vs the exact prediction B(½,(N−1)/2)Z_N/∫env
    (binomial 5σ) — a wrong acceptance ratio would show up in the rate as well as in the moments."""
    lam = _split_spectra(goe, rng, n)[case]
    batch = sphere._proposal_batch(n)
    y, info = _sample_split_info(jax.random.PRNGKey(17), lam, SPLIT_DRAWS, batch, True)
    y = np.asarray(y)
    assert bool(info.split)
    np.testing.assert_allclose(np.sum(y * y, axis=1) / n, 1.0, rtol=0, atol=SPHERE_NORM_RTOL)
    sq = y * y
    expected = 2 * np.asarray(_grad(lam))
    z = (sq.mean(axis=0) - expected) / (sq.std(axis=0, ddof=1) / math.sqrt(SPLIT_DRAWS))
    assert np.all(np.abs(z) <= MC_SIGMAS), (np.argmax(np.abs(z)), z.max(), z.min())
    lo = stats.chi2.ppf(CHI2_TAIL, n - 1)
    hi = stats.chi2.ppf(1 - CHI2_TAIL, n)
    assert lo <= np.sum(z * z) <= hi, np.mean(z * z)
    se_mean = y.std(axis=0, ddof=1) / math.sqrt(SPLIT_DRAWS)
    assert np.all(np.abs(y.mean(axis=0)) <= MC_SIGMAS * se_mean)
    log_z_mu = float(_logz(lam)) - 0.5 * n * lam.max()  # Z_N(λ − λ_top): the acceptance is Z_N(μ)·exp(log_norm)
    p = math.exp(log_z_mu + float(info.log_norm))
    proposals, accepted = int(info.proposals), int(info.accepted)
    assert abs(accepted / proposals - p) <= MC_SIGMAS * math.sqrt(p * (1 - p) / proposals), (accepted / proposals, p)
    np.testing.assert_allclose(p, float(_acceptance_method(lam, "split")), rtol=SAME_ACCEPTANCE_RTOL)


@pytest.mark.parametrize(("n", "case"), [
    (50, "two_spikes"),
    pytest.param(50, "paramagnetic", marks=pytest.mark.slow),
    pytest.param(300, "one_spike", marks=pytest.mark.slow),
])
def test_split_top_marginal_ks(goe, rng, n, case):
    """KS test of t = y_top²/N from the forced split sampler against the exact marginal CDF, obtained
    by cumulative Simpson quadrature of the density of s = √t on a uniform grid (log Z of the rest from
    log_partition; no sampler code involved), interpolated by a cubic Hermite spline."""
    lam = _split_spectra(goe, rng, n)[case]
    top = int(np.argmax(lam))
    s = np.linspace(0.0, 1.0, MARGINAL_GRID)
    log_f = _split_log_marginal(lam, s)
    dens = np.exp(log_f - log_f.max())
    cum = integrate.cumulative_simpson(dens, x=s, initial=0.0)
    cdf_s = CubicHermiteSpline(s, cum / cum[-1], dens / cum[-1])
    y, info = _sample_split_info(jax.random.PRNGKey(5), lam, SPLIT_DRAWS, sphere._proposal_batch(n), True)
    assert bool(info.split)
    t = np.asarray(y)[:, top] ** 2 / n
    result = stats.kstest(t, lambda x: cdf_s(np.sqrt(np.clip(x, 0.0, 1.0))))
    assert result.pvalue > KS_MIN_PVALUE, result


#: Predicted ACG acceptance with one condensed mode is ≈ 0.86/((1 − g)√N) (THEORY §2): 0.18 at N = 50, 0.04 at N = 1000.
SPLIT_ACG_CONDENSED_MAX = {50: 0.3, 1000: 0.1}


@pytest.mark.parametrize("n", [50, pytest.param(1000, marks=pytest.mark.slow)], ids=lambda n: f"N{n}")
def test_split_acceptance_and_auto_choice(goe, rng, n):
    """With one condensed mode the ACG accepts ∝ 1/√N and the split ≥ 95 %; in PM both ≈ 0.87 (within
    0.05); "auto" runs the split exactly when its predicted acceptance is the larger."""
    spectra = _split_spectra(goe, rng, n)
    for name in ("paramagnetic", "one_spike"):
        lam = spectra[name]
        env = _split_env(lam)
        log_z_mu = float(_logz(lam)) - 0.5 * n * lam.max()
        acg, split = math.exp(log_z_mu + float(env.log_norm_acg)), math.exp(log_z_mu + float(env.log_norm_split))
        assert abs(acg - float(_acceptance(lam))) <= ROUNDING_ATOL, name  # THEORY §2: Z e^{−S}
        assert 0 < acg <= 1 and 0 < split <= 1, (name, acg, split)
        # the round cap's proxy (Gaussian-corrected saddle) is within ROUND_LOG_MARGIN of the truth
        assert abs(float(env.log_z_approx) - log_z_mu) <= sphere.ROUND_LOG_MARGIN
        if name == "one_spike":
            assert acg < SPLIT_ACG_CONDENSED_MAX[n] and split >= SPLIT_MIN_CONDENSED_ACCEPTANCE, (acg, split)
        else:
            assert abs(split - acg) <= PM_SPLIT_ACG_ATOL, (acg, split)
        if n == 50:  # shares the compiled sampler of the moment tests
            _, info = _sample_split_info(jax.random.PRNGKey(1), lam, SPLIT_DRAWS, sphere._proposal_batch(n), False)
            assert bool(info.split) == (split > acg), name
            assert log_z_mu + float(info.log_norm) == pytest.approx(math.log(max(acg, split)), abs=ROUNDING_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("n", [3, 4, 9], ids=lambda n: f"N{n}")
def test_split_small_n_on_sphere(n):
    """Smallest dimensions of the split (N − 1 ≥ 2): every draw on the sphere, strongly condensed too."""
    for lam in (np.linspace(-1.0, 1.5, n), np.r_[np.zeros(n - 1), 25.0]):
        y, info = _sample_split_info(jax.random.PRNGKey(2), lam, 500, sphere._proposal_batch(n), True)
        y = np.asarray(y)
        assert bool(info.split) and not np.isnan(y).any()
        np.testing.assert_allclose(np.sum(y * y, axis=1) / n, 1.0, rtol=0, atol=SPHERE_NORM_RTOL)


@pytest.mark.timeout(60)
def test_nonfinite_eigenvalues_raise_or_nan_no_hang():
    """Concrete NaN/inf eigenvalues raise ValueError naming the argument (sample_eigen, log_partition,
    saddle_point); under jit both samplers stop at their round cap with NaN rows (no hang) and
    check_draws raises RuntimeError."""
    n = 50  # the compiled samplers of the N = 50 moment tests are reused
    bad = []
    for index, value in ((0, np.nan), (3, np.inf), (7, -np.inf)):
        lam = np.linspace(-1.0, 1.0, n)
        lam[index] = value
        bad.append(lam)
    for lam in bad:
        for fn in (sphere.log_partition, sphere.saddle_point, sphere.log_partition_and_gradient):
            with pytest.raises(ValueError, match="eigenvalues: must be finite"):
                fn(lam)
        for method in sphere.SAMPLER_METHODS:
            with pytest.raises(ValueError, match="eigenvalues: must be finite"):
                sphere.sample_eigen(jax.random.PRNGKey(0), lam, 4, method=method)
        batch = sphere._proposal_batch(n)
        for y, info in (_sample_split_info(jax.random.PRNGKey(0), lam, SPLIT_DRAWS, batch, False),
                        _sample_acg_info(jax.random.PRNGKey(0), lam, SPLIT_DRAWS, batch)):
            assert np.all(np.isnan(np.asarray(y))) and int(info.rounds) == 0
            with pytest.raises(RuntimeError, match=f"y: {SPLIT_DRAWS} of {SPLIT_DRAWS} draws could not be filled"):
                sphere.check_draws(y, "y")
        assert not np.isfinite(float(_logz(lam)))  # traced: no check, no hang
    good = np.array([0.7, -0.2, 0.1])
    filled = np.ones((3, 2))
    assert sphere.check_draws(filled) is filled
    with pytest.raises(RuntimeError, match="1 of 3 draws"):
        sphere.check_draws(np.array([[1.0, 1.0], [np.nan, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="method"):
        sphere.sample_eigen(jax.random.PRNGKey(0), good, 4, method="nope")
    with pytest.raises(ValueError, match="method"):
        sphere.sampler_acceptance(good, method="nope")
    two = good[:2]  # below SPLIT_MIN_DIMENSION: "split" refused, "auto" falls back to the plain ACG
    for call in (lambda: sphere.sample_eigen(jax.random.PRNGKey(0), two, 4, method="split"),
                 lambda: sphere.sampler_acceptance(two, method="split")):
        with pytest.raises(ValueError, match=f"split sampler needs N >= {sphere.SPLIT_MIN_DIMENSION}"):
            call()
    assert float(sphere.sampler_acceptance(two, method="auto")) == float(sphere.sampler_acceptance(two, method="acg"))


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

#: Invariances hold exactly in exact arithmetic; eigh of a rotated matrix perturbs λ by ~1e-15·|W|, log Z by N times that, plus quadrature ~1e-12.
INVARIANCE_RTOL = 1e-11

_PROPERTY_SETTINGS = settings(max_examples=25, deadline=None)
_dims = st.integers(min_value=2, max_value=6)
_seeds = st.integers(min_value=0, max_value=2**32 - 1)
_eigs = st.lists(st.floats(min_value=-20.0, max_value=20.0, allow_nan=False), min_size=2, max_size=6)


@_PROPERTY_SETTINGS
@given(n=_dims, seed=_seeds, scale=st.floats(min_value=0.0, max_value=5.0))
def test_property_rotation_invariance(n, seed, scale):
    rng = np.random.default_rng(seed)
    W = scale * _random_symmetric_direction(rng, n)
    Q = _haar_orthogonal(rng, n)
    a = float(_logz_matrix(W))
    b = float(_logz_matrix(Q @ W @ Q.T))
    assert abs(a - b) <= INVARIANCE_RTOL * max(_scale(a), n * scale)


@_PROPERTY_SETTINGS
@given(lam=_eigs, shift=st.floats(min_value=-10.0, max_value=10.0))
def test_property_shift(lam, shift):
    """W → W + sI adds Ns/2 to log Z (|x|² = N)."""
    lam = np.array(lam)
    n = lam.size
    a = float(_logz(lam))
    b = float(_logz(lam + shift))
    assert abs((b - a) - 0.5 * n * shift) <= INVARIANCE_RTOL * max(_scale(a), _scale(b))


@_PROPERTY_SETTINGS
@given(lam=_eigs, seed=_seeds)
def test_property_permutation(lam, seed):
    """log Z is symmetric in the eigenvalues; the gradient permutes with them."""
    lam = np.array(lam)
    perm = np.random.default_rng(seed).permutation(lam.size)
    a, ga = _logz_and_grad(lam)
    b, gb = _logz_and_grad(lam[perm])
    assert abs(float(a) - float(b)) <= INVARIANCE_RTOL * _scale(a)
    np.testing.assert_allclose(np.asarray(gb), np.asarray(ga)[perm], rtol=0, atol=INVARIANCE_RTOL * lam.size)


@_PROPERTY_SETTINGS
@given(lam=_eigs, index=st.integers(min_value=0, max_value=5))
def test_property_monotone(lam, index):
    """∂log Z/∂λ_i = ½E[y_i²] > 0, and raising one eigenvalue raises log Z."""
    lam = np.array(lam)
    i = index % lam.size
    g = np.asarray(_grad(lam))
    assert np.all(g > 0), g
    bumped = lam.copy()
    bumped[i] += 0.5
    assert float(_logz(bumped)) > float(_logz(lam))
