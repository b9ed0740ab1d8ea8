"""Tests of bayes_sbm.model: the tempered posterior's log density and sites."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from numpyro.infer.util import log_density, log_likelihood

import bayes_sbm  # noqa: F401  (float64)
from bayes_sbm import band, model, sphere, teacher
from bayes_sbm import data as data_mod

#: Log densities are sums of O(N²) float64 terms of size ≤ 1e3: agreement to 1e-9 is rounding.
LOG_DENSITY_ATOL = 1e-9
#: Two float64 evaluations of the same O(1) matrix quantity at N ≤ 7 (eigh, products, sums): rounding only.
MATRIX_ATOL = 1e-12


@pytest.fixture(scope="module")
def small_data():
    return teacher.teacher_student_data(jax.random.key(3), 5, 2, 2.5).data


def log_density_direct(W, data, gamma: float, eta: float) -> float:
    """Independent reference: ``log P_{γη}(W) + η Σ_a log p(x_a | W)`` in NumPy/SciPy.

    The GOE log-density is normalised over the N(N+1)/2 free entries:
    ``−γηN/4 tr W² + Σ log N(0, var)`` normalisers.
    """
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(data, dtype=np.float64)
    K, N = X.shape
    p = gamma * eta
    log_norm = 0.0
    for i in range(N):
        for j in range(i, N):
            var = (2.0 if i == j else 1.0) / (p * N)
            log_norm += -0.5 * math.log(2 * math.pi * var)
    prior = -p * N / 4.0 * float(np.trace(W @ W)) + log_norm
    log_z = float(sphere.log_partition(np.linalg.eigvalsh(W)))
    loglik = 0.5 * np.einsum("ai,ij,aj->a", X, W, X) - log_z
    return prior + eta * float(np.sum(loglik))


def _direct(z, site_param, data, gamma, eta, frame):
    """Map a latent vector to W with plain NumPy, then the direct formula plus the Jacobian."""
    N = data.shape[1]
    scales = model.goe_scales(N, gamma * eta)
    rows, cols = np.triu_indices(N)
    upper = z if site_param == "centred" else z * scales
    Wm = np.zeros((N, N))
    Wm[rows, cols] = upper
    Wm[cols, rows] = upper
    W = frame.Q @ Wm @ frame.Q.T if site_param == "aligned" else Wm
    jac = 0.0 if site_param == "centred" else float(np.sum(np.log(scales)))
    return log_density_direct(W, data, gamma, eta) + jac, W


@pytest.mark.parametrize("parametrization", model.DENSE_PARAMETRIZATIONS)
@pytest.mark.parametrize("gamma,eta", [(0.5, 3.0), (2.0, 0.7)], ids=["FMo-like", "PM-like"])
def test_log_density_matches_direct_formula(small_data, parametrization, gamma, eta):
    rng = np.random.default_rng(0)
    N = small_data.shape[1]
    frame = data_mod.data_frame(small_data)
    for _ in range(3):
        z = rng.normal(size=N * (N + 1) // 2)
        if parametrization == "centred":
            z = z * model.goe_scales(N, gamma * eta)
        kwargs = dict(data=small_data, gamma=gamma, eta=eta, parametrization=parametrization)
        ld, trace = log_density(model.sbm_posterior, (), kwargs, {model.latent_site(parametrization): z})
        expected, W = _direct(z, parametrization, small_data, gamma, eta, frame)
        assert abs(float(ld) - expected) < LOG_DENSITY_ATOL * max(1.0, abs(expected))
        np.testing.assert_allclose(np.asarray(trace["W"]["value"]), W, atol=MATRIX_ATOL)


def test_spectral_sites_match_numpy(small_data):
    rng = np.random.default_rng(1)
    N = small_data.shape[1]
    z = rng.normal(size=N * (N + 1) // 2)
    kwargs = dict(data=small_data, gamma=0.5, eta=3.0)
    _, trace = log_density(model.sbm_posterior, (), kwargs, {"z": z})
    W = np.asarray(trace["W"]["value"])
    lam, vec = np.linalg.eigh(W)
    spec = data_mod.data_spectrum(small_data)
    np.testing.assert_allclose(np.asarray(trace["lam_top"]["value"]), lam[::-1][: spec.c.size + 1], atol=MATRIX_ATOL)
    np.testing.assert_allclose(np.asarray(trace["u"]["value"]), (spec.e.T @ vec[:, -1]) ** 2, atol=MATRIX_ATOL)
    np.testing.assert_allclose(np.asarray(trace["signal"]["value"]), np.einsum("ik,ij,jk->k", spec.e, W, spec.e), atol=MATRIX_ATOL)
    # mu solves (1/N) Σ 1/(mu − λ_i) = 1 above the spectrum (THEORY.md §2)
    mu = float(trace["mu"]["value"])
    assert mu > lam[-1] and abs(np.mean(1.0 / (mu - lam)) - 1.0) < MATRIX_ATOL
    assert 0.0 < float(trace["M"]["value"]) < 1.0


def test_log_likelihood_is_untempered(small_data):
    """numpyro's log_likelihood ignores handlers.scale: per-point log p(x_a | W), whatever η."""
    N = small_data.shape[1]
    rng = np.random.default_rng(2)
    W_upper = rng.normal(size=N * (N + 1) // 2) * 0.3
    Wn = np.asarray(model.symmetric_from_upper(W_upper, N))
    expected = 0.5 * np.einsum("ai,ij,aj->a", small_data, Wn, small_data) - float(sphere.log_partition(np.linalg.eigvalsh(Wn)))
    for eta in (0.3, 2.5):
        ll = log_likelihood(model.sbm_posterior, {"W_upper": W_upper[None]}, data=small_data, gamma=1.0, eta=eta, parametrization="centred")["x"]
        np.testing.assert_allclose(np.asarray(ll)[0], expected, atol=LOG_DENSITY_ATOL)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(gamma=0.0, eta=1.0), "gamma"),
        (dict(gamma=-1.0, eta=1.0), "gamma"),
        (dict(gamma=1.0, eta=0.0), "eta"),
        (dict(gamma=1.0, eta=float("nan")), "eta"),
        (dict(gamma=1.0, eta=1.0, beta=-2.0), "beta"),
        (dict(gamma=1.0, eta=1.0, parametrization="weird"), "parametrization"),
    ],
    ids=["gamma0", "gamma_neg", "eta0", "eta_nan", "beta_neg", "bad_param"],
)
def test_bad_hyperparameters_rejected(small_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        log_density(model.sbm_posterior, (), dict(data=small_data) | kwargs, {"z": np.zeros(15), "W_upper": np.zeros(15)})


@pytest.mark.parametrize(
    "bad,match",
    [
        (2.0 * np.ones((2, 5)), "not on the sphere"),
        (np.full((2, 5), np.nan), "non-finite"),
        (np.ones(5), "2-D"),
    ],
    ids=["off_sphere", "nan", "1d"],
)
def test_bad_data_rejected_before_tracing(bad, match):
    with pytest.raises(ValueError, match=match):
        model.sbm_posterior(bad, 1.0, 1.0)


def test_symmetric_upper_round_trip():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(3, 21))
    W = np.asarray(model.symmetric_from_upper(v, 6))
    np.testing.assert_array_equal(W, np.swapaxes(W, -1, -2))
    np.testing.assert_array_equal(np.asarray(model.upper_from_symmetric(W)), v)


def test_goe_scales_give_goe_trace_moment():
    """E[tr W²] under the GOE of precision p is (N + 1)/p: check the scales against it."""
    N, p = 7, 2.5
    s = model.goe_scales(N, p)
    rows, cols = np.triu_indices(N)
    expected = (N + 1) / p
    got = float(np.sum(np.where(rows == cols, 1.0, 2.0) * s**2))
    assert abs(got - expected) < MATRIX_ATOL


@pytest.mark.parametrize("K", [1, 2], ids=["r1", "r2"])
def test_band_log_density_matches_independent_formula(K):
    """Band model (THEORY.md §8): latent density = GOE band prior + Jacobian + η·loglik, all computed apart."""
    small_data = teacher.teacher_student_data(jax.random.key(3), 5, K, 2.5).data
    gamma, eta = 0.5, 3.0
    c = gamma * eta
    N = small_data.shape[1]
    frame = data_mod.data_frame(small_data)
    m = model.band_width(frame.c.size, N)
    assert m == K  # one kept axis per data mode
    ng, nc = band.latent_size(N, m)
    assert model.latent_dim("band", N, frame.c.size) == ng + nc
    rng = np.random.default_rng(4)
    for _ in range(3):
        z = rng.normal(size=ng + nc)
        kwargs = dict(data=small_data, gamma=gamma, eta=eta, parametrization="band")
        ld, _ = log_density(model.sbm_posterior, (), kwargs, {"z": z})
        T = model.band_from_latent_vector(z, N, m, c)
        dense, lower = np.asarray(T.to_dense()), np.asarray(T.lower)
        s = 1.0 / math.sqrt(c * N)
        sd = np.concatenate([np.full(N, math.sqrt(2.0)), np.ones(ng - N)])  # band row 0 (diagonal), then rows 1 … m−1
        nu = np.arange(N - m, 0, -1.0)
        log_jac = np.sum(np.log(s * sd)) + np.sum(np.log(lower[m, m:] * np.sqrt(2.0 / nu) / 2.0))
        x = small_data @ frame.Q
        log_z = float(sphere.log_partition(np.linalg.eigvalsh(dense)))
        loglik = 0.5 * np.einsum("ai,ij,aj->a", x, dense, x) - log_z
        expected = float(band.goe_band_log_prior(T, c)) + log_jac + eta * float(np.sum(loglik))
        assert abs(float(ld) - expected) < LOG_DENSITY_ATOL * max(1.0, abs(expected))


@pytest.mark.parametrize(("requested", "N", "r", "expected"), [
    ("auto", 30, 2, "aligned"),
    ("auto", 100, 2, "band"),
    ("auto", 100, 30, "aligned"),
    ("band", 10, 2, "band"),
    ("centred", 500, 1, "centred"),
    # the edges: N ≥ BAND_MIN_N and N ≥ BAND_MIN_RATIO·(r + 1), both inclusive
    ("auto", model.BAND_MIN_N, 2, "band"),
    ("auto", model.BAND_MIN_N - 1, 2, "aligned"),
    ("auto", model.BAND_MIN_RATIO * 31, 30, "band"),
    ("auto", model.BAND_MIN_RATIO * 31 - 1, 30, "aligned"),
])
def test_auto_parametrization_rule(requested, N, r, expected):
    assert model.choose_parametrization(requested, N, r) == expected


@pytest.mark.parametrize(("parametrization", "N", "r", "expected"), [
    ("aligned", 5, 2, 15),
    ("centred", 5, 5, 15),
    ("band", 5, 2, 5 + 4 + 3),  # diagonal, first sub-diagonal (Gaussian), then the N − m χ entries
    ("band", 6, 1, 6 + 5),
])
def test_latent_dim(parametrization, N, r, expected):
    assert model.latent_dim(parametrization, N, r) == expected


def test_latent_dim_is_the_model_site_length(small_data):
    N, r = small_data.shape[1], data_mod.data_frame(small_data).c.size
    for parametrization in model.PARAMETRIZATIONS:
        dim = model.latent_dim(parametrization, N, r)
        ld, trace = log_density(model.sbm_posterior, (), dict(data=small_data, gamma=1.0, eta=1.0, parametrization=parametrization),
                                {model.latent_site(parametrization): np.zeros(dim)})
        assert trace[model.latent_site(parametrization)]["value"].shape == (dim,) and np.isfinite(float(ld)), parametrization


@pytest.mark.parametrize(("r", "N"), [(5, 5), (0, 5)])
def test_band_width_needs_data_modes_below_n(r, N):
    with pytest.raises(ValueError, match="parametrization: 'band' needs"):
        model.band_width(r, N)


def test_unknown_parametrization_is_named():
    with pytest.raises(ValueError, match="parametrization: must be one of"):
        model.choose_parametrization("bandd", 10, 2)
