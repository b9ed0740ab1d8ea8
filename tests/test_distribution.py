"""Tests of ``bayes_sbm.distribution.SphericalBoltzmann`` (THEORY.md §1–2).

log_prob is compared with β/2 xᵀWx − log Z(βW) computed from NumPy's
eigenvalues, KL divergences with Monte Carlo averages of log-ratios, and the
parameter checks with the error messages users see.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import numpyro.distributions as dist
import pytest

from bayes_sbm import sphere
from bayes_sbm.distribution import SPHERE_RTOL, SphericalBoltzmann

#: log Z is exact to ~1e-12 absolute (THEORY §2); the quadratic form adds rounding ~1e-15·N·|W|.
EXACT_ATOL = 1e-11
#: Monte Carlo checks: 5 standard errors of the mean (false alarm < 6e-7 per check under the CLT).
MC_SIGMAS = 5.0
#: |x|²/N − 1 of a normalised float64 vector rotated by an orthogonal V: a few ulps.
SAMPLE_NORM_RTOL = 1e-12
#: KL(p‖p) is a difference of two equal exact expressions: rounding only.
ROUNDING_ATOL = 1e-12

_logz = jax.jit(sphere.log_partition)


def _random_symmetric(rng, n, scale=1.0):
    a = rng.standard_normal((n, n))
    return scale * 0.5 * (a + a.T)


def _on_sphere(rng, shape):
    g = rng.standard_normal(shape)
    return g * np.sqrt(shape[-1] / np.sum(g * g, axis=-1, keepdims=True))


def _independent_log_prob(x, W, beta):
    """β/2 xᵀWx − log Z(βW) from NumPy's eigvalsh and the eigenvalue-level log Z."""
    lam = np.linalg.eigvalsh(beta * W)
    return 0.5 * beta * x @ W @ x - float(_logz(lam))


@pytest.mark.parametrize("beta", [1.0, 0.3, 2.5], ids=lambda b: f"beta{b}")
def test_log_prob_matches_independent(rng, beta):
    n = 5
    W = _random_symmetric(rng, n, 1.5)
    xs = _on_sphere(rng, (4, n))
    d = SphericalBoltzmann(W, beta)
    got = np.asarray(d.log_prob(xs))
    assert got.shape == (4,)
    for x, value in zip(xs, got):
        assert abs(value - _independent_log_prob(x, W, beta)) <= EXACT_ATOL
    # Z(0) = 1: the uniform distribution has log density 0
    assert np.allclose(np.asarray(SphericalBoltzmann(np.zeros((n, n))).log_prob(xs)), 0.0, atol=EXACT_ATOL)


def test_batching_over_W_and_beta(rng):
    """W batch (3,), β batch (2, 1) → batch (2, 3); log_prob broadcasts sample and batch shapes."""
    n = 4
    Ws = np.stack([_random_symmetric(rng, n) for _ in range(3)])
    betas = np.array([[0.5], [2.0]])
    d = SphericalBoltzmann(Ws, betas)
    assert d.batch_shape == (2, 3) and d.event_shape == (n,)
    assert d.log_normalizer.shape == (2, 3)
    x = _on_sphere(rng, (n,))
    lp = np.asarray(d.log_prob(x))
    assert lp.shape == (2, 3)
    for i, j in np.ndindex(2, 3):
        assert abs(lp[i, j] - _independent_log_prob(x, Ws[j], betas[i, 0])) <= EXACT_ATOL
    xs = _on_sphere(rng, (7, 1, 1, n))
    assert d.log_prob(xs).shape == (7, 2, 3)


def test_support(rng):
    n = 6
    d = SphericalBoltzmann(_random_symmetric(rng, n))
    x = _on_sphere(rng, (3, n))
    assert np.all(np.asarray(d.support(x)))
    assert not np.any(np.asarray(d.support(x * (1 + 10 * SPHERE_RTOL))))
    assert not np.any(np.asarray(d.support(np.zeros((2, n)))))


@pytest.mark.parametrize("sample_shape", [(), (3,), (2, 3)], ids=lambda s: f"shape{s}")
def test_sample_shapes_with_batch(rng, sample_shape):
    n = 5
    Ws = np.stack([_random_symmetric(rng, n) for _ in range(2)])
    d = SphericalBoltzmann(Ws)
    x = np.asarray(d.sample(jax.random.PRNGKey(0), sample_shape))
    assert x.shape == sample_shape + (2, n)
    # the library's own "on the sphere" tolerance; the 1e-12 check is test_batched_samples_exactly_on_sphere
    assert np.all(np.asarray(d.support(x)))


def test_batched_samples_exactly_on_sphere(rng):
    """Draws of a batched SphericalBoltzmann lie on |x|² = N to float64 rounding (THEORY §1)."""
    n = 5
    Ws = np.stack([_random_symmetric(rng, n) for _ in range(2)])
    x = np.asarray(SphericalBoltzmann(Ws).sample(jax.random.PRNGKey(0), (500,)))
    np.testing.assert_allclose(np.sum(x * x, axis=-1) / n, 1.0, rtol=0, atol=SAMPLE_NORM_RTOL)


def test_batched_samples_follow_their_own_couplings():
    """Batch element b must be sampled from W[b]: E[x_i²] per element vs 2∂log Z/∂W_ii (CLT bound)."""
    n, draws = 4, 20_000
    Ws = np.zeros((2, n, n))
    Ws[0, 0, 0] = 4.0  # mass on coordinate 0
    Ws[1, 3, 3] = 4.0  # mass on coordinate 3
    d = SphericalBoltzmann(Ws)
    x = np.asarray(d.sample(jax.random.PRNGKey(5), (draws,)))
    sq = x * x
    expected = np.asarray(d.variance)
    se = sq.std(axis=0, ddof=1) / math.sqrt(draws)
    assert np.all(np.abs(sq.mean(axis=0) - expected) <= MC_SIGMAS * se)
    assert expected[0, 0] > 2 and expected[1, 3] > 2  # the two elements are really different


def test_entropy_is_minus_kl_to_uniform(rng):
    n = 5
    for scale in (0.0, 0.5, 3.0):
        p = SphericalBoltzmann(_random_symmetric(rng, n, scale))
        uniform = SphericalBoltzmann(np.zeros((n, n)))
        h = float(p.entropy())
        assert h <= ROUNDING_ATOL
        assert abs(h + float(dist.kl_divergence(p, uniform))) <= ROUNDING_ATOL * 10


def test_kl_divergence_properties(rng):
    n = 5
    for _ in range(4):
        p = SphericalBoltzmann(_random_symmetric(rng, n, 1.5), rng.uniform(0.5, 2.0))
        q = SphericalBoltzmann(_random_symmetric(rng, n, 1.5), rng.uniform(0.5, 2.0))
        assert abs(float(dist.kl_divergence(p, p))) <= ROUNDING_ATOL * 10
        assert float(dist.kl_divergence(p, q)) >= 0.0
        assert float(dist.kl_divergence(q, p)) >= 0.0


def test_kl_divergence_against_monte_carlo(rng):
    """KL(p‖q) = E_p[log p − log q]: mean over exact samples of p, within 5 standard errors."""
    n, draws = 5, 100_000
    p = SphericalBoltzmann(_random_symmetric(rng, n, 1.0), 1.5)
    q = SphericalBoltzmann(_random_symmetric(rng, n, 1.0))
    x = p.sample(jax.random.PRNGKey(2), (draws,))
    ratio = np.asarray(p.log_prob(x) - q.log_prob(x))
    kl = float(dist.kl_divergence(p, q))
    assert abs(ratio.mean() - kl) <= MC_SIGMAS * ratio.std(ddof=1) / math.sqrt(draws), (ratio.mean(), kl)
    # entropy (= −KL to uniform) the same way: E_p[log p]
    lp = np.asarray(p.log_prob(x))
    assert abs(-lp.mean() - float(p.entropy())) <= MC_SIGMAS * lp.std(ddof=1) / math.sqrt(draws)


def test_kl_dimension_mismatch():
    with pytest.raises(ValueError, match="q"):
        dist.kl_divergence(SphericalBoltzmann(np.zeros((3, 3))), SphericalBoltzmann(np.zeros((4, 4))))


def _nonsymmetric():
    w = np.zeros((3, 3))
    w[0, 1] = 1.0
    return w


def _nan_w():
    w = np.zeros((3, 3))
    w[1, 2] = w[2, 1] = np.nan
    return w


BAD_PARAMETERS = {
    "nonsymmetric_W": (_nonsymmetric(), 1.0, "W"),
    "nan_W": (_nan_w(), 1.0, "W"),
    "inf_W": (np.diag([np.inf, 0.0, 0.0]), 1.0, "W"),
    "vector_W": (np.zeros(3), 1.0, "W"),
    "rectangular_W": (np.zeros((3, 4)), 1.0, "W"),
    "N1_W": (np.zeros((1, 1)), 1.0, "W"),
    "zero_beta": (np.eye(3), 0.0, "beta"),
    "negative_beta": (np.eye(3), -1.0, "beta"),
    "nan_beta": (np.eye(3), np.nan, "beta"),
    "batched_negative_beta": (np.eye(3), np.array([1.0, -0.5]), "beta"),
}


@pytest.mark.parametrize("W,beta,name", list(BAD_PARAMETERS.values()), ids=list(BAD_PARAMETERS))
def test_bad_parameters_raise(W, beta, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        SphericalBoltzmann(W, beta)

