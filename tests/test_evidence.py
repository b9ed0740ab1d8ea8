"""Tests of bayes_sbm.evidence against an exact small-N evidence (THEORY.md §3)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy.special import i0e, logsumexp

import bayes_sbm  # noqa: F401  (float64)
from bayes_sbm.settings import LadderSettings, SviSettings
from bayes_sbm import evidence, inference, teacher

#: Estimates and exact values agree within this many reported standard errors (4σ: false alarm 6e-5).
Z_SIGMAS = 4.0
#: Gauss–Hermite nodes per coupling entry for N = 2 (the integrand is entire; 80 nodes converge to ~1e-12).
GH_NODES = 80
#: Prior Monte Carlo draws for the N = 3 reference (SE ≈ 1e-3 at these settings).
PRIOR_DRAWS_N3 = 1_000_000
#: Gauss–Hermite at 60 vs 100 nodes, and the contour log Z vs the Bessel closed form at N = 2: O(10) numbers
#: agreeing to float64 rounding amplified by a few hundred terms.
QUADRATURE_ATOL = 1e-10
#: Log-mean-exp of identical weights: exact up to one rounding of an O(1) number.
EXACT_ATOL = 1e-14
#: The SE from the weights' ESS, √(1/ESS − 1/n), vs sd(w)/(√n·mean(w)) computed directly: rounding only.
SE_IDENTITY_RTOL = 1e-9


def _log_z_n2(l1, l2):
    """N = 2: x = √2(cos θ, sin θ) so Z = e^{(λ1+λ2)/2} I_0((λ1−λ2)/2) (uniform θ), independent of the contour code."""
    d = 0.5 * np.abs(l1 - l2)
    return 0.5 * (l1 + l2) + np.log(i0e(d)) + d


def exact_log_evidence_n2(data, gamma, eta, nodes=GH_NODES):
    """Y = E_{GOE(γη)}[Π_a p(x_a|W)^η] by a 3-D Gauss–Hermite product rule over (W11, W22, W12)."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(−t²/2)
    logw = np.log(w) - 0.5 * math.log(2 * math.pi)
    p = gamma * eta
    N = 2
    sd_diag, sd_off = math.sqrt(2.0 / (p * N)), math.sqrt(1.0 / (p * N))
    a, b, c = np.meshgrid(t * sd_diag, t * sd_diag, t * sd_off, indexing="ij")
    lw = logw[:, None, None] + logw[None, :, None] + logw[None, None, :]
    tr = 0.5 * (a + b)
    disc = np.sqrt(0.25 * (a - b) ** 2 + c**2)
    log_z = _log_z_n2(tr + disc, tr - disc)
    x = np.asarray(data)
    quad = 0.5 * (a[..., None] * x[:, 0] ** 2 + b[..., None] * x[:, 1] ** 2 + 2 * c[..., None] * x[:, 0] * x[:, 1])
    ell = quad.sum(-1) - x.shape[0] * log_z
    return float(logsumexp(lw + eta * ell))


CASES = [
    pytest.param(2, 1.0, 1.0, id="N2-g1-e1"),
    pytest.param(2, 0.5, 2.0, id="N2-g0.5-e2", marks=pytest.mark.slow),
    pytest.param(3, 1.0, 1.0, id="N3-g1-e1", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def exact_values():
    out = {}
    for N, gamma, eta in [(2, 1.0, 1.0), (2, 0.5, 2.0), (3, 1.0, 1.0)]:
        data = teacher.teacher_student_data(jax.random.key(N), N, 2, 2.5).data
        problem = inference.make_problem(data, gamma, eta)
        if N == 2:
            value, se = exact_log_evidence_n2(data, gamma, eta), 0.0
        else:
            est = evidence.prior_monte_carlo(jax.random.key(99), problem, PRIOR_DRAWS_N3)
            value, se = est.log_evidence, est.se
        out[(N, gamma, eta)] = (problem, value, se)
    return out


def test_gauss_hermite_reference_is_converged():
    data = teacher.teacher_student_data(jax.random.key(2), 2, 2, 2.5).data
    assert abs(exact_log_evidence_n2(data, 1.0, 1.0, 60) - exact_log_evidence_n2(data, 1.0, 1.0, 100)) < QUADRATURE_ATOL


@pytest.mark.parametrize("gamma,eta", [(1.0, 1.0), (0.5, 2.0)])
def test_prior_monte_carlo_matches_quadrature(exact_values, gamma, eta):
    problem, exact, _ = exact_values[(2, gamma, eta)]
    est = evidence.prior_monte_carlo(jax.random.key(5), problem, 400_000)
    assert abs(est.log_evidence - exact) < Z_SIGMAS * est.se, (est.log_evidence, est.se, exact)
    assert est.per_n == pytest.approx(est.log_evidence / 2)


@pytest.mark.parametrize("N,gamma,eta", CASES)
def test_thermodynamic_integration_and_stepping_stone(exact_values, N, gamma, eta):
    problem, exact, exact_se = exact_values[(N, gamma, eta)]
    settings = LadderSettings(num_rungs=6, max_rungs=8, num_samples=600, num_warmup=100, first_warmup=250, prior_draws=20000)
    res = evidence.thermodynamic_integration(jax.random.key(7), problem, settings)
    ti, ss = res.ti, res.stepping_stone
    # TI: statistical error plus the quadrature error it reports
    assert abs(ti.log_evidence - exact) < Z_SIGMAS * math.hypot(ti.se, exact_se) + ti.info["quadrature_correction"], (ti, exact)
    assert abs(ss.log_evidence - exact) < Z_SIGMAS * math.hypot(ss.se, exact_se), (ss, exact)
    # TI and stepping stone agree with each other (same draws, different estimators)
    assert abs(ti.log_evidence - ss.log_evidence) < Z_SIGMAS * math.hypot(ti.se, ss.se) + ti.info["quadrature_correction"]
    ladder = ti.info["ladder"]
    assert ladder[0] == 0.0 and ladder[-1] == pytest.approx(eta) and np.all(np.diff(ladder) > 0)


@pytest.mark.parametrize("N,gamma,eta,guide", [
    pytest.param(2, 1.0, 1.0, "normal", id="N2-normal"),
    pytest.param(3, 1.0, 1.0, "structured", id="N3-structured", marks=pytest.mark.slow),
])
def test_svi_estimators(exact_values, N, gamma, eta, guide):
    problem, exact, exact_se = exact_values[(N, gamma, eta)]
    fit = inference.run_svi(jax.random.key(1), problem, SviSettings(guide=guide, num_steps=2500, num_draws=10, progress_bar=False))
    est = evidence.svi_evidence(jax.random.key(2), fit, num_draws=8000)
    imp, elbo, iwae = est["importance"], est["elbo"], est["iwae"]
    assert imp.info["ess"] > 1000, "guide too far from the posterior for a meaningful check"
    assert abs(imp.log_evidence - exact) < Z_SIGMAS * math.hypot(imp.se, exact_se), (imp, exact)
    # bounds: ELBO ≤ IWAE ≤ log Y (up to Monte Carlo error)
    assert elbo.log_evidence < exact + Z_SIGMAS * math.hypot(elbo.se, exact_se)
    assert iwae.log_evidence < exact + Z_SIGMAS * math.hypot(iwae.se, exact_se)
    assert elbo.log_evidence <= iwae.log_evidence + Z_SIGMAS * math.hypot(elbo.se, iwae.se)


def test_importance_with_perfect_proposal_is_exact():
    """Constant log-weights (q ∝ posterior) give log Y exactly, with zero standard error."""
    lw = np.full(1000, -3.25)
    est = evidence._log_mean_exp_estimate(lw, N=5)
    assert est.log_evidence == pytest.approx(-3.25, abs=EXACT_ATOL)
    assert est.se == pytest.approx(0.0, abs=EXACT_ATOL) and est.info["ess"] == pytest.approx(1000)


def test_importance_se_is_the_delta_method_formula():
    """The SE of the log-mean-exp is sd(w)/(√n·mean(w)) (population sd), here by direct computation."""
    lw = 3.0 * np.random.default_rng(0).standard_normal(5000) - 40.0
    est = evidence._log_mean_exp_estimate(lw, N=5)
    w = np.exp(lw - lw.max())
    assert est.se == pytest.approx(np.std(w) / (math.sqrt(w.size) * np.mean(w)), rel=SE_IDENTITY_RTOL)
    assert est.log_evidence == pytest.approx(float(logsumexp(lw)) - math.log(lw.size), abs=EXACT_ATOL * abs(lw).max())
    assert est.info["ess"] == pytest.approx(np.sum(w) ** 2 / np.sum(w**2), rel=SE_IDENTITY_RTOL)


def test_log_likelihood_of_couplings_matches_closed_form_n2():
    rng = np.random.default_rng(0)
    data = teacher.teacher_student_data(jax.random.key(4), 2, 3, 2.5).data
    for _ in range(5):
        a, b, c = rng.normal(size=3)
        W = np.array([[a, c], [c, b]])
        l1, l2 = np.linalg.eigvalsh(W)[::-1]
        expected = 0.5 * np.einsum("ai,ij,aj->", data, W, data) - 3 * _log_z_n2(l1, l2)
        assert abs(float(evidence.log_likelihood_of_couplings(data, W)) - expected) < QUADRATURE_ATOL


@pytest.mark.slow  # the band prior sampler's law is checked entry by entry against the dense GOE in test_band (fast)
def test_band_prior_loglik_has_the_dense_law():
    """ℓ under the GOE prior: band draws (THEORY.md §8 law) vs dense GOE draws, two-sample on mean and variance."""
    data = teacher.teacher_student_data(jax.random.key(2), 8, 2, 2.5).data
    out = {}
    for i, par in enumerate(("band", "aligned")):
        problem = inference.make_problem(data, 0.5, 3.0, parametrization=par)
        out[par] = evidence._prior_loglik(jax.random.key(30 + i), problem, 8192, chunk=4096)
    a, b = out["band"], out["aligned"]
    se = math.hypot(a.std() / math.sqrt(a.size), b.std() / math.sqrt(b.size))
    assert abs(a.mean() - b.mean()) < Z_SIGMAS * se
    # variance: the sample variances' SEs from the fourth moments
    se_var = math.hypot(np.sqrt(np.var((a - a.mean()) ** 2) / a.size), np.sqrt(np.var((b - b.mean()) ** 2) / b.size))
    assert abs(a.var() - b.var()) < Z_SIGMAS * se_var
