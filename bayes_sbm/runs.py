"""Run folders: fit a model spec and read the result back.

A run folder ``RUN/`` holds

* ``inference.nc`` — the ArviZ DataTree (:func:`bayes_sbm.inference.to_datatree`);
* ``meta.json`` — spec (as a dict), seeds, package versions, data spectrum,
  timings, the theory values (THEORY.md §4) and, for NUTS, ESS/R-hat over
  every latent coordinate (``latent_summary``);
* ``spec.toml`` — a verbatim copy of the spec file; ``data.npy`` — the data;
* ``elbo.npy`` (SVI) and ``checkpoint/`` (NUTS with ``checkpoint_every``).

Every file is written atomically; a NUTS run with checkpoints that was
interrupted resumes from its last segment when fitted again into the same
folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from . import inference, teacher
from .io import atomic_path, run_metadata, save_npy_atomic, write_json_atomic, write_text_atomic

__all__ = ["load_spec_data", "problem_from_spec", "fit_spec", "load_run", "latent_summary", "theory_summary"]


def load_spec_data(spec) -> np.ndarray:
    """The data a spec names: teacher samples (seeded) or a validated file."""
    d = spec.data
    if d.source == "teacher":
        td = teacher.teacher_student_data(jax.random.key(d.seed), spec.model.N, d.K, d.omega)
        return td.data
    data = teacher.load_data(d.resolved_path, project=d.project)
    if data.shape[1] != spec.model.N:
        raise ValueError(f"{spec.path}: model.N: the data file {d.resolved_path} has N = {data.shape[1]} columns, the spec says {spec.model.N}")
    return data


def problem_from_spec(spec, data=None) -> inference.PosteriorProblem:
    data = load_spec_data(spec) if data is None else data
    m = spec.model
    return inference.make_problem(data, m.gamma, m.eta, m.beta, m.parametrization)


def latent_summary(latent) -> dict[str, float]:
    """Worst-case convergence over all latent coordinates: min bulk/tail ESS, max R-hat.

    Parameters
    ----------
    latent : ndarray, shape (chain, draw, dim)
    """
    import arviz as az

    latent = np.asarray(latent)
    ess_bulk = np.asarray(az.ess(latent, method="bulk"))
    ess_tail = np.asarray(az.ess(latent, method="tail", prob=(0.05, 0.95)))
    out = {
        "dim": int(latent.shape[-1]),
        "min_ess_bulk": float(np.min(ess_bulk)),
        "min_ess_tail": float(np.min(ess_tail)),
        "argmin_ess_bulk": int(np.argmin(ess_bulk)),
    }
    if latent.shape[0] > 1:
        rhat = np.asarray(az.rhat(latent))
        out["max_r_hat"] = float(np.max(rhat))
    return out


def theory_summary(c, gamma: float, eta: float) -> dict[str, Any]:
    """THEORY.md §4–5 values for the data spectrum (phase, μ, M, λ_k, u_k, evidence)."""
    from . import theory

    sol = theory.posterior_saddle(c, gamma, eta)
    out = {
        "phase": sol.phase,
        "mu": float(sol.mu),
        "M": float(sol.M),
        "edge": float(sol.edge),
        "lam": np.asarray(sol.lam).tolist(),
        "u": np.asarray(sol.u).tolist(),
        "signal": ((np.asarray(sol.xi) - 1.0) / (eta * np.asarray(c))).tolist(),
        "log_evidence_per_n": float(theory.log_evidence(c, gamma, eta)),
        "kappa": gamma * eta,
        # (1/N) log Z(W) of a typical posterior draw: ½(S(μ) − 1) with the bulk's action (THEORY.md §2)
        "log_z_per_n": 0.5 * (float(theory.semicircle_action(sol.mu, gamma * eta)) - 1.0),
    }
    return out


def _nuts_settings(spec, progress_bar: bool) -> inference.NutsSettings:
    i = spec.inference
    return inference.NutsSettings(
        num_warmup=i.num_warmup,
        num_samples=i.num_samples,
        num_chains=i.num_chains,
        target_accept=i.target_accept,
        dense_mass=i.dense_mass,
        max_tree_depth=i.max_tree_depth,
        chain_method=i.chain_method,
        progress_bar=progress_bar,
        checkpoint_every=i.checkpoint_every,
    )


def _svi_settings(spec, progress_bar: bool) -> inference.SviSettings:
    i = spec.inference
    return inference.SviSettings(
        guide=i.svi_guide,
        num_steps=i.svi_steps,
        learning_rate=i.svi_learning_rate,
        num_particles=i.svi_num_particles,
        num_draws=i.svi_draws,
        progress_bar=progress_bar,
    )


def fit_spec(spec, out_dir, *, progress_bar: bool = True, store_W: bool = False):
    """Fit a spec (NUTS or SVI) and write the run folder; returns ``(datatree, meta)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_spec_data(spec)
    problem = problem_from_spec(spec, data)
    save_npy_atomic(out / "data.npy", data)
    write_text_atomic(out / "spec.toml", spec.to_toml())  # the spec actually fitted (overrides included)
    seed = spec.inference.seed
    key_fit, key_pp = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    meta: dict[str, Any] = run_metadata(seed=seed, spec=spec.to_dict(), c=problem.frame.c.tolist())
    if spec.inference.method == "nuts":
        ckpt = out / "checkpoint" if spec.inference.checkpoint_every > 0 else None
        result = inference.run_nuts(key_fit, problem, _nuts_settings(spec, progress_bar), checkpoint_dir=ckpt)
        meta["latent_summary"] = latent_summary(result.samples[problem.latent_site])
        meta["divergences"] = int(np.sum(result.sample_stats["diverging"]))
    else:
        result = inference.run_svi(key_fit, problem, _svi_settings(spec, progress_bar))
        save_npy_atomic(out / "elbo.npy", result.elbo)
        meta["elbo_final"] = float(np.mean(result.elbo[-max(1, len(result.elbo) // 10) :]))
    pred = spec.predictive
    dt = inference.to_datatree(
        key_pp,
        result,
        num_points=pred.num_points,
        predictive_beta=pred.beta,
        store_W=store_W,
        store_latent=True,
        attrs={"spec_name": spec.name, "seed": seed},
    )
    meta["timing"] = dict(result.timing) | {"wall_s": time.perf_counter() - t0}
    try:
        meta["theory"] = theory_summary(problem.frame.c, problem.gamma, problem.eta)
    except ValueError as exc:  # theory undefined for these inputs: say so, keep the run
        meta["theory"] = {"error": str(exc)}
    with atomic_path(out / "inference.nc") as tmp:
        dt.to_netcdf(tmp, engine="h5netcdf")
    write_json_atomic(out / "meta.json", meta)
    return dt, meta


def load_run(run_dir):
    """``(datatree, meta)`` of a run folder; clear errors for missing pieces."""
    import arviz as az

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    nc = run / "inference.nc"
    if not nc.exists():
        raise FileNotFoundError(f"{run}: no inference.nc (is this a run folder written by 'bayes-sbm fit'?)")
    meta_path = run / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return az.from_netcdf(nc, engine="h5netcdf"), meta
