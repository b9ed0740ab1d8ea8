#!/usr/bin/env python
"""Benchmark of NUTS on the tempered SBM posterior: ESS per second (THEORY.md §3–4).

For N ∈ ``--sizes`` (default 25, 50, 100, 200) and each sampler variant

==============================  ==============  ==========  ======  =========
variant                         parametrisation  ∂ log Z    mass    log Z
==============================  ==============  ==========  ======  =========
``aligned-spectral-diag``       aligned          spectral   diag    exact
``aligned-eigh-diag``           aligned          eigh (AD)  diag    exact
``aligned-spectral-dense``      aligned          spectral   dense   exact
``noncentred-spectral-diag``    noncentred       spectral   diag    exact
``centred-spectral-diag``       centred          spectral   diag    exact
``saddle-noncentred-eigh-diag`` noncentred       eigh (AD)  diag    saddle
==============================  ==============  ==========  ======  =========

(the first is the library default; the last is the "generic NUTS" reference
of the issue: the likelihood uses the large-N ``sphere.log_partition_saddle``
instead of the exact log Z, autodiff through ``eigvalsh``, so it samples a
slightly different posterior and is a speed reference only) it runs NumPyro
NUTS and reports, per row:

* warmup+compile seconds and the **sampling** seconds, timed apart:
  ``MCMC.warmup`` (timed: initialisation, compilation, adaptation); then the
  sampling phase runs NumPyro's own NUTS step and per-draw postprocessing
  (``kernel.sample`` and ``kernel.postprocess_fn``, exactly what
  ``MCMC.run`` iterates after warmup) from the post-warmup state as one
  ``lax.scan`` per chain, compiled ahead of time (``sample_compile_s``) and
  then run (``sample_s``: pure sampling of all chains).  ``MCMC.run`` itself
  cannot be timed without its compilation: its loop length is a static
  argument and NumPyro rebuilds the jitted body on every call, so a second
  run recompiles;
* mean leapfrog steps per draw, divergences, step size, acceptance, E-BFMI;
* ArviZ bulk ESS of λ₁ (``lam_top[..., 0]``), the minimum bulk ESS over all
  latent coordinates (the slowest coordinate) and over the spectral sites,
  ESS/s of λ₁ and of the slowest coordinate (sampling time; also including
  warmup), max R-hat;
* posterior means of λ₁, u₁ and M next to ``theory.posterior_saddle``.

Problem: K = 2 samples of a rank-one teacher with ω = 2.5 (fixed data seed),
at the FMo point γ = 0.5, η = 3 by default (``--phase-point pm``: γ = 2,
η = 1; ``--gamma``/``--eta`` override).  Chains run ``sequential`` by
default, single-threaded (threads pinned *before* JAX is imported), so the
ESS/s are per core; two chains on two cores (``--chain-method parallel``)
give about twice as much when the cores are free.

A dense mass matrix has (N(N+1)/2)² entries: rows with dense mass above
``--dense-max-n`` (default 50) are recorded as skipped with the reason.
Even below, NumPyro's last adaptation window (200 draws for 500 warmup)
is shorter than the dimension (325 at N = 25, 1275 at N = 50), so the
covariance estimate is rank-deficient and shrunk towards 10⁻³·I: NUTS then
saturates the tree depth (1023 leapfrog steps per draw) — minutes per row at
N = 25 and of the order of an hour at N = 50 (``--variants`` or
``--dense-max-n 25`` leave it out).

The data depend on the library's exact sampler (``SphericalBoltzmann.sample``)
as well as on ``--data-seed``; ``problem.theory_by_N`` records c and a data
hash per N.

On a GPU (``--device gpu``) run e.g. ``--sizes 400,1000``.

The JSON (``--out``) is rewritten atomically after every row, so a stopped
run keeps its finished rows; ``--resume`` keeps the rows already in the file
(same settings required) and runs only the missing ones.

Usage: ``python benchmarks/bench_nuts.py [--quick] [--sizes 25,50] [--variants ...]
[--out PATH] [--resume] [--threads T] [--device cpu|gpu]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import pin_threads, size_list  # noqa: E402  (standard library only: threads are pinned in main)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_nuts.json"
DEFAULT_SIZES = (25, 50, 100, 200)
QUICK_SIZES = (10,)
QUICK_WARMUP = 40
QUICK_SAMPLES = 40
#: Named phase points (γ, η) for the rank-one ω = 2.5 teacher with K = 2.
PHASE_POINTS = {"fmo": (0.5, 3.0), "pm": (2.0, 1.0)}
#: variant name -> (log Z, parametrisation, gradient, dense mass)
VARIANTS = {
    "aligned-spectral-diag": ("exact", "aligned", "spectral", False),
    "aligned-eigh-diag": ("exact", "aligned", "eigh", False),
    "aligned-spectral-dense": ("exact", "aligned", "spectral", True),
    "noncentred-spectral-diag": ("exact", "noncentred", "spectral", False),
    "centred-spectral-diag": ("exact", "centred", "spectral", False),
    "saddle-noncentred-eigh-diag": ("saddle", "noncentred", "eigh", False),
    "band-diag": ("exact", "band", "spectral", False),
}
#: Variants that scale past the dense model's O(N³) gradient (run alone at --band-sizes).
BAND_VARIANTS = ("band-diag",)
DEFAULT_VARIANT = "aligned-spectral-diag"
#: Targets of the issue (2 CPU cores, N = 100, default variant).
TARGETS = {"N": 100, "ess_per_s_lam1": 20.0, "ess_per_s_slowest": 5.0, "divergences": 0,
           "generic_nuts_reference_ess_per_s_lam1_at_N50": 200.0}
#: Latent coordinates per ArviZ R-hat call (bounds memory at large N).
RHAT_CHUNK = 4096
#: Settings that must agree for ``--resume`` to reuse rows.
SIGNATURE_KEYS = ("K", "omega", "data_seed", "seed", "gamma", "eta", "num_chains", "num_warmup", "num_samples",
                  "chain_method", "target_accept", "max_tree_depth", "threads", "device", "quick")


# ---------------------------------------------------------------------------
# Command line and environment (before JAX is imported)
# ---------------------------------------------------------------------------


def _variant_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke run: N={QUICK_SIZES}, {QUICK_WARMUP} warmup / {QUICK_SAMPLES} draws")
    p.add_argument("--sizes", type=size_list, default=None, help="comma-separated N (default 25,50,100,200; 10 with --quick)")
    p.add_argument("--variants", type=_variant_list, default=list(VARIANTS), help="comma-separated variants (default all)")
    p.add_argument("--phase-point", choices=sorted(PHASE_POINTS), default="fmo", help="named (γ, η): fmo = (0.5, 3), pm = (2, 1)")
    p.add_argument("--gamma", type=float, default=None, help="override γ of the phase point")
    p.add_argument("--eta", type=float, default=None, help="override η of the phase point")
    p.add_argument("--omega", type=float, default=2.5, help="teacher spike (default 2.5)")
    p.add_argument("--K", type=int, default=2, help="number of data points (default 2)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=1, help="NUTS seed")
    p.add_argument("--num-chains", type=int, default=2)
    p.add_argument("--num-warmup", type=int, default=None, help=f"default 500 ({QUICK_WARMUP} with --quick)")
    p.add_argument("--num-samples", type=int, default=None, help=f"default 500 ({QUICK_SAMPLES} with --quick)")
    p.add_argument("--chain-method", choices=("sequential", "parallel"), default="sequential")
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--max-tree-depth", type=int, default=10)
    p.add_argument("--dense-max-n", type=int, default=50, help="skip dense mass above this N (default 50)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for BLAS/XLA (default 1)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="keep finished rows of --out and run only the missing ones")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.num_chains < 1:
        p.error("--num-chains must be >= 1")
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.num_warmup is None:
        args.num_warmup = QUICK_WARMUP if args.quick else 500
    if args.num_samples is None:
        args.num_samples = QUICK_SAMPLES if args.quick else 500
    if args.num_warmup < 1 or args.num_samples < 4:
        p.error("--num-warmup must be >= 1 and --num-samples >= 4")
    gamma, eta = PHASE_POINTS[args.phase_point]
    args.gamma = gamma if args.gamma is None else args.gamma
    args.eta = eta if args.eta is None else args.eta
    return args


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def saddle_posterior(data, gamma: float, eta: float, *, frame):
    """"Generic NUTS" reference: noncentred GOE prior, likelihood with the saddle-point log Z.

    ``W = scale ⊙ sym(z)``, ``z ~ N(0, I)``; factor
    ``η Σ_a [½ x_aᵀ W x_a − log Z_saddle(eigvalsh W)]`` (autodiff through
    ``eigvalsh``); the spectral sites of :func:`bayes_sbm.model.sbm_posterior`.
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from bayes_sbm import model, sphere

    X = jnp.asarray(data)
    K, N = X.shape
    r = frame.c.shape[0]
    scales = jnp.asarray(model.goe_scales(N, gamma * eta))
    z = numpyro.sample("z", dist.Normal(jnp.zeros(N * (N + 1) // 2), 1.0).to_event(1))
    W = model.symmetric_from_upper(z * scales, N)
    lam = jnp.linalg.eigvalsh(W)
    quad = 0.5 * jnp.einsum("ai,ij,aj->", X, W, X)
    numpyro.factor("loglik_saddle", eta * (quad - K * sphere.log_partition_saddle(lam)))
    model._spectral_observables(W, jnp.asarray(frame.Q[:, :r]), min(r + 1, N))


# ---------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------


def _as_3d(draws):
    import numpy as np

    draws = np.asarray(draws, dtype=np.float64)
    return draws.reshape(draws.shape[:2] + (-1,))


def ess_bulk(draws):
    """Bulk ESS (``bayes_sbm._stats.ess``: NaN for constant draws) per component of (chain, draw, ...) draws → (k,)."""
    import numpy as np

    from bayes_sbm import _stats

    x = _as_3d(draws)
    return np.array([_stats.ess(x[..., k], method="bulk") for k in range(x.shape[-1])])


def rhat(draws):
    """ArviZ rank R-hat per component of (chain, draw, ...) draws → (k,) (NaN with one chain)."""
    import arviz as az
    import numpy as np

    x = _as_3d(draws)
    if x.shape[0] < 2:
        return np.full(x.shape[-1], np.nan)
    out = [np.atleast_1d(np.asarray(az.rhat(x[..., s : s + RHAT_CHUNK]), dtype=np.float64))
           for s in range(0, x.shape[-1], RHAT_CHUNK)]
    return np.concatenate(out)


def e_bfmi(energy):
    """Energy Bayesian fraction of missing information per chain: Σ(ΔE)² / Σ(E − Ē)²."""
    import numpy as np

    e = np.asarray(energy, dtype=np.float64)
    num = np.sum(np.diff(e, axis=1) ** 2, axis=1)
    den = np.sum((e - e.mean(axis=1, keepdims=True)) ** 2, axis=1)
    return num / den


def _nanmin_with_arg(values):
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.all(np.isnan(values)):
        return math.nan, -1
    i = int(np.nanargmin(values))
    return float(values[i]), i


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------
# One row
# ---------------------------------------------------------------------------


def row_id(N: int, variant: str) -> str:
    return f"N={N}|{variant}"


def make_data(args, N: int):
    import jax

    from bayes_sbm import teacher

    return teacher.teacher_student_data(jax.random.PRNGKey(args.data_seed), N, args.K, args.omega).data


def run_row(args, N: int, variant: str, chain_method: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from numpyro.infer import MCMC, NUTS, init_to_median

    from bayes_sbm import band, inference, model, theory

    logz, parametrization, gradient, dense = VARIANTS[variant]
    dim = N * (N + 1) // 2
    if parametrization == "band":  # (m + 1)N − m(m + 1)/2 free band entries, m = K data modes (THEORY.md §8)
        dim = sum(band.latent_size(N, model.band_width(args.K, N)))
    row = {
        "id": row_id(N, variant), "N": N, "variant": variant, "log_z": logz, "parametrization": parametrization,
        "gradient": gradient, "mass": "dense" if dense else "diag", "dim": dim,
    }
    if dense and N > args.dense_max_n:
        row.update(status="skipped", reason=(
            f"dense mass matrix would have dim² = {dim}² = {dim * dim:.3g} entries "
            f"({dim * dim * 8 / 2**30:.2f} GiB, O(dim³) Cholesky per adaptation window); N > --dense-max-n = {args.dense_max_n}"))
        return row

    data = make_data(args, N)
    problem = inference.make_problem(data, args.gamma, args.eta, parametrization=parametrization, gradient=gradient)
    if logz == "exact":
        fn, kwargs = model.sbm_posterior, problem.model_kwargs(store_W=False)
    else:
        fn, kwargs = saddle_posterior, dict(data=problem.data, gamma=problem.gamma, eta=problem.eta, frame=problem.frame)
    site = problem.latent_site
    kernel = NUTS(fn, target_accept_prob=args.target_accept, dense_mass=dense, max_tree_depth=args.max_tree_depth,
                  init_strategy=init_to_median(num_samples=15))
    mcmc = MCMC(kernel, num_warmup=args.num_warmup, num_samples=args.num_samples, num_chains=args.num_chains,
                chain_method=chain_method, progress_bar=False)
    # the benchmark's own keys (not settings.derive_keys): warm-up and sampling run apart so that they can be timed apart
    key_warm, key_sample = jax.random.split(jax.random.PRNGKey(args.seed))
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    mcmc.warmup(key_warm, **kwargs)
    jax.block_until_ready(mcmc.post_warmup_state)
    warmup_s = time.perf_counter() - t0

    # Sampling phase: NumPyro's own NUTS step (kernel.sample) and per-draw
    # postprocessing (deterministic spectral sites), exactly what MCMC.run
    # iterates, as one ahead-of-time compiled lax.scan per chain, so that the
    # compilation is timed apart from the sampling.
    state = mcmc.post_warmup_state
    if args.num_chains > 1:
        state = state._replace(rng_key=jax.random.split(key_sample, args.num_chains))
    else:
        state = state._replace(rng_key=key_sample)
    postprocess = kernel.postprocess_fn((), kwargs)
    num_samples = args.num_samples

    def chain(s0):
        def step(s, _):
            s = kernel.sample(s, (), kwargs)
            out = {
                "sites": postprocess(s.z), "diverging": s.diverging, "num_steps": s.num_steps,
                "accept_prob": s.accept_prob, "step_size": s.adapt_state.step_size, "energy": s.energy,
            }
            return s, out
        return jax.lax.scan(step, s0, None, length=num_samples)[1]

    t1 = time.perf_counter()
    if args.num_chains == 1:
        compiled = jax.jit(chain).lower(state).compile()
    elif chain_method == "parallel":
        compiled = jax.pmap(chain).lower(state).compile()
    else:
        compiled = jax.jit(chain).lower(jax.tree_util.tree_map(lambda a: a[0], state)).compile()
    compile_s = time.perf_counter() - t1
    if args.num_chains == 1 or chain_method == "parallel":
        chain_states = None
    else:
        chain_states = [jax.block_until_ready(jax.tree_util.tree_map(lambda a, c=c: a[c], state))
                        for c in range(args.num_chains)]
    c2, t2 = time.process_time(), time.perf_counter()
    if chain_states is None:
        out = jax.block_until_ready(compiled(state))
    else:
        parts = [jax.block_until_ready(compiled(s)) for s in chain_states]
    sample_s = time.perf_counter() - t2
    sample_cpu_s = time.process_time() - c2
    load_end = os.getloadavg()
    if chain_states is not None:
        out = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *parts)
    elif args.num_chains == 1:
        out = jax.tree_util.tree_map(lambda a: a[None], out)
    out = jax.device_get(out)
    samples = out.pop("sites")
    extra = out

    # --- diagnostics -------------------------------------------------------
    latent = np.asarray(samples[site])
    if parametrization == "band":  # eigen-observables on the host (banded eigensolver), as run_nuts does
        samples |= inference.spectral_draws(problem, latent)
    lam1 = np.asarray(samples["lam_top"])[..., 0]
    ess_latent = ess_bulk(latent)
    ess_min_latent, arg_latent = _nanmin_with_arg(ess_latent)
    rows_i, cols_i = np.triu_indices(N)
    spectral_ess, spectral_rhat = {}, []
    for name in model.SPECTRAL_SITES:
        if name not in samples:
            continue
        vals = _as_3d(samples[name])
        ess_v = ess_bulk(vals)
        for k, e in enumerate(ess_v):
            spectral_ess[f"{name}[{k}]" if vals.shape[-1] > 1 else name] = float(e)
        spectral_rhat.append(rhat(vals))
    spec_names = list(spectral_ess)
    ess_min_spectral, arg_spec = _nanmin_with_arg([spectral_ess[n] for n in spec_names])
    ess_lam1 = float(ess_bulk(lam1)[0])
    rhat_latent = rhat(latent)
    rhat_spec = np.concatenate(spectral_rhat) if spectral_rhat else np.array([np.nan])
    num_steps = np.asarray(extra["num_steps"])
    diverging = np.asarray(extra["diverging"], dtype=bool)
    step_size = np.asarray(extra["step_size"])
    saddle = theory.posterior_saddle(problem.frame.c, args.gamma, args.eta)
    u1 = np.asarray(samples["u"])[..., 0]
    M = np.asarray(samples["M"])
    total_s = warmup_s + sample_s

    row.update(
        status="ok",
        chain_method=chain_method,
        num_chains=args.num_chains, num_warmup=args.num_warmup, num_samples=args.num_samples,
        warmup_compile_s=warmup_s,
        sample_compile_s=compile_s,
        sample_s=sample_s,
        mean_leapfrog_steps=float(num_steps.mean()),
        max_leapfrog_steps=int(num_steps.max()),
        tree_depth_saturated_frac=float(np.mean(num_steps >= 2**args.max_tree_depth - 1)),
        divergences=int(diverging.sum()),
        step_size=[float(v) for v in step_size[:, -1]],
        accept_prob_mean=float(np.mean(extra["accept_prob"])),
        e_bfmi=[float(b) for b in e_bfmi(extra["energy"])],
        ess_lam1=ess_lam1,
        ess_u1=spectral_ess.get("u[0]"),
        ess_M=spectral_ess.get("M"),
        ess_min_latent=ess_min_latent,
        slowest_latent=(f"{site}[{arg_latent}]" if parametrization == "band" else f"{site}[{rows_i[arg_latent]},{cols_i[arg_latent]}]")
        if arg_latent >= 0 else None,
        ess_median_latent=float(np.nanmedian(ess_latent)),
        ess_min_spectral=ess_min_spectral,
        slowest_spectral=spec_names[arg_spec] if arg_spec >= 0 else None,
        ess_spectral=spectral_ess,
        ess_per_s_lam1=ess_lam1 / sample_s,
        ess_per_s_slowest=ess_min_latent / sample_s,
        ess_per_s_min_spectral=ess_min_spectral / sample_s,
        sample_cpu_s=sample_cpu_s,
        ess_per_cpu_s_lam1=ess_lam1 / sample_cpu_s,
        ess_per_cpu_s_slowest=ess_min_latent / sample_cpu_s,
        ms_per_gradient=1e3 * sample_s / float(num_steps.sum()),
        ess_per_1k_gradients_lam1=1e3 * ess_lam1 / float(num_steps.sum()),
        ess_per_1k_gradients_slowest=1e3 * ess_min_latent / float(num_steps.sum()),
        ess_per_s_lam1_incl_warmup=ess_lam1 / total_s,
        ess_per_s_slowest_incl_warmup=ess_min_latent / total_s,
        rhat_max_latent=_finite_or_none(np.nanmax(rhat_latent)) if np.any(np.isfinite(rhat_latent)) else None,
        rhat_max_spectral=_finite_or_none(np.nanmax(rhat_spec)) if np.any(np.isfinite(rhat_spec)) else None,
        posterior_mean={"lam1": float(lam1.mean()), "u1": float(u1.mean()), "M": float(M.mean())},
        posterior_sd={"lam1": float(lam1.std()), "u1": float(u1.std()), "M": float(M.std())},
        theory={"phase": saddle.phase, "lam1": float(saddle.lam[0]), "u1": float(saddle.u[0]), "M": float(saddle.M)},
        data_c=[float(c) for c in problem.frame.c],
        loadavg_start=list(load_start),
        loadavg_end=list(load_end),
    )
    finite = [v for v in (row["rhat_max_latent"], row["rhat_max_spectral"]) if v is not None]
    row["rhat_max"] = max(finite) if finite else None
    return row


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _fmt(x, spec: str, width: int) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—".rjust(width)
    return format(x, spec).rjust(width)


TABLE_COLUMNS = (
    ("N", 4), ("variant", 28), ("warm+c s", 9), ("samp s", 8), ("steps", 6), ("div", 4), ("eps", 7),
    ("ESS λ1", 7), ("ESS z_min", 9), ("ESS spec", 8), ("ESS/s λ1", 9), ("ESS/s slow", 10), ("ms/grad", 7),
    ("λ1/kgrad", 8), ("slow/kgrad", 10), ("R̂ max", 6), ("λ1 (th)", 13), ("u1 (th)", 13), ("M (th)", 13),
)


def format_row(row: dict) -> str:
    cells = [str(row["N"]).rjust(4), row["variant"].ljust(28)]
    if row.get("status") != "ok":
        return " ".join(cells) + f"  {row.get('status', '?')}: {row.get('reason', '')}"
    pm, th = row["posterior_mean"], row["theory"]
    grads = row["mean_leapfrog_steps"] * row["num_chains"] * row["num_samples"]
    cells += [
        _fmt(row["warmup_compile_s"], ".1f", 9), _fmt(row["sample_s"], ".1f", 8),
        _fmt(row["mean_leapfrog_steps"], ".1f", 6), str(row["divergences"]).rjust(4),
        _fmt(sum(row["step_size"]) / len(row["step_size"]), ".3f", 7),
        _fmt(row["ess_lam1"], ".0f", 7), _fmt(row["ess_min_latent"], ".0f", 9), _fmt(row["ess_min_spectral"], ".0f", 8),
        _fmt(row["ess_per_s_lam1"], ".1f", 9), _fmt(row["ess_per_s_slowest"], ".2f", 10),
        _fmt(1e3 * row["sample_s"] / grads, ".3f", 7), _fmt(1e3 * row["ess_lam1"] / grads, ".1f", 8),
        _fmt(1e3 * row["ess_min_latent"] / grads, ".1f", 10), _fmt(row["rhat_max"], ".3f", 6),
    ]
    for key in ("lam1", "u1", "M"):
        cells.append(f"{pm[key]:.3f} ({th[key]:.3f})".rjust(13))
    return " ".join(cells)


def table(rows: list[dict]) -> str:
    header = " ".join(name.rjust(w) if i not in (1,) else name.ljust(w) for i, (name, w) in enumerate(TABLE_COLUMNS))
    lines = [header, "-" * len(header)]
    lines += [format_row(r) for r in sorted(rows, key=lambda r: (r["N"], list(VARIANTS).index(r["variant"])))]
    return "\n".join(lines)


def target_summary(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r.get("status") == "ok" and r["variant"] == DEFAULT_VARIANT and r["N"] == TARGETS["N"]:
            ok = (r["ess_per_s_lam1"] >= TARGETS["ess_per_s_lam1"] and r["ess_per_s_slowest"] >= TARGETS["ess_per_s_slowest"]
                  and r["divergences"] == 0)
            out.append(
                f"target at N={TARGETS['N']} ({DEFAULT_VARIANT}, {r['chain_method']}, per-core timing): "
                f"ESS/s λ1 {r['ess_per_s_lam1']:.1f} (≥ {TARGETS['ess_per_s_lam1']:g}), "
                f"slowest {r['ess_per_s_slowest']:.2f} (≥ {TARGETS['ess_per_s_slowest']:g}), "
                f"divergences {r['divergences']} -> {'MET' if ok else 'NOT MET'}")
    return out


def device_info(args) -> dict:
    import jax

    dev = jax.devices()[0]
    info = {"requested": args.device, "backend": jax.default_backend(), "platform": dev.platform,
            "device_kind": getattr(dev, "device_kind", str(dev)), "num_devices": jax.device_count(),
            "cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    host_devices = args.num_chains if (args.chain_method == "parallel" and args.device == "cpu") else 1
    thread_env = pin_threads(args.threads, host_devices=host_devices, jax_platforms="cpu" if args.device == "cpu" else None)

    import jax

    import bayes_sbm  # noqa: F401  (float64)
    from bayes_sbm import io, theory
    from bayes_sbm.data import data_frame

    if args.device == "gpu" and jax.default_backend() != "gpu":
        print(f"error: --device gpu but JAX's backend is {jax.default_backend()!r}", file=sys.stderr)
        return 2
    chain_method = args.chain_method
    if chain_method == "parallel" and jax.local_device_count() < args.num_chains:
        print(f"warning: {jax.local_device_count()} device(s) < {args.num_chains} chains; using sequential", file=sys.stderr)
        chain_method = "sequential"

    settings = {
        "K": args.K, "omega": args.omega, "data_seed": args.data_seed, "seed": args.seed, "gamma": args.gamma,
        "eta": args.eta, "phase_point": args.phase_point, "num_chains": args.num_chains, "num_warmup": args.num_warmup,
        "num_samples": args.num_samples, "chain_method": chain_method, "target_accept": args.target_accept,
        "max_tree_depth": args.max_tree_depth, "dense_max_n": args.dense_max_n,
        "threads": args.threads, "device": args.device, "quick": args.quick, "sizes": args.sizes,
        "variants": args.variants, "init_strategy": "init_to_median(num_samples=15)",
        "sampling_timing": "MCMC.warmup timed (init + compile + warmup); then kernel.sample + postprocess_fn in a "
                           "lax.scan per chain, compiled ahead of time (sample_compile_s) and run (sample_s)",
    }
    rows: list[dict] = []
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        old_settings = old.get("settings", {})
        diff = {k: (old_settings.get(k), settings[k]) for k in SIGNATURE_KEYS if old_settings.get(k) != settings[k]}
        if diff:
            print(f"error: --resume: {args.out} was written with other settings {diff}; choose another --out", file=sys.stderr)
            return 2
        rows = [r for r in old.get("rows", []) if r.get("status") in ("ok", "skipped")]
        print(f"resuming: {len(rows)} finished row(s) kept from {args.out}")

    saddles = {}
    for N in args.sizes:
        data = make_data(args, N)
        c = data_frame(data).c
        s = theory.posterior_saddle(c, args.gamma, args.eta)
        saddles[str(N)] = {"c": [float(v) for v in c], "phase": s.phase, "lam1": float(s.lam[0]), "u1": float(s.u[0]),
                           "M": float(s.M), "data_sha256": hashlib.sha256(data.tobytes()).hexdigest()[:16]}

    t_start = time.perf_counter()
    payload = {
        "benchmark": "bench_nuts",
        "quick": args.quick,
        "device": device_info(args),
        "threads": args.threads,
        "thread_env": thread_env,
        "versions": io.package_versions(),
        "argv": list(sys.argv),
        "settings": settings,
        "problem": {"K": args.K, "omega": args.omega, "data_seed": args.data_seed, "gamma": args.gamma, "eta": args.eta,
                    "phase_point": args.phase_point, "theory_by_N": saddles},
        "targets": TARGETS,
        "notes": [
            "ESS = ArviZ bulk ESS over all chains; ESS/s divides by sample_s (post-warmup sampling of all chains).",
            "chain_method 'sequential' with 1 thread: per-core ESS/s; 2 chains on 2 free cores give about 2x.",
            "slowest = min bulk ESS over the latent coordinates of the row's parametrisation (basis-dependent); "
            "ess_min_spectral = min over the spectral sites (parametrisation-independent).",
            "saddle-noncentred-eigh-diag samples the posterior with the saddle-point log Z (a different, approximate "
            "posterior): a speed reference for generic NUTS only.",
        ],
        "rows": rows,
        "complete": False,
        "wall_s": 0.0,
    }

    def save():
        payload["rows"] = sorted(rows, key=lambda r: (r["N"], list(VARIANTS).index(r["variant"])))
        payload["wall_s"] = time.perf_counter() - t_start
        io.write_json_atomic(args.out, payload)

    done = {r["id"] for r in rows}
    print(f"bench_nuts: γ={args.gamma:g} η={args.eta:g} K={args.K} ω={args.omega:g}; N={args.sizes}; "
          f"{args.num_chains} chains × ({args.num_warmup} warmup + {args.num_samples} draws), {chain_method}, "
          f"threads={args.threads}, device={payload['device']['backend']} ({payload['device'].get('device_kind')})")
    for N in args.sizes:
        print(f"  N={N}: theory {saddles[str(N)]}")
    print(table([]), flush=True)
    for N in args.sizes:
        for variant in args.variants:
            rid = row_id(N, variant)
            if rid in done:
                continue
            t_row = time.perf_counter()
            try:
                row = run_row(args, N, variant, chain_method)
            except Exception as exc:  # noqa: BLE001 - record and go on with the other rows
                row = {"id": rid, "N": N, "variant": variant, "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
            row["wall_s"] = time.perf_counter() - t_row
            rows.append(row)
            save()
            print(format_row(row), flush=True)

    payload["complete"] = True
    save()
    print()
    print(table(rows))
    for line in target_summary(rows):
        print(line)
    print(f"\nwrote {args.out}")
    return 1 if any(r.get("status") == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
