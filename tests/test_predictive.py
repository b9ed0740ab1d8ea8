"""Tests of bayes_sbm.predictive, each against an independent computation.

References used: the registered exact ``kl_divergence`` of two SBMs; plain
Monte Carlo over exact samples (``sphere.sample_eigen`` in the eigenbasis);
direct ``½βxᵀWx − log Z(βW)`` of single SBMs; quadrature on the circle
(N = 2, with its own partition function); brute-force prior Monte Carlo of
the evidence ratio (THEORY.md §3) against NUTS posterior draws.  Reference
computations are jitted once per shape (eager JAX would recompile each op).
"""

from __future__ import annotations

import json
import math
import shutil
from functools import partial

import arviz as az
import jax
import numpy as np
import pytest
from scipy.special import logsumexp

import bayes_sbm  # noqa: F401  (float64)
from bayes_sbm.settings import NutsSettings
from bayes_sbm import band, evidence, inference, predictive, reports, runs, specs, sphere, teacher
from bayes_sbm.cli import main
from bayes_sbm.distribution import SphericalBoltzmann, kl_divergence
from bayes_sbm.io import run_metadata, save_npy_atomic, write_json_atomic

#: Two independent Monte Carlo estimates agree within this many standard errors (4σ: false alarm 6e-5 per check).
Z_SIGMAS = 4.0
#: Max |z| over the 10 entries of a 4×4 second moment (Bonferroni: 4.5σ over 10 entries ≈ 7e-5 false alarms).
Z_SIGMAS_ENTRIES = 4.5
#: Exact identities (KL of a distribution with itself, S identical draws): float64 rounding of O(N) sums.
EXACT_ATOL_PER_N = 1e-11
#: A KL may come out below zero only by rounding of two O(N) numbers.
NONNEG_ATOL_PER_N = 1e-11
#: typical_kls vs the registered kl_divergence: two float64 evaluations of the same exact formula.
SAME_FORMULA_RTOL = 1e-9
#: |x|² = N for exact draws: the sampler normalises each draw in float64.
SPHERE_RTOL = 1e-12
#: The delta-method bias neglects O(1/S²) terms (≈ skewness·√(relative variance)/S of the O(1/S) term): ≲ 15 % at S = 20.
DELTA_METHOD_REL = 0.15
#: Trapezoid nodes on the circle (periodic analytic integrand: error ~ e^{-#nodes}, far below 1e-12).
CIRCLE_NODES = 4096
#: S identical draws: equal weights give ESS_w = S and a zero bias up to the rounding of S O(1) terms.
EQUAL_WEIGHTS_TOL = 1e-12
#: Band route vs dense eigh route of the same exact KL (teacher inside the kept block: no Haar average):
#: the band log Z (contour quadrature, ≤ 1e-12 relative) against the eigenvalue route, O(N) sums.
BAND_VS_DENSE_ATOL_PER_N = 1e-9
#: Haar rotations averaged by Monte Carlo for the Rao–Blackwellised band KLs (CLT: SE ≈ sd/√HAAR_DRAWS).
HAAR_DRAWS = 3000


_log_z = jax.jit(sphere.log_partition)
_sample_eigen = jax.jit(sphere.sample_eigen, static_argnames=("num_samples",))
_second_moment = jax.jit(lambda W, beta: SphericalBoltzmann(W, beta).second_moment)
_kl = jax.jit(lambda A, a, B, b: kl_divergence(SphericalBoltzmann(A, a), SphericalBoltzmann(B, b)))


def _log_prob(W, beta, x):
    """``½β xᵀWx − log Z(βW)`` for points x (..., N) and draws W (..., N, N) broadcast against each other."""
    W = np.asarray(W)
    log_z = np.asarray(_log_z(np.linalg.eigvalsh(beta * W)))
    return 0.5 * beta * np.einsum("...i,...ij,...j->...", x, W, x) - log_z


def _sample(key, W, beta, num):
    lam, V = np.linalg.eigh(beta * np.asarray(W))
    return np.asarray(_sample_eigen(key, lam, num_samples=num)) @ V.T


def _sym(rng, n, scale):
    a = rng.normal(size=(n, n)) * scale
    return (a + a.T) / 2.0


def _spike(rng, n, omega):
    v = rng.normal(size=n)
    v /= np.linalg.norm(v)
    return omega * np.outer(v, v)


def _sphere_points(rng, m, n):
    x = rng.normal(size=(m, n))
    return x * (math.sqrt(n) / np.linalg.norm(x, axis=1, keepdims=True))


# (N, teacher spike ω, student noise scale, β): paramagnetic, condensed, spin-glass-like students
KL_CASES = [
    (3, 2.5, 0.5, 1.0),
    (10, 2.0, 1.0, 1.7),
    (40, 4.0, 0.15, 0.6),
]


@pytest.mark.parametrize("n, omega, noise, beta", KL_CASES)
def test_kl_of_distribution_with_itself_is_zero(rng, n, omega, noise, beta):
    W = _spike(rng, n, omega) + _sym(rng, n, noise / math.sqrt(n))
    res = predictive.typical_kls(W[None], W, beta, teacher_beta=beta)
    assert abs(res.forward[0]) <= EXACT_ATOL_PER_N * n
    assert abs(res.reverse[0]) <= EXACT_ATOL_PER_N * n


@pytest.mark.parametrize("n, omega, noise, beta", KL_CASES)
def test_typical_kls_nonnegative_and_match_registered_kl(rng, n, omega, noise, beta):
    Wt = _spike(rng, n, omega)
    Ws = np.stack([Wt * rng.uniform(0.2, 1.5) + _sym(rng, n, noise / math.sqrt(n)) for _ in range(6)])
    res = predictive.typical_kls(Ws, Wt, beta)  # S = 6 is padded to a chunk of 8
    assert res.forward.shape == (6,) and res.reverse.shape == (6,)
    assert np.all(res.forward >= -NONNEG_ATOL_PER_N * n) and np.all(res.reverse >= -NONNEG_ATOL_PER_N * n)
    Wt_b = np.broadcast_to(Wt, Ws.shape)
    np.testing.assert_allclose(res.forward, np.asarray(_kl(Wt_b, 1.0, Ws, beta)), rtol=SAME_FORMULA_RTOL, atol=EXACT_ATOL_PER_N * n)
    np.testing.assert_allclose(res.reverse, np.asarray(_kl(Ws, beta, Wt_b, 1.0)), rtol=SAME_FORMULA_RTOL, atol=EXACT_ATOL_PER_N * n)
    assert res.forward_mean == pytest.approx(np.mean(res.forward))
    assert res.forward_se == pytest.approx(np.std(res.forward, ddof=1) / math.sqrt(6))
    assert res.reverse_per_n == pytest.approx(np.mean(res.reverse) / n)


@pytest.mark.parametrize("n, omega, noise, beta", KL_CASES)
def test_typical_kl_matches_monte_carlo_over_exact_samples(rng, n, omega, noise, beta):
    num = 4000
    Wt = _spike(rng, n, omega)
    W = 0.7 * Wt + _sym(rng, n, noise / math.sqrt(n))
    res = predictive.typical_kls(W[None], Wt, beta)
    p, q = (Wt, 1.0), (W, beta)
    for exact, source, other, key in ((res.forward[0], p, q, 1), (res.reverse[0], q, p, 2)):
        x = _sample(jax.random.key(key + 10 * n), *source, num)
        v = _log_prob(*source, x) - _log_prob(*other, x)
        assert abs(np.mean(v) - exact) <= Z_SIGMAS * np.std(v) / math.sqrt(num)


def _band_case(rng, n, m, num, shift):
    """``num`` band draws (GOE band with a shifted kept block: condensed students), a random frame Q."""
    T = band.sample_goe_band(jax.random.key(n + m), n, m, 2.0, sample_shape=(num,))
    lower = np.asarray(T.lower).copy()
    lower[:, 0, :m] += shift
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return band.Band(lower), Q


def _rotated(T_dense, Q, H, m):
    """``Q diag(I_m, H) T diag(I_m, H)ᵀ Qᵀ`` for Haar draws H (h, n−m, n−m) → (h, n, n), by plain dense products."""
    n = T_dense.shape[-1]
    P = np.zeros((H.shape[0], n, n))
    P[:, :m, :m] = np.eye(m)
    P[:, m:, m:] = H
    return Q @ P @ T_dense @ np.swapaxes(P, 1, 2) @ Q.T


# (N, bandwidth m, kept-block shift, β): paramagnetic and condensed students, β ≠ 1
BAND_KL_CASES = [
    (9, 2, (0.0, 0.0), 1.0),
    (9, 2, (3.0, 1.0), 1.7),
    (12, 3, (2.5, 0.5, 0.0), 0.8),
]


@pytest.mark.parametrize("n, m, shift, beta", BAND_KL_CASES)
def test_band_typical_kls_equal_dense_when_the_teacher_lies_in_the_kept_block(rng, n, m, shift, beta):
    T, Q = _band_case(rng, n, m, 3, np.asarray(shift))
    Wt = np.asarray(teacher.planted_teacher(jax.random.key(7), n, 2.5, directions=Q[:, :1]).W)  # E_H changes nothing
    res = predictive.typical_kls_band(T, Q, Wt, beta)
    H = np.stack([np.linalg.qr(rng.normal(size=(n - m, n - m)))[0] for _ in range(3)])  # any rotation: one per draw
    W = np.concatenate([_rotated(np.asarray(T.to_dense())[s], Q, H[s : s + 1], m) for s in range(3)])
    dense = predictive.typical_kls(W, Wt, beta)
    np.testing.assert_allclose(res.forward, dense.forward, rtol=0, atol=BAND_VS_DENSE_ATOL_PER_N * n)
    np.testing.assert_allclose(res.reverse, dense.reverse, rtol=0, atol=BAND_VS_DENSE_ATOL_PER_N * n)


@pytest.mark.parametrize("n, m, shift, beta", BAND_KL_CASES)
def test_band_typical_kls_are_the_haar_average_of_the_dense_kls(rng, n, m, shift, beta):
    from scipy.stats import ortho_group

    T, Q = _band_case(rng, n, m, 1, np.asarray(shift))
    Wt = _spike(rng, n, 2.5)  # a generic teacher direction: the Haar block matters
    res = predictive.typical_kls_band(T, Q, Wt, beta)
    H = ortho_group.rvs(n - m, size=HAAR_DRAWS, random_state=int(rng.integers(1 << 30)))
    dense = predictive.typical_kls(_rotated(np.asarray(T.to_dense())[0], Q, H, m), Wt, beta)
    assert abs(res.forward[0] - dense.forward_mean) <= Z_SIGMAS * dense.forward_se
    assert abs(res.reverse[0] - dense.reverse_mean) <= Z_SIGMAS * dense.reverse_se
    assert dense.forward_se > 0 and dense.reverse_se > 0  # the rotations did change the per-draw KLs


def test_band_typical_kls_shapes_and_errors(rng):
    T, Q = _band_case(rng, 9, 2, 6, np.zeros(2))
    Wt = _spike(rng, 9, 2.5)
    lower = np.asarray(T.lower).reshape((2, 3) + T.lower.shape[-2:])
    res = predictive.typical_kls_band(band.Band(lower), Q[:, :4], Wt, 1.3, ess="auto", chunk=4)
    flat = predictive.typical_kls_band(T, Q, Wt, 1.3)
    assert res.forward.shape == (2, 3) and res.N == 9 and res.beta == 1.3
    prepared = predictive.band_teacher(Q, Wt, 2)  # the teacher once, reused over β: the same numbers
    for b in (0.7, 1.3):
        again = predictive.typical_kls_band_at(T, prepared, b)
        np.testing.assert_array_equal(again.forward, predictive.typical_kls_band(T, Q, Wt, b).forward)
    np.testing.assert_allclose(res.forward.ravel(), flat.forward, rtol=0, atol=EXACT_ATOL_PER_N * 9)
    for kwargs, match in (({"frame": Q[:5]}, "frame"), ({"frame": 2 * Q}, "frame"), ({"teacher_W": Wt[:3]}, "teacher_W"),
                          ({"beta": 0.0}, "beta")):
        args = {"T": T, "frame": Q, "teacher_W": Wt} | kwargs
        with pytest.raises(ValueError, match=match):
            predictive.typical_kls_band(**args)


def test_predictive_log_density_of_identical_draws_is_the_single_sbm(rng):
    n, beta = 10, 1.4
    W = _spike(rng, n, 3.0) + _sym(rng, n, 0.3 / math.sqrt(n))
    x = _sphere_points(rng, 9, n)
    got = predictive.predictive_log_density(x, np.broadcast_to(W, (5, n, n)), beta, chunk=2)
    want = _log_prob(W, beta, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT_ATOL_PER_N * n)
    stats = predictive.predictive_log_density_with_bias(x, np.broadcast_to(W, (5, n, n)), beta)
    np.testing.assert_allclose(stats.weight_ess, 5.0, rtol=EQUAL_WEIGHTS_TOL)  # equal weights: ESS = S, bias 0
    np.testing.assert_allclose(stats.bias, 0.0, atol=EQUAL_WEIGHTS_TOL)


@pytest.mark.parametrize("point_chunk", [predictive.POINT_CHUNK, 4], ids=["one-point-block", "padded-point-blocks"])
def test_predictive_log_density_is_log_mean_of_densities(rng, monkeypatch, point_chunk):
    monkeypatch.setattr(predictive, "POINT_CHUNK", point_chunk)  # 4: 11 points in 3 blocks, the last one padded
    n, beta = 10, 0.8
    Ws = np.stack([_spike(rng, n, 2.0 + s) + _sym(rng, n, 0.4 / math.sqrt(n)) for s in range(7)])
    x = _sphere_points(rng, 11, n)
    lp = _log_prob(Ws, beta, x[:, None, :])  # (M, S)
    got = predictive.predictive_log_density_with_bias(x, Ws.reshape(7, n, n), beta, chunk=3)
    np.testing.assert_allclose(got.log_density, logsumexp(lp, axis=1) - math.log(7), rtol=0, atol=EXACT_ATOL_PER_N * n)
    # weight ESS = (Σw)²/Σw² per point, from the same streamed sums
    w = np.exp(lp - lp.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got.weight_ess, w.sum(1) ** 2 / (w**2).sum(1), rtol=SAME_FORMULA_RTOL)


def test_predictive_draws_lie_on_sphere_with_mixture_second_moment(rng):
    n, beta, num = 4, 1.5, 2000
    Ws = np.stack([_spike(rng, n, 2.5) + _sym(rng, n, 0.5) for _ in range(4)])
    x = predictive.sample_predictive(jax.random.key(3), Ws, beta, num)
    assert x.shape == (num, n)
    np.testing.assert_allclose(np.sum(x * x, axis=1), n, rtol=SPHERE_RTOL)
    want = np.mean(np.asarray(_second_moment(Ws, beta)), axis=0)
    outer = x[:, :, None] * x[:, None, :]
    iu = np.triu_indices(n)
    z = (np.mean(outer, axis=0) - want)[iu] / (np.std(outer, axis=0)[iu] / math.sqrt(num))
    z = np.where(np.std(outer, axis=0)[iu] == 0, 0.0, z)  # diagonal sum is exact; entries themselves vary
    assert np.max(np.abs(z)) <= Z_SIGMAS_ENTRIES


def test_log_mean_exp_bias_matches_repeated_subsets(rng):
    """Delta-method Jensen bias vs the mean error of log-mean-exp over many disjoint subsets of i.i.d. draws.

    The pool is the population; subsets partition it, so the first-order error δ = mean_sub(w)/P − 1
    averages to exactly 0 and serves as a control variate for the standard error of the mean error.
    """
    n, subset, groups = 3, 20, 500
    pool = np.stack([_sym(rng, n, 0.9) for _ in range(subset * groups)])
    x = _sphere_points(rng, 3, n)
    lp = _log_prob(pool, 1.0, x[:, None, :])  # (M, S)
    truth = logsumexp(lp, axis=1) - math.log(lp.shape[1])
    sub = lp.reshape(3, groups, subset)
    err = logsumexp(sub, axis=2) - math.log(subset) - truth[:, None]
    observed, se = err.mean(axis=1), (err - np.expm1(err)).std(axis=1) / math.sqrt(groups)
    pred = predictive.predictive_log_density_with_bias(x, pool, 1.0, effective_draws=subset).bias
    assert np.all(pred < 0)
    assert np.all(np.abs(observed - pred) <= Z_SIGMAS * se + DELTA_METHOD_REL * np.abs(pred))
    assert predictive.log_mean_exp_bias(x, pool, effective_draws=subset) == pytest.approx(-np.mean(pred))


def _circle(n_nodes=CIRCLE_NODES):
    theta = 2 * np.pi * np.arange(n_nodes) / n_nodes
    return math.sqrt(2.0) * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _circle_log_density(W, beta, x):
    """log p(x | βW) on the circle of radius √2, normalised by trapezoid quadrature (independent of sphere.py)."""
    e = 0.5 * beta * np.einsum("mi,ij,mj->m", x, W, x)
    return e - logsumexp(e) + math.log(e.size)


def test_predictive_kls_mc_against_circle_quadrature(rng):
    """N = 2: the Monte Carlo KLs target exactly computable mixture KLs (forward: all draws; reverse: cross-fitted halves)."""
    n, beta, num = 2, 1.3, 3000
    Wt = _spike(rng, n, 3.0)
    Ws = np.stack([0.8 * Wt + _sym(rng, n, 0.8) for _ in range(6)])
    res = predictive.predictive_kls_mc(jax.random.key(0), Ws, Wt, beta, num)
    x = _circle()
    lt = _circle_log_density(Wt, 1.0, x)
    lw = np.stack([_circle_log_density(W, beta, x) for W in Ws])  # (S, nodes)
    mix = lambda rows: logsumexp(lw[rows], axis=0) - math.log(len(rows))  # noqa: E731
    mean = lambda logp, f: float(np.mean(np.exp(logp) * f))  # E over the circle's uniform measure  # noqa: E731
    fwd = mean(lt, lt - mix(range(6)))
    a, b = mix(range(3)), mix(range(3, 6))
    m_a = (num + 1) // 2
    rev = (m_a * mean(a, b - lt) + (num - m_a) * mean(b, a - lt)) / num
    assert abs(res.forward - fwd) <= Z_SIGMAS * res.forward_se
    assert abs(res.reverse - rev) <= Z_SIGMAS * res.reverse_se
    assert res.forward_bias >= 0 >= res.reverse_bias
    assert res.N == 2 and res.num_draws == 6 and res.num_points == num


#: Teacher seed of the tiny posterior's data (the run folder's spec regenerates the teacher from it).
TINY_DATA_SEED = 11


@pytest.fixture(scope="module")
def tiny_nuts():
    """NUTS on N = 3, K = 2, γ = η = 1 (2 chains × 1000 draws after 300 warm-up): the prior covers the posterior."""
    data = teacher.teacher_student_data(jax.random.key(TINY_DATA_SEED), 3, 2, 2.5).data
    problem = inference.make_problem(data, 1.0, 1.0)
    settings = NutsSettings(num_warmup=300, num_samples=1000, num_chains=2, progress_bar=False)
    return inference.run_nuts(jax.random.key(0), problem, settings)


@pytest.fixture(scope="module")
def tiny_posterior(tiny_nuts):
    problem = tiny_nuts.problem
    return problem.data, inference.coupling_draws(problem, tiny_nuts.samples[problem.latent_site])


def _nuts_log_mean_se(W, x):
    """SE of log mean_s p(x|W_s) from NUTS draws (chain, draw, N, N): sd/(mean·√ESS) of the densities."""
    f = np.exp(_log_prob(W, 1.0, x[:, None, None, :]))  # (M, chain, draw)
    return np.array([np.std(fm) / (np.mean(fm) * math.sqrt(float(az.ess(fm, method="mean")))) for fm in f])


def test_evidence_ratio_matches_nuts_predictive_density(rng, tiny_posterior):
    """P_pp(x) = E_prior[Π p(x_a|W)^η p(x|W)] / E_prior[Π p(x_a|W)^η] (THEORY.md §3) vs log-mean-exp over NUTS draws."""
    data, W = tiny_posterior
    x = np.vstack([data, _sphere_points(rng, 3, 3)])
    nuts = predictive.predictive_log_density(x, W, 1.0)
    se_nuts = _nuts_log_mean_se(W, x)
    brute = evidence.prior_monte_carlo_log_predictive(jax.random.key(5), x, data, 1.0, 1.0, num_draws=50_000)
    assert np.all(np.abs(nuts - brute.log_density) <= Z_SIGMAS * np.hypot(se_nuts, brute.se))


def test_evidence_ratio_with_an_evidence_estimator(rng, tiny_posterior):
    """log Y(D ∪ {x}) − log Y(D) with two independent prior-Monte-Carlo evidences (η = 1) vs the NUTS predictive."""
    data, W = tiny_posterior
    x = np.vstack([data[:1], _sphere_points(rng, 1, 3)])
    ratio = evidence.predictive_log_density_ratio(
        x, data, 1.0, 1.0, partial(evidence.prior_monte_carlo, jax.random.key(9), num_draws=30_000)
    )
    nuts = predictive.predictive_log_density(x, W, 1.0)
    assert np.all(np.abs(nuts - ratio.log_density) <= Z_SIGMAS * np.hypot(_nuts_log_mean_se(W, x), ratio.se))
    with pytest.raises(ValueError, match="beta = 1"):
        evidence.predictive_log_density_ratio(x, data, 1.0, 1.0, lambda p: 0.0, beta=1.5)
    with pytest.raises(ValueError, match="eta"):
        evidence.predictive_log_density_ratio(x, data, 1.0, 2.0, lambda p: 0.0)


_TINY_SPEC = {
    "name": "predict-smoke",
    "model": {"N": 3, "gamma": 1.0, "eta": 1.0},
    "data": {"source": "teacher", "omega": 2.5, "K": 2, "seed": TINY_DATA_SEED},
    "inference": {"num_warmup": 300, "num_samples": 1000, "num_chains": 2, "seed": 0},
}


def _spec_dict(raw):
    """``Spec.to_dict()`` of the raw spec (what runs.fit_spec writes into meta.json)."""
    return specs.parse_spec(raw, source="<test>").to_dict()


@pytest.fixture(scope="module")
def tiny_run(tiny_nuts, tmp_path_factory):
    """A run folder in the format of runs.fit_spec, written from the tiny NUTS fit (no second NUTS run)."""
    run = tmp_path_factory.mktemp("predict_run") / "run"
    run.mkdir()
    problem = tiny_nuts.problem
    dt = runs.to_datatree(tiny_nuts, posterior_predictive=runs.posterior_predictive_draws(jax.random.key(1), tiny_nuts, 1.0, problem.K),
                         store_latent=True, attrs={"spec_name": "predict-smoke", "seed": 0})
    save_npy_atomic(run / "data.npy", problem.data)
    write_json_atomic(run / "meta.json", run_metadata(seed=0, spec=_spec_dict(_TINY_SPEC), c=problem.frame.c.tolist()))
    dt.to_netcdf(run / "inference.nc", engine="h5netcdf")
    return run


def test_predict_cli_on_a_run_folder(tiny_run, tmp_path, capsys):
    out = tmp_path / "predict.json"
    assert main(["predict", str(tiny_run), "--beta", "1.5", "--num-points", "200", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("typical forward", "typical reverse", "predictive forward", "predictive reverse", "Jensen bias"):
        assert label in text
    r = json.loads(out.read_text())
    assert r["N"] == 3 and r["K"] == 2 and r["beta"] == 1.5 and r["num_draws"] == 2000
    assert r["teacher"].startswith("regenerated")
    assert r["theory"]["fwd_typ"] is not None and r["theory"]["rev_typ"] is None  # β ≠ 1: forward typical only
    for row in r["rows"]:
        assert math.isfinite(row["value_per_n"]) and row["se_per_n"] >= 0
    assert r["typical"]["forward"]["value"] >= 0 and r["typical"]["reverse"]["value"] >= 0


def _rewrite_posterior(src, dst, edit):
    """Copy a run folder, drop its latent group and rewrite its posterior group with ``edit(dataset) -> dataset``."""
    shutil.copytree(src, dst)
    dt = az.from_netcdf(dst / "inference.nc", engine="h5netcdf")
    dt["posterior"] = edit(dt["posterior"].to_dataset())
    if "unconstrained_posterior" in dt.children:
        del dt["unconstrained_posterior"]
    (dst / "inference.nc").unlink()
    dt.to_netcdf(dst / "inference.nc", engine="h5netcdf")
    return dst


def test_predict_run_reads_W_or_latent_and_needs_one(tiny_nuts, tiny_run, tmp_path, capsys):
    r = reports.predict_run(tiny_run, 1.0, jax.random.key(1), num_points=200)
    assert set(r["theory"]) >= {"fwd_typ", "rev_typ", "fwd_pp", "rev_pp"} and r["theory"]["rev_typ"] is not None

    W = inference.coupling_draws(tiny_nuts.problem, tiny_nuts.samples["z"])
    with_W = _rewrite_posterior(
        tiny_run, tmp_path / "with_W", lambda ds: ds.assign(W=(("chain", "draw", "row", "col"), W))
    )
    r_W = reports.predict_run(with_W, 1.0, jax.random.key(1), num_points=200)
    assert r_W["typical"] == r["typical"]  # the same couplings, read directly

    bare = _rewrite_posterior(tiny_run, tmp_path / "bare", lambda ds: ds)
    assert main(["predict", str(bare), "--num-points", "200"]) == 2
    err = capsys.readouterr().err
    assert "neither" in err and "latent" in err


#: Haar keys per band run rebuilt densely (8 × 200 draws: the H-noise of the dense per-draw KLs averages down).
DENSE_REBUILDS = 8


@pytest.fixture(scope="module")
def band_run(tmp_path_factory):
    """A band run folder at N = 10 (2 chains × 100 draws) written by runs.fit_spec."""
    raw = dict(_TINY_SPEC, model={"N": 10, "gamma": 0.5, "eta": 3.0, "parametrization": "band"},
               inference={"num_warmup": 100, "num_samples": 100, "num_chains": 2, "seed": 1})
    run = tmp_path_factory.mktemp("band_run") / "run"
    runs.fit_spec(specs.parse_spec(raw, source="<test>"), run, progress_bar=False)
    return run


def test_run_typical_kls_of_a_band_run_match_dense_rebuilds(band_run):
    """A band run (N = 10): run_typical_kls's Haar-averaged band route against the dense route on W rebuilt with
    independent Haar rotations (same T draws, so the per-draw differences are pure H noise of mean zero)."""
    run = band_run
    betas = (1.0, 1.6)
    band_kls = reports.run_typical_kls(run, betas)
    assert [k.beta for k in band_kls] == list(betas) and band_kls[0].forward.shape == (2, 100)
    for b, rb in zip(betas, band_kls):
        dense = [predictive.typical_kls(reports.run_coupling_draws(run, key=jax.random.key(10 + i)), np.asarray(
            teacher.teacher_student_data(jax.random.key(TINY_DATA_SEED), 10, 2, 2.5).teacher.W), b) for i in range(DENSE_REBUILDS)]
        for name in ("forward", "reverse"):
            d = np.stack([getattr(k, name) for k in dense]) - getattr(rb, name)[None]
            assert abs(d.mean()) <= Z_SIGMAS * d.std(ddof=1) / math.sqrt(d.size)
    with pytest.raises(ValueError, match="betas"):
        reports.run_typical_kls(run, [1.0, -1.0])


def test_predict_run_of_a_large_band_run_gives_exact_typical_kls_only(band_run, monkeypatch, capsys):
    """Above BAND_PREDICTIVE_MAX_N a band run's predict report has the band-route typical KLs and no Monte Carlo
    predictive KLs (which would need dense draws); threshold lowered so that an N = 10 run counts as large."""
    run = band_run
    monkeypatch.setattr(reports, "BAND_PREDICTIVE_MAX_N", 5)
    r = reports.predict_run(run, 1.3, jax.random.key(0), num_points=50)
    (typ,) = reports.run_typical_kls(run, [1.3])
    assert r["predictive"] is None and "N = 10 > 5" in r["predictive_note"] and r["num_draws"] == 200
    assert [row["quantity"].split()[0] for row in r["rows"]] == ["typical", "typical"]
    assert r["typical"]["forward"]["value"] == typ.forward_mean and r["typical"]["reverse"]["value"] == typ.reverse_mean
    assert main(["predict", str(run), "--beta", "1.3", "--num-points", "50"]) == 0
    assert "predictive KLs left out" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_on_a_fit_spec_run(tmp_path):
    """End to end: runs.fit_spec writes the folder, predict_run reads it (a second, short NUTS run)."""
    raw = dict(_TINY_SPEC, inference={"num_warmup": 150, "num_samples": 150, "num_chains": 2, "seed": 1})
    runs.fit_spec(specs.parse_spec(raw, source="<test>"), tmp_path / "run", progress_bar=False)
    r = reports.predict_run(tmp_path / "run", 1.0, jax.random.key(0), num_points=200)
    assert r["num_draws"] == 300 and r["teacher"] == f"from RUN/{runs.TEACHER_FILE}"  # fit_spec stores the teacher
    assert all(math.isfinite(row["value_per_n"]) for row in r["rows"])
