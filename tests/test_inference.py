"""Tests of bayes_sbm.inference: NUTS and SVI against independent estimates."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer import Trace_ELBO

import bayes_sbm  # noqa: F401  (float64)
from bayes_sbm.settings import NutsSettings, SviSettings
from bayes_sbm import data as data_mod
from bayes_sbm import inference, model, runs, sphere, teacher

#: Two independent Monte Carlo estimates agree within this many combined standard errors
#: (4σ: a false alarm rate of 6e-5 per comparison, yet a real bias of a few MCSE fails).
Z_SIGMAS = 4.0
#: ArviZ R-hat above this flags non-convergence (Vehtari et al. 2021 recommend 1.01; 2 short chains need slack).
RHAT_MAX = 1.05
#: A checkpointed run vs an uninterrupted one: the same NUTS steps compiled in two programs (XLA may fuse
#: differently), so equal up to rounding that NUTS's accept/reject could amplify; observed bitwise equal.
CHECKPOINT_ATOL = 1e-9
#: ELBO estimated with this many particles (standard error ≈ sd/√n ≈ 0.02 here).
ELBO_PARTICLES = 4000
#: Two float64 evaluations of the same matrix identity at N = 4 (eigh, similarity transforms): rounding only.
MATRIX_ATOL = 1e-12
#: Log-likelihoods ½xᵀWx − log Z of O(10) size by two routes (band contour vs dense eigh + contour): rounding only.
LOGLIK_ATOL = 1e-10
#: |x|² = N for exact predictive draws: the sampler normalises each draw in float64.
SPHERE_RTOL = 1e-12


def _mcse_mean(draws):
    draws = np.asarray(draws)
    return float(np.std(draws) / np.sqrt(float(az.ess(draws))))


@pytest.fixture(scope="module")
def tiny_data():
    """N = 4, K = 2 teacher data: the GOE prior still covers the posterior (importance sampling works)."""
    return teacher.teacher_student_data(jax.random.key(11), 4, 2, 2.5).data


def _importance_from_prior(data, gamma, eta, num, key):
    """E_post[f] by self-normalised importance sampling from the GOE prior (independent of NUTS)."""
    N = data.shape[1]
    scales = model.goe_scales(N, gamma * eta)
    z = np.asarray(jax.random.normal(key, (num, scales.size)))
    W = np.asarray(model.symmetric_from_upper(z * scales, N))
    lam = np.linalg.eigvalsh(W)
    log_z = np.asarray(jax.jit(sphere.log_partition)(jnp.asarray(lam)))
    quad = 0.5 * np.einsum("ai,sij,aj->s", data, W, data)
    log_w = eta * (quad - data.shape[0] * log_z)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    ess = 1.0 / np.sum(w**2)
    lam1 = lam[:, -1]
    mean = float(np.sum(w * lam1))
    se = float(np.sqrt(np.sum(w**2 * (lam1 - mean) ** 2)))  # delta-method SE of the ratio estimator
    return mean, se, ess


@pytest.fixture(scope="module")
def importance_reference(tiny_data):
    """E_post[λ_1] at γ = 1, η = 0.4 by importance sampling from the prior (shared by both parametrisations)."""
    return _importance_from_prior(tiny_data, 1.0, 0.4, 200_000, jax.random.key(1))


@pytest.mark.parametrize(("parametrization", "warmup", "draws", "chains"), [
    # the dense model's log density is checked against a direct formula (test_model) and its fits in every run-folder
    # test: its NUTS-vs-importance check runs with make test-slow, the band model's (the default at N >= 50) here
    pytest.param("aligned", 300, 800, 2, id="aligned", marks=pytest.mark.slow),
    pytest.param("band", 200, 1000, 1, id="band"),  # THEORY.md §8 against the dense W's importance sampling
])
def test_nuts_recovers_importance_sampling_mean(tiny_data, importance_reference, parametrization, warmup, draws, chains):
    problem = inference.make_problem(tiny_data, 1.0, 0.4, parametrization=parametrization)
    settings = NutsSettings(num_warmup=warmup, num_samples=draws, num_chains=chains, progress_bar=False)
    res = inference.run_nuts(jax.random.key(0), problem, settings)
    lam1 = res.samples["lam_top"][..., 0]
    assert lam1.shape == (chains, draws)
    nuts_mean, nuts_se = float(lam1.mean()), _mcse_mean(lam1)
    is_mean, is_se, is_ess = importance_reference
    assert is_ess > 1000, "importance sampling too degenerate to be a reference"
    assert abs(nuts_mean - is_mean) < Z_SIGMAS * np.hypot(nuts_se, is_se), (nuts_mean, nuts_se, is_mean, is_se)
    assert int(res.sample_stats["diverging"].sum()) == 0
    # R-hat needs two chains: the one band chain is compared as its two halves
    assert float(az.rhat(lam1 if chains > 1 else lam1.reshape(2, -1))) < RHAT_MAX


def test_band_coupling_draws_are_exact_reconstructions(tiny_data):
    """W = Q diag(I, H) T diag(I, H)ᵀ Qᵀ has T's eigenvalues and the same data block (THEORY.md §8)."""
    problem = inference.make_problem(tiny_data, 0.5, 2.0, parametrization="band")
    latent = np.random.default_rng(0).normal(size=(3, problem.latent_dim))
    W = inference.coupling_draws(problem, latent, key=jax.random.key(4))
    T = np.asarray(inference.band_draws(problem, latent).to_dense())
    np.testing.assert_allclose(W, np.swapaxes(W, -1, -2), rtol=0, atol=MATRIX_ATOL)
    np.testing.assert_allclose(np.linalg.eigvalsh(W), np.linalg.eigvalsh(T), atol=MATRIX_ATOL)
    Q = problem.frame.Q
    W_frame = inference.coupling_draws(problem, latent, frame_coordinates=True, key=jax.random.key(4))
    np.testing.assert_allclose(Q.T @ W @ Q, W_frame, atol=MATRIX_ATOL)
    np.testing.assert_allclose(W_frame[:, :2, :2], T[:, :2, :2], atol=MATRIX_ATOL)
    # the bulk is rotated by a Haar H, not left as T: a fresh key gives another W with the same spectrum
    other = inference.coupling_draws(problem, latent, frame_coordinates=True, key=jax.random.key(5))
    assert not np.allclose(other, W_frame, atol=MATRIX_ATOL)
    np.testing.assert_allclose(other[:, :2, :2], T[:, :2, :2], atol=MATRIX_ATOL)
    # the log-likelihood of the band model is that of the reconstructed W
    ll = inference.log_likelihood_draws(problem, latent)
    lz = np.asarray(sphere.log_partition(np.linalg.eigvalsh(W)))
    direct = 0.5 * np.einsum("ai,sij,aj->sa", tiny_data, W, tiny_data) - lz[:, None]
    np.testing.assert_allclose(ll, direct, atol=LOGLIK_ATOL)


def test_band_needs_fewer_data_modes_than_n():
    """r = N data modes leave nothing to reduce: the band model is refused, by name, before any tracing."""
    data = teacher.teacher_student_data(jax.random.key(3), 3, 3, 2.5).data
    assert data_mod.data_frame(data).c.size == 3
    with pytest.raises(ValueError, match="parametrization: 'band' needs"):
        inference.make_problem(data, 1.0, 1.0, parametrization="band")
    assert inference.make_problem(data, 1.0, 1.0).parametrization == "aligned"  # auto


@pytest.mark.slow
def test_centred_and_aligned_parametrisations_agree(tiny_data):
    """Same posterior in two coordinate systems: a two-sample check on λ_1 and M."""
    gamma, eta = 0.5, 2.0
    settings = NutsSettings(num_warmup=400, num_samples=1500, num_chains=2, progress_bar=False)
    out = {}
    for i, param in enumerate(("centred", "aligned")):
        res = inference.run_nuts(jax.random.key(10 + i), inference.make_problem(tiny_data, gamma, eta, parametrization=param), settings)
        out[param] = res.samples
    for site in ("M", "log_z_per_n"):
        a, b = out["centred"][site], out["aligned"][site]
        assert abs(a.mean() - b.mean()) < Z_SIGMAS * np.hypot(_mcse_mean(a), _mcse_mean(b)), site
    a, b = out["centred"]["lam_top"][..., 0], out["aligned"]["lam_top"][..., 0]
    assert abs(a.mean() - b.mean()) < Z_SIGMAS * np.hypot(_mcse_mean(a), _mcse_mean(b))


@pytest.fixture(scope="module")
def svi_problem():
    data = teacher.teacher_student_data(jax.random.key(5), 20, 2, 2.5).data
    return inference.make_problem(data, 0.5, 3.0)


def _svi_fits(problem, num_steps, guides=("normal", "structured")):
    fits = {}
    for name in guides:
        settings = SviSettings(guide=name, num_steps=num_steps, learning_rate=0.01, num_draws=200, progress_bar=False)
        fits[name] = inference.run_svi(jax.random.key(3), problem, settings)
    return fits


@pytest.fixture(scope="module")
def svi_fits(svi_problem):
    """Short fits: enough for the ELBO to rise and the draws to carry every site."""
    return _svi_fits(svi_problem, 500, guides=("structured",))


def test_svi_elbo_increases(svi_fits):
    for name, fit in svi_fits.items():
        n = len(fit.elbo) // 10
        assert fit.elbo[-n:].mean() > fit.elbo[:n].mean(), name
        assert np.all(np.isfinite(fit.elbo)), name


@pytest.mark.slow
def test_structured_guide_beats_autonormal(svi_problem):
    svi_fits = _svi_fits(svi_problem, 3000)
    kwargs = svi_problem.model_kwargs()
    values = {}
    for name, fit in svi_fits.items():
        elbo = Trace_ELBO(num_particles=ELBO_PARTICLES, vectorize_particles=True)
        losses = [float(elbo.loss(jax.random.key(100 + j), fit.params, model.sbm_posterior, fit.guide, **kwargs)) for j in range(2)]
        values[name] = -np.mean(losses)
    assert values["structured"] > values["normal"], values


def test_svi_draws_have_spectral_sites(svi_fits, svi_problem):
    fit = svi_fits["structured"]
    for site in model.SPECTRAL_SITES:
        assert site in fit.samples and np.all(np.isfinite(fit.samples[site]))
    assert fit.samples["z"].shape == (1, 200, svi_problem.N * (svi_problem.N + 1) // 2)


def test_structured_guide_requires_aligned(tiny_data):
    problem = inference.make_problem(tiny_data, 1.0, 1.0, parametrization="centred")
    with pytest.raises(ValueError, match="parametrization"):
        inference.structured_guide(problem)


def test_checkpoint_resume_reproduces_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    problem = inference.make_problem(tiny_data, 1.0, 1.0)
    settings = NutsSettings(num_warmup=30, num_samples=40, num_chains=1, progress_bar=False, checkpoint_every=10)
    full = inference.run_nuts(jax.random.key(7), problem, settings, checkpoint_dir=tmp_path / "a")

    calls = {"n": 0}
    original = inference._SegmentRunner.run

    def crashing_run(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # after the warmup segment and one more: a crash mid-run
            raise KeyboardInterrupt("simulated crash")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(inference._SegmentRunner, "run", crashing_run)
    with pytest.raises(KeyboardInterrupt):
        inference.run_nuts(jax.random.key(7), problem, settings, checkpoint_dir=tmp_path / "b")
    monkeypatch.setattr(inference._SegmentRunner, "run", original)
    assert (tmp_path / "b" / inference.CHECKPOINT_INDEX).exists()
    resumed = inference.run_nuts(jax.random.key(7), problem, settings, checkpoint_dir=tmp_path / "b")
    np.testing.assert_array_equal(resumed.samples["z"], full.samples["z"])
    for name in ("lam_top", "M"):  # deterministic sites of the compiled segments agree with the model's
        np.testing.assert_array_equal(resumed.samples[name], full.samples[name])
    # the checkpointed run samples the same chain as an uninterrupted one (same kernel steps and keys)
    plain = inference.run_nuts(jax.random.key(7), problem, dataclasses.replace(settings, checkpoint_every=0))
    np.testing.assert_allclose(plain.samples["z"], full.samples["z"], rtol=0, atol=CHECKPOINT_ATOL)
    # a different seed must not silently reuse the checkpoint
    with pytest.raises(ValueError, match="checkpoint"):
        inference.run_nuts(jax.random.key(8), problem, settings, checkpoint_dir=tmp_path / "b")


def test_datatree_round_trips_through_netcdf(tiny_data, tmp_path):
    problem = inference.make_problem(tiny_data, 1.0, 1.0)
    settings = NutsSettings(num_warmup=30, num_samples=30, num_chains=2, progress_bar=False)
    res = inference.run_nuts(jax.random.key(2), problem, settings)
    dt = runs.to_datatree(res, posterior_predictive=runs.posterior_predictive_draws(jax.random.key(3), res, 1.0, problem.K), store_W=True)
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data", "posterior_predictive", "constant_data"):
        assert group in dt.children, group
    path = tmp_path / "run.nc"
    dt.to_netcdf(path, engine="h5netcdf")
    back = az.from_netcdf(path, engine="h5netcdf")
    for group in dt.children:
        for name, var in dt[group].data_vars.items():
            np.testing.assert_array_equal(np.asarray(back[group][name]), np.asarray(var), err_msg=f"{group}/{name}")
    # posterior predictive draws lie on the sphere and the log-likelihood is the untempered one
    x = np.asarray(dt["posterior_predictive"]["x"])
    np.testing.assert_allclose((x**2).sum(-1), problem.N, rtol=SPHERE_RTOL)
    W = np.asarray(dt["posterior"]["W"])[0, 0]
    lam = np.linalg.eigvalsh(W)
    ll = 0.5 * np.einsum("ai,ij,aj->a", tiny_data, W, tiny_data) - float(sphere.log_partition(lam))
    np.testing.assert_allclose(np.asarray(dt["log_likelihood"]["x"])[0, 0], ll, atol=LOGLIK_ATOL)


class _Planted:
    """A pickle payload that creates a marker file when unpickled (must never happen)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickles_in_a_checkpoint_never_run(tiny_data, tmp_path):
    """Issue: checkpoints were pickles loaded before their signature was checked. Now nothing can run code."""
    problem = inference.make_problem(tiny_data, 1.0, 1.0)
    settings = NutsSettings(num_warmup=10, num_samples=10, num_chains=1, progress_bar=False, checkpoint_every=5)
    key = jax.random.key(7)
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    # a pickle where the old format lived, and an npz whose array is a pickled object
    (ckpt / "nuts_checkpoint.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    with open(ckpt / inference.CHECKPOINT_ARRAYS, "wb") as fh:
        np.savez(fh, **{"samples/z": np.array([_Planted(marker)], dtype=object)})
    digest = hashlib.sha256((ckpt / inference.CHECKPOINT_ARRAYS).read_bytes()).hexdigest()
    signature = inference._checkpoint_signature(problem, settings, inference._raw_key(key))
    template = jax.tree_util.tree_structure(inference.NUTS(model.sbm_posterior).init(
        inference._raw_key(key), 10, None, model_args=(), model_kwargs=problem.model_kwargs()))
    index = {"version": inference.CHECKPOINT_VERSION, "signature": signature, "done": 5, "elapsed": 0.0,
             "samples": ["z"], "stats": [], "state_leaves": template.num_leaves, "state_tree": str(template), "sha256": digest}
    (ckpt / inference.CHECKPOINT_INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="checkpoint_dir: .* cannot be read"):
        inference.run_nuts(key, problem, settings, checkpoint_dir=ckpt)
    assert not marker.exists()
    # a tampered npz (hash mismatch) is refused before it is opened
    with open(ckpt / inference.CHECKPOINT_ARRAYS, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ValueError, match="does not match its index"):
        inference.run_nuts(key, problem, settings, checkpoint_dir=ckpt)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("gamma", "eta"), [(0.5, 3.0), (2.0, 0.7)], ids=["FMo", "PMe"])
def test_band_and_aligned_posteriors_agree(gamma, eta):
    """THEORY.md §8 is exact: band and dense aligned NUTS on the same data agree (two-sample, N = 24)."""
    data = teacher.teacher_student_data(jax.random.key(21), 24, 2, 2.5).data
    settings = NutsSettings(num_warmup=500, num_samples=2000, num_chains=2, progress_bar=False)
    out = {}
    for i, param in enumerate(("band", "aligned")):
        res = inference.run_nuts(jax.random.key(40 + i), inference.make_problem(data, gamma, eta, parametrization=param), settings)
        out[param] = res.samples
    for site, index in (("lam_top", 0), ("u", 0), ("M", None), ("signal", 0), ("log_z_per_n", None)):
        a, b = out["band"][site], out["aligned"][site]
        if index is not None:
            a, b = a[..., index], b[..., index]
        assert abs(a.mean() - b.mean()) < Z_SIGMAS * np.hypot(_mcse_mean(a), _mcse_mean(b)), site
