"""Command-line interface: ``bayes-sbm SUBCOMMAND ...``.

Each subcommand lives in its own ``_cmd_*`` function registered in
:func:`build_parser`. Errors a user can cause (bad arguments, bad files) are
raised as :class:`UserError` or ``ValueError`` and printed as one line, with
exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser", "UserError"]


class UserError(Exception):
    """An error caused by the user's input, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-sbm",
        description="Bayesian inference in spherical Boltzmann machines (SBMs).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in _REGISTRY:
        register(sub)
    return parser


_REGISTRY: list = []


def _register(fn):
    _REGISTRY.append(fn)
    return fn


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


@_register
def _add_teacher(sub) -> None:
    p = sub.add_parser("teacher", help="draw teacher-student data from a planted SBM (THEORY.md §3)")
    p.add_argument("--N", type=_positive_int, required=True, help="dimension")
    p.add_argument("--K", type=_positive_int, required=True, help="number of samples")
    p.add_argument("--omega", type=_float_list, default=[2.5], help="spike strength(s), comma separated (default 2.5)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="sampling inverse temperature (default 1)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", required=True, help="output data file (.npy or .csv), written atomically")
    p.add_argument("--teacher-out", help="also save W* (.npy)")
    p.set_defaults(func=_cmd_teacher)


def _cmd_teacher(args) -> int:
    import jax

    from . import teacher
    from .io import run_metadata, save_npy_atomic, write_json_atomic

    td = teacher.teacher_student_data(jax.random.key(args.seed), args.N, args.K, args.omega, args.beta)
    out = teacher.save_data(args.out, td.data)
    if args.teacher_out:
        save_npy_atomic(args.teacher_out, td.teacher.W)
    meta = run_metadata(seed=args.seed, N=args.N, K=args.K, omega=args.omega, beta=args.beta)
    write_json_atomic(str(out) + ".json", meta)
    spec = teacher.data_spectrum(td.data)
    print(f"wrote {out}: K = {args.K} points on the sphere |x|^2 = N = {args.N} (seed {args.seed})")
    print("data-correlation eigenvalues c_k: " + ", ".join(f"{c:.6f}" for c in spec.c))
    if len(args.omega) == 1 and args.K == 2 and args.omega[0] > 1:
        w = args.omega[0]
        print(f"large-N prediction (THEORY.md §3): c = ({2 - 1 / w:.6f}, {1 / w:.6f})")
    return 0


@_register
def _add_logz(sub) -> None:
    p = sub.add_parser("logz", help="exact and saddle-point log Z of a coupling matrix W (.npy)")
    p.add_argument("W", help="symmetric N x N matrix saved with numpy (.npy)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="inverse temperature (default 1)")
    p.set_defaults(func=_cmd_logz)


def partition_summary(W, beta: float = 1.0) -> dict:
    """Exact and saddle log Z, μ, condensate and sampler acceptance for βW."""
    import numpy as np

    from . import sphere
    from .distribution import SphericalBoltzmann

    dist = SphericalBoltzmann(W, beta)
    lam = dist.eigenvalues
    n = dist.dimension
    exact = float(sphere.log_partition(lam))
    saddle = float(sphere.log_partition_saddle(lam))
    corrected = float(sphere.log_partition_saddle(lam, gaussian_correction=True))
    return {
        "N": n,
        "beta": beta,
        "log_z": exact,
        "log_z_per_n": exact / n,
        "log_z_saddle": saddle,
        "log_z_saddle_gaussian": corrected,
        "mu": float(dist.lagrange_multiplier),
        "condensate": float(dist.condensate),
        "top_eigenvalue": float(np.max(lam)),
        "sampler_acceptance": float(sphere.sampler_acceptance(lam)),
    }


def _cmd_logz(args) -> int:
    import numpy as np

    path = args.W
    try:
        W = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a .npy array ({exc})") from None
    s = partition_summary(W, args.beta)
    print(f"N = {s['N']}, beta = {s['beta']}")
    print(f"exact log Z          = {s['log_z']:.12g}   ({s['log_z_per_n']:.10f} per N)")
    print(f"saddle log Z         = {s['log_z_saddle']:.12g}   (error {s['log_z_saddle'] - s['log_z']:+.3e})")
    print(f"saddle + Gaussian    = {s['log_z_saddle_gaussian']:.12g}   (error {s['log_z_saddle_gaussian'] - s['log_z']:+.3e})")
    print(f"Lagrange multiplier mu = {s['mu']:.10g} (top eigenvalue of beta W {s['top_eigenvalue']:.10g})")
    print(f"condensate E[y_1^2]/N = {s['condensate']:.8f}")
    print(f"exact sampler acceptance = {s['sampler_acceptance']:.4f}")
    return 0


@_register
def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit the posterior of a model spec (NUTS or SVI) into a run folder")
    p.add_argument("spec", help="model spec (.toml), see models/README.md")
    p.add_argument("--out", required=True, help="run folder (created; an interrupted checkpointed NUTS run resumes)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--store-W", action="store_true", help="also store the N x N coupling draws in inference.nc")
    p.set_defaults(func=_cmd_fit)


def _use_host_devices(num_chains: int) -> None:
    """Expose one XLA host device per chain (up to the cores) so chains run in parallel.

    Must run before JAX initialises its backend; harmless afterwards (no effect).
    """
    import os

    import numpyro

    numpyro.set_host_device_count(max(1, min(int(num_chains), os.cpu_count() or 1)))


def _cmd_fit(args) -> int:
    from .specs import load_spec

    spec = load_spec(args.spec)
    _use_host_devices(spec.inference.num_chains)
    from .runs import fit_spec

    dt, meta = fit_spec(spec, args.out, progress_bar=not args.quiet, store_W=args.store_W)
    print(f"wrote {args.out}/inference.nc ({spec.inference.method}, N = {spec.model.N}, seed {spec.inference.seed}, "
          f"{meta['timing']['wall_s']:.1f} s)")
    print(_posterior_table(dt, meta))
    return 0


def _posterior_table(dt, meta) -> str:
    """Posterior means (± MCSE) of the THEORY.md §4 observables next to their theory values."""
    import numpy as np

    theory = meta.get("theory", {})
    post = dt["posterior"]
    rows = [
        ("lambda_1", np.asarray(post["lam_top"])[..., 0], (theory.get("lam") or [np.nan])[0]),
        ("u_1", np.asarray(post["u"])[..., 0], (theory.get("u") or [np.nan])[0]),
        ("M (condensate)", np.asarray(post["M"]), theory.get("M", np.nan)),
        ("e_1' W e_1", np.asarray(post["signal"])[..., 0], (theory.get("signal") or [np.nan])[0]),
        ("mu", np.asarray(post["mu"]), theory.get("mu", np.nan)),
        ("(1/N) log Z(W)", np.asarray(post["log_z_per_n"]), theory.get("log_z_per_n", np.nan)),
    ]
    phase = theory.get("phase", "?")
    lines = [f"phase (theory, data c): {phase}", f"{'observable':18s} {'posterior mean':>15s} {'mcse':>9s} {'theory':>10s} {'diff':>10s}"]
    for name, draws, th in rows:
        mean, mcse = _mean_mcse(draws)
        lines.append(f"{name:18s} {mean:15.5f} {mcse:9.5f} {th:10.5f} {mean - th:+10.5f}")
    if "divergences" in meta:
        ls = meta.get("latent_summary", {})
        lines.append(
            f"NUTS: {meta['divergences']} divergences; latent dim {ls.get('dim')}: min ESS bulk {ls.get('min_ess_bulk', float('nan')):.0f}, "
            f"max R-hat {ls.get('max_r_hat', float('nan')):.3f}"
        )
    return "\n".join(lines)


def _mean_mcse(draws):
    import arviz as az
    import numpy as np

    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 1:
        draws = draws[None]
    mean = float(draws.mean())
    try:
        ess = float(az.ess(draws))
    except Exception:  # too few draws for ESS: fall back to the plain count
        ess = float(draws.size)
    return mean, float(draws.std() / np.sqrt(max(ess, 1.0)))


@_register
def _add_evidence(sub) -> None:
    p = sub.add_parser("evidence", help="log evidence by TI, stepping stone and SVI bounds, against theory")
    p.add_argument("spec", help="model spec (.toml)")
    p.add_argument("--json", dest="json_out", help="write the estimates as JSON (atomic)")
    p.add_argument("--rungs", type=_positive_int, default=12, help="initial TI rungs (default 12)")
    p.add_argument("--max-rungs", type=_positive_int, default=20, help="TI rungs after adaptive bisection (default 20)")
    p.add_argument("--samples", type=_positive_int, default=500, help="NUTS draws per rung (default 500)")
    p.add_argument("--svi-steps", type=_positive_int, help="SVI steps (default: the spec's)")
    p.add_argument("--no-ti", action="store_true", help="skip thermodynamic integration / stepping stone")
    p.add_argument("--no-svi", action="store_true", help="skip the SVI estimators")
    p.set_defaults(func=_cmd_evidence)


def evidence_report(spec, *, rungs=12, max_rungs=20, samples=500, svi_steps=None, ti=True, svi=True, progress_bar=False) -> dict:
    """All evidence estimators for a spec, in the JSON layout of ``bayes-sbm evidence --json``."""
    import time

    import jax

    from . import evidence, inference, theory
    from .runs import problem_from_spec

    problem = problem_from_spec(spec)
    N = problem.N
    key_ti, key_svi, key_is = jax.random.split(jax.random.key(spec.inference.seed), 3)
    th = float(theory.log_evidence(problem.frame.c, problem.gamma, problem.eta))
    report = {"N": N, "K": problem.K, "gamma": problem.gamma, "eta": problem.eta, "c": problem.frame.c.tolist(),
              "theory": th * N, "theory_per_n": th, "phase": theory.posterior_saddle(problem.frame.c, problem.gamma, problem.eta).phase,
              "estimators": {}, "seconds": {}}
    if ti:
        t0 = time.perf_counter()
        ladder = evidence.LadderSettings(num_rungs=rungs, max_rungs=max(rungs, max_rungs), num_samples=samples, progress_bar=progress_bar)
        res = evidence.thermodynamic_integration(key_ti, problem, ladder)
        report["estimators"]["ti"] = res.ti.as_dict()
        report["estimators"]["stepping_stone"] = res.stepping_stone.as_dict()
        report["seconds"]["ti+stepping_stone"] = time.perf_counter() - t0
    if svi:
        t0 = time.perf_counter()
        settings = inference.SviSettings(guide=spec.inference.svi_guide if problem.parametrization == "aligned" else "normal",
                                         num_steps=svi_steps or spec.inference.svi_steps,
                                         learning_rate=spec.inference.svi_learning_rate, num_draws=10, progress_bar=progress_bar)
        fit = inference.run_svi(key_svi, problem, settings)
        est = evidence.svi_evidence(key_is, fit)
        for name in ("elbo", "importance", "iwae"):
            report["estimators"][name] = est[name].as_dict()
        report["seconds"]["svi"] = time.perf_counter() - t0
    return report


def _print_evidence(report: dict) -> None:
    N = report["N"]
    print(f"log evidence, N = {N}, K = {report['K']}, gamma = {report['gamma']}, eta = {report['eta']}, phase {report['phase']}")
    print(f"{'estimator':16s} {'log Y':>12s} {'se':>9s} {'(1/N) log Y':>12s} {'se/N':>9s} {'theory/N':>10s} {'diff/N':>10s}")
    for name, e in report["estimators"].items():
        print(f"{name:16s} {e['log_evidence']:12.4f} {e['se']:9.4f} {e['per_n']:12.5f} {e['se_per_n']:9.5f} "
              f"{report['theory_per_n']:10.5f} {e['per_n'] - report['theory_per_n']:+10.5f}")


def _cmd_evidence(args) -> int:
    from .io import run_metadata, write_json_atomic
    from .specs import load_spec

    spec = load_spec(args.spec)
    report = evidence_report(spec, rungs=args.rungs, max_rungs=args.max_rungs, samples=args.samples,
                             svi_steps=args.svi_steps, ti=not args.no_ti, svi=not args.no_svi)
    _print_evidence(report)
    if args.json_out:
        write_json_atomic(args.json_out, report | {"meta": run_metadata(seed=spec.inference.seed, spec=spec.to_dict())})
    return 0


@_register
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on a small default problem (fit, evidence, divergences vs theory)")
    p.add_argument("--spec", default=None, help="NUTS spec (default: models/demo.toml)")
    p.add_argument("--svi-spec", default=None, help="SVI spec (default: models/demo_svi.toml)")
    p.add_argument("--out", default="runs/demo", help="folder for the demo runs (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.set_defaults(func=_cmd_demo)


def _default_spec_path(name: str) -> str:
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent / "models" / name
    if here.exists():
        return str(here)
    raise UserError(f"cannot find models/{name}; pass --spec")


def _cmd_demo(args) -> int:
    from pathlib import Path

    from .specs import load_spec

    spec = load_spec(args.spec or _default_spec_path("demo.toml"))
    svi_spec = load_spec(args.svi_spec or _default_spec_path("demo_svi.toml"))
    if args.quick:
        spec = spec.with_overrides({"model.N": 8, "inference.num_warmup": 100, "inference.num_samples": 100})
        svi_spec = svi_spec.with_overrides({"model.N": 8, "inference.svi_steps": 300, "inference.svi_draws": 100})
    _use_host_devices(spec.inference.num_chains)
    from . import predictive
    from .runs import fit_spec

    out = Path(args.out)
    m = spec.model
    print(f"bayes_sbm demo: K = {spec.data.K} samples of a rank-one teacher (omega = {spec.data.omega}), "
          f"N = {m.N}, gamma = {m.gamma}, eta = {m.eta}")
    print("\n== posterior (NUTS) vs THEORY.md §4 ==")
    dt, meta = fit_spec(spec, out / "nuts", progress_bar=False)
    print(_posterior_table(dt, meta))
    print("\n== posterior (SVI, " + svi_spec.inference.svi_guide + " guide) vs THEORY.md §4 ==")
    dt_svi, meta_svi = fit_spec(svi_spec, out / "svi", progress_bar=False)
    print(_posterior_table(dt_svi, meta_svi))

    print("\n== log evidence vs THEORY.md §5 ==")
    report = evidence_report(spec, rungs=4 if args.quick else 10, max_rungs=4 if args.quick else 14,
                             samples=100 if args.quick else 400, svi_steps=svi_spec.inference.svi_steps)
    _print_evidence(report)

    print("\n== teacher-student divergences vs THEORY.md §6 (per N) ==")
    if spec.data.source == "teacher" and spec.data.K == 2:
        import jax

        res = predictive.predict_run(out / "nuts", m.beta, jax.random.key(spec.inference.seed + 1), None, 200 if args.quick else 1000)
        _print_predict(res)
    else:
        print("(theory needs K = 2 samples of a rank-one teacher)")
    return 0


def _print_predict(r: dict) -> None:
    """Table of typical and predictive KLs (per N) next to THEORY.md §6."""
    print(f"{'quantity (per N)':34s} {'finite N':>12s} {'± SE':>10s} {'theory':>12s} {'difference':>12s}")
    for row in r["rows"]:
        th = row["theory_per_n"]
        th_text = f"{th:12.6f}" if th is not None else f"{'-':>12s}"
        diff_text = f"{row['difference']:+12.2e}" if row["difference"] is not None else f"{'-':>12s}"
        print(f"{row['quantity']:34s} {row['value_per_n']:12.6f} {row['se_per_n']:10.2e} {th_text} {diff_text}")


@_register
def _add_theory(sub) -> None:
    p = sub.add_parser(
        "theory",
        help="large-N theory: posterior saddle and evidence (--c) or teacher-student KLs (--omega), THEORY.md §4-6",
    )
    p.add_argument("--c", help="data eigenvalues, comma separated: print the §4 saddle and the §5 evidence")
    p.add_argument("--omega", type=float, help="rank-one teacher eigenvalue > 1: print the §6 divergences (K = 2)")
    p.add_argument("--gamma", type=float, required=True, help="prior precision gamma > 0")
    p.add_argument("--eta", type=float, required=True, help="posterior power eta > 0")
    p.add_argument("--beta", type=float, help="sampling inverse temperature for --omega (default 1)")
    p.set_defaults(func=_cmd_theory)


def _cmd_theory(args) -> int:
    from . import theory

    if args.c is None and args.omega is None:
        raise ValueError("give --c (posterior saddle and evidence) and/or --omega (teacher-student divergences)")
    if args.beta is not None and args.omega is None:
        raise ValueError(f"--beta {args.beta} needs --omega (it sets the sampler of the typical student)")
    if args.c is not None:
        try:
            c = [float(v) for v in args.c.split(",")]
        except ValueError:
            raise ValueError(f"--c must be comma-separated numbers, got {args.c!r}") from None
        ev = theory.evidence_terms(c, args.gamma, args.eta)
        s = ev.saddle
        print(f"posterior saddle (THEORY.md §4): c = ({', '.join(f'{v:g}' for v in s.c)}), "
              f"gamma = {args.gamma:g}, eta = {args.eta:g}, gamma*eta = {s.kappa:.12g}")
        print(f"phase = {s.phase}")
        for name in ("mu", "M", "edge"):
            print(f"{name} = {getattr(s, name):.12g}")
        print(f"d = {s.d}")
        print(f"o = {s.o}")
        print(f"{'k':>3s} {'c_k':>14s} {'g':>20s} {'u':>20s} {'xi':>20s} {'lam':>20s}")
        for k in range(s.c.size):
            print(f"{k + 1:3d} {s.c[k]:14.8g} {s.g[k]:20.12g} {s.u[k]:20.12g} {s.xi[k]:20.12g} {s.lam[k]:20.12g}")
        print(f"log_evidence = {ev.log_evidence:.12g}   ((1/N) log Y, THEORY.md §5, K = sum(c))")
    if args.omega is not None:
        beta = 1.0 if args.beta is None else args.beta
        r = theory.teacher_student_kls(args.gamma, args.eta, args.omega)
        st = theory.sampling_state(args.gamma, args.eta, args.omega, beta)
        c1, c2 = theory.teacher_data_eigenvalues(args.omega)
        if args.c is not None:
            print()
        print(f"teacher-student divergences per N (THEORY.md §6): omega = {args.omega:g}, K = 2, "
              f"c = ({c1:.12g}, {c2:.12g}), gamma = {args.gamma:g}, eta = {args.eta:g}")
        print(f"phase = {r.phase}")
        for name in ("fwd_typ", "rev_typ", "fwd_pp", "rev_pp"):
            print(f"{name} = {getattr(r, name):.12g}")
        print(f"beta = {beta:g}")
        print(f"sampling_phase = {st.phase}")
        print(f"fwd_typ_beta = {st.forward_kl:.12g}")
    return 0


def _load_run_folder(path: str):
    """``(datatree, meta)`` of a run folder written by ``bayes-sbm fit``; UserError if incomplete."""
    import json
    from pathlib import Path

    import arviz as az

    run = Path(path)
    if not run.is_dir():
        raise UserError(f"run folder not found: {run}")
    for name in ("inference.nc", "meta.json"):
        if not (run / name).is_file():
            raise UserError(f"{run}: no {name} (is this a run folder written by 'bayes-sbm fit'?)")
    try:
        meta = json.loads((run / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{run / 'meta.json'}: not valid JSON ({exc})") from None
    try:
        dt = az.from_netcdf(run / "inference.nc")
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{run / 'inference.nc'}: cannot be read as a DataTree ({first})") from None
    if "posterior" not in dt.children:
        raise UserError(f"{run / 'inference.nc'}: no posterior group")
    return dt, meta


@_register
def _add_diagnose(sub) -> None:
    p = sub.add_parser("diagnose", help="posterior summary vs THEORY.md §4, sampler diagnostics and plots of a run")
    p.add_argument("run", metavar="RUN", help="run folder (inference.nc and meta.json)")
    p.add_argument("--out", help="output folder for summary.csv and the PNGs (default RUN/diagnostics)")
    p.set_defaults(func=_cmd_diagnose)


def _cmd_diagnose(args) -> int:
    from pathlib import Path

    from . import diagnostics, plots

    dt, meta = _load_run_folder(args.run)
    out = Path(args.out) if args.out else Path(args.run) / "diagnostics"
    theory = diagnostics.theory_from_datatree(dt, meta)
    table = diagnostics.summary_table(dt, theory=theory or {})
    report = diagnostics.sampling_report(dt, meta=meta, table=table)
    csv_path = diagnostics.write_summary_csv(table, out / "summary.csv")
    pngs = plots.diagnostic_plots(dt, out, theory=theory or {}, table=table)
    try:
        c, gamma, eta = diagnostics.run_parameters(dt, meta)
        params = f"gamma = {gamma:g}, eta = {eta:g}, c = ({', '.join(f'{v:.6g}' for v in c)})"
    except ValueError:
        params = "gamma, eta, c unknown"
    phase = f"THEORY.md §4 phase {theory['phase']}" if theory else "no theory values"
    print(f"run {args.run}: {report['method']}, {params}; {phase}")
    print()
    print(diagnostics.format_table(table))
    print("(lam_top[0] is lambda_1; theory = large-N value, diff = mean - theory)")
    print()
    print(diagnostics.format_report(report))
    print()
    print(f"wrote {csv_path} and {len(pngs)} plots in {out}: " + ", ".join(p.name for p in pngs))
    return 0


@_register
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare lambda_1, u_1 and M across runs, with THEORY.md §4 values")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (inference.nc and meta.json)")
    p.add_argument("--out", help="output folder for comparison.csv, forest.png, density.png (default: 'compare' next to the first run)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    import math
    from pathlib import Path

    from . import diagnostics, plots

    loaded = [(run, *_load_run_folder(run)) for run in args.runs]
    names = [Path(run).resolve().name or str(run) for run in args.runs]
    if len(set(names)) < len(names):  # same folder names: label by the paths as given
        names = [str(run) for run in args.runs]
    if len(set(names)) < len(names):
        raise UserError("the same run folder is given twice")
    dts = {name: dt for name, (_, dt, _) in zip(names, loaded)}
    metas = {name: meta for name, (_, _, meta) in zip(names, loaded)}
    theories = {name: diagnostics.theory_from_datatree(dts[name], metas[name]) for name in names}
    table = diagnostics.comparison_table(dts, metas, theories)
    out = Path(args.out) if args.out else Path(args.runs[0]).resolve().parent / "compare"
    csv_path = diagnostics.write_summary_csv(table, out / "comparison.csv")
    pngs = plots.compare_plots(dts, out, theories={k: v for k, v in theories.items() if v is not None})

    def cell(row, key):
        mean, sd, th = row[f"{key}_mean"], row[f"{key}_sd"], row[f"{key}_theory"]
        text = f"{mean:.4f} ± {sd:.4f}" if math.isfinite(mean) else "-"
        return text + (f" [{th:.4f}]" if math.isfinite(th) else " [-]")

    w = max(len("run"), *(len(n) for n in names))
    print(f"{'run':<{w}s} {'N':>6s} {'gamma':>8s} {'eta':>8s} {'method':>6s} {'phase':>5s}  "
          f"{'lambda_1: mean ± sd [theory]':>30s}  {'u_1: mean ± sd [theory]':>30s}  {'M: mean ± sd [theory]':>30s}")
    for row in table.rows:
        n = f"{row['N']:.0f}" if math.isfinite(row["N"]) else "-"
        print(f"{row['run']:<{w}s} {n:>6s} {row['gamma']:8.4g} {row['eta']:8.4g} {row['method']:>6s} {row['phase']:>5s}  "
              f"{cell(row, 'lam_1'):>30s}  {cell(row, 'u_1'):>30s}  {cell(row, 'M'):>30s}")
    print()
    print(f"wrote {csv_path}, " + ", ".join(str(p) for p in pngs))
    return 0


@_register
def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="typical and predictive KLs of a run to its teacher, vs THEORY.md §6")
    p.add_argument("run", metavar="RUN", help="run folder (inference.nc, data.npy, meta.json)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="sampling inverse temperature (default 1)")
    p.add_argument("--num-points", type=_positive_int, default=2000, help="Monte Carlo points per predictive KL (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the Monte Carlo (default 0)")
    p.add_argument("--teacher", help="teacher couplings W* (.npy); default: RUN/teacher.npy, else regenerated from the spec's data seed")
    p.add_argument("--json", metavar="OUT", help="also write the full result as JSON (atomically)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    import jax
    import numpy as np

    from . import predictive
    from .io import write_json_atomic

    if args.num_points < 2:
        raise UserError(f"--num-points: need at least 2 points for a standard error, got {args.num_points}")
    teacher_W = None
    if args.teacher:
        try:
            teacher_W = np.load(args.teacher, allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"file not found: {args.teacher}") from None
        except ValueError as exc:
            raise UserError(f"{args.teacher}: not a .npy array ({exc})") from None
    r = predictive.predict_run(args.run, args.beta, jax.random.key(args.seed), teacher_W, args.num_points)
    print(f"run {args.run}: N = {r['N']}, K = {r['K']}, gamma = {r['gamma']:g}, eta = {r['eta']:g}, beta = {r['beta']:g}, "
          f"{r['num_draws']} draws ({r['num_chains']} chains), teacher {r['teacher']}")
    print()
    print(f"{'quantity (per N)':34s} {'finite N':>12s} {'± SE':>10s} {'theory':>12s} {'difference':>12s}")
    for row in r["rows"]:
        th = row["theory_per_n"]
        th_text = f"{th:12.6f}" if th is not None else f"{'-':>12s}"
        diff_text = f"{row['difference']:+12.2e}" if row["difference"] is not None else f"{'-':>12s}"
        print(f"{row['quantity']:34s} {row['value_per_n']:12.6f} {row['se_per_n']:10.2e} {th_text} {diff_text}")
    pf, pr = r["predictive"]["forward"], r["predictive"]["reverse"]
    print()
    print(f"Jensen bias of log-mean-exp (delta method, per N): forward {pf['bias_per_n']:+.2e}, reverse {pr['bias_per_n']:+.2e} "
          f"(corrected: {pf['corrected_per_n']:.6f}, {pr['corrected_per_n']:.6f}); "
          f"median weight ESS {pf['weight_ess']:.1f} / {pr['weight_ess']:.1f}")
    if not r["predictive"]["bias_reliable"]:
        print("warning: few effective draws per point: log-mean-exp is dominated by a few draws and its bias exceeds the estimate")
    if r["theory_note"]:
        print(f"note: {r['theory_note']}")
    if args.json:
        write_json_atomic(args.json, r)
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"bayes-sbm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
