"""Tempered posteriors: how η changes λ_1, u_1, M and the KLs at fixed γ (THEORY.md §3, §4, §6).

Checks, at fixed prior strength γ = 0.5 (K = 2 rank-one teacher, ω = 2.5,
teacher seed 0, N = 200 and 1000 by default), the η dependence of

* the THEORY.md §4 spectral saddle point: λ_1, u_1 and M of the tempered
  posterior P_η (§3: GOE precision γη, likelihood raised to η), as the
  curves of :func:`bayes_sbm.theory.posterior_saddle` at the N → ∞ data
  spectrum c = (2 − 1/ω, 1/ω) = (1.6, 0.4) on a fine η grid, with the phases
  labelled (at γ = 0.5: SG for η ≲ 0.195, FMe up to η ≈ 0.74, FMo above;
  a second mode becomes an outlier, u_2 > 0, at large η — the PM phases
  need γ ≥ c_1 = 1.6 and are not reached at γ = 0.5);
* the THEORY.md §6 teacher–student divergences per N — typical forward
  ⟨D(P*‖P_W)⟩, typical reverse ⟨D(P_W‖P*)⟩, predictive forward D(P*‖P_pp)
  and predictive reverse D(P_pp‖P*) — as the curves of
  :func:`bayes_sbm.theory.teacher_student_kls` (γ, η, ω = 2.5).

For each (N, η) of the study (default N ∈ {200, 1000}, η ∈ {0.5, 1, 2, 5}:
FMe below η ≈ 0.74, FMo above) the posterior comes from the teacher–student
sweep ``models/sweeps/teacher_student.toml`` at γ = 0.5 (``models/fmo.toml``
with ``model.N``, ``model.eta``, ``model.gamma`` overridden, band
representation of THEORY.md §8; run on Dask distributed, shared with the
double-descent and temperature-tuning studies; a rerun skips finished
points).  The points are the posterior means of λ_1, u_1, M (± MCSE), the
exact typical KLs (:func:`bayes_sbm.reports.run_typical_kls`: band draws,
averaged exactly over the Haar block) and, at N ≤
``bayes_sbm.runs.BAND_PREDICTIVE_MAX_N`` (300), the Monte Carlo predictive
KLs of :func:`bayes_sbm.reports.predict_run` with their standard errors and
Jensen-bias estimates (above it the log-mean-exp weights degenerate and the
dense draws cost N² each: the predictive KLs are left out there).

Outputs (in ``--out``, default ``analysis/tempered_posteriors/results``):

* ``tempered.csv`` — one row per (η, quantity): value, standard error (MCSE
  for the observables, Monte Carlo SE for the KLs), theory at the fitted data
  spectrum (observables only: §6 has no finite-c KL values), theory at
  N → ∞, differences, R-hat / ESS, divergences, sampling time, and for the
  predictive KLs the Jensen bias and the bias-corrected value;
* ``theory_curves.csv`` — the theory curves on the fine η grid;
* ``observables_vs_eta.png`` — λ_1, u_1, M vs η: points with error bars
  over the theory lines, phase regions shaded;
* ``kls_vs_eta.png`` — the four KLs vs η, same layout (open markers: the
  bias-corrected predictive KLs);
* ``compare/forest.png``, ``compare/density.png`` — ArviZ comparison plots
  of the tempered runs (:func:`bayes_sbm.plots.compare_plots`);
* ``metadata.json`` — versions, seeds, settings, run folders, timings
  (the run folders are those of the sweep; ``bayes-sbm diagnose`` works on
  each ``<point>/run``).

``--quick``: N = 10, η ∈ {1, 3}, 2 chains of 100 warm-up + 100 draws of the
band model in ``OUT/runs``, 200 predictive points (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    C_LIMIT, OMEGA, PHASE_COLORS, TEACHER_STUDENT_SWEEP, add_teacher_student_options, component, finish_study,
    pin_threads, run_study_sweep, start_study, study_parser, summary_row, teacher_student_sweep, write_csv,
)

pin_threads()  # before NumPy/JAX are imported (the Dask workers pin themselves)

import math  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import diagnostics, reports, sweep, theory  # noqa: E402
from bayes_sbm.io import write_json_atomic  # noqa: E402
from bayes_sbm.plots import compare_plots, save_figure  # noqa: E402
from bayes_sbm.runs import BAND_PREDICTIVE_MAX_N, load_run  # noqa: E402

HERE = Path(__file__).resolve().parent

GAMMA = 0.5
K = 2
SIZES = (200, 1000)
ETAS = (0.5, 1.0, 2.0, 5.0)
QUICK_N = 10
QUICK_ETAS = (1.0, 3.0)
QUICK_KL_POINTS = 200
KL_POINTS = 2000
ETA_GRID = (0.1, 6.0)

#: (quantity, posterior variable, component, key of the theory reference (ObservableReference.as_dict()), label)
OBSERVABLES = (
    ("lam_1", "lam_top", 0, "lam", r"$\lambda_1$"),
    ("u_1", "u", 0, "u", r"$u_1$"),
    ("M", "M", None, "M", r"$M$"),
)
#: (quantity, predict_run section, direction, theory field, label)
KLS = (
    ("fwd_typ", "typical", "forward", "fwd_typ", r"typical forward $\langle D(P^*\|P_W)\rangle/N$"),
    ("rev_typ", "typical", "reverse", "rev_typ", r"typical reverse $\langle D(P_W\|P^*)\rangle/N$"),
    ("fwd_pp", "predictive", "forward", "fwd_pp", r"predictive forward $D(P^*\|P_{pp})/N$"),
    ("rev_pp", "predictive", "reverse", "rev_pp", r"predictive reverse $D(P_{pp}\|P^*)/N$"),
)
QUANTITIES = tuple(o[0] for o in OBSERVABLES) + tuple(k[0] for k in KLS)
COLUMNS = (
    "eta", "N", "gamma", "omega", "quantity", "value", "se", "theory_data_c", "diff", "theory_limit", "diff_limit",
    "phase", "phase_limit", "r_hat", "min_ess", "divergences", "sampling_s",
    "kl_ess", "kl_bias_per_n", "kl_corrected_per_n", "kl_min_weight_ess", "kl_reliable", "kl_points",
    "c_1", "c_2", "num_warmup", "num_samples", "num_chains",
)
CURVE_COLUMNS = ("eta", "phase", "d", "lam_1", "u_1", "u_2", "M", "fwd_typ", "rev_typ", "fwd_pp", "rev_pp")
CSV_NAME = "tempered.csv"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def kl_report(point, kl_points: int, max_draws: int | None) -> dict:
    """The KLs of a point (:func:`bayes_sbm.reports.predict_run`): typical and Monte Carlo predictive at
    N ≤ BAND_PREDICTIVE_MAX_N, the typical ones alone above (band route, no N × N matrices)."""
    return reports.predict_run(point.folder / sweep.RUN_DIR, beta=1.0, key=jax.random.key(point.spec.inference.seed + 1),
                               num_points=kl_points, max_draws=max_draws)


# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------
def rows_for_run(spec, dt, meta: dict, kl: dict, kl_points: int) -> list[dict]:
    m = spec.model
    th_data = meta.get("theory") or {}
    if "error" in th_data:
        th_data = {}
    th_lim = theory.observable_reference(C_LIMIT, m.gamma, m.eta).as_dict()
    table = diagnostics.summary_table(dt, var_names=("lam_top", "u", "M"), theory={})
    c = list(meta.get("c", [])) + [math.nan, math.nan]
    common = {
        "eta": float(m.eta), "N": int(m.N), "gamma": float(m.gamma), "omega": float(spec.data.omega),
        "phase": th_data.get("phase", "n/a"), "phase_limit": th_lim["phase"],
        "divergences": int(meta.get("divergences", -1)),
        "sampling_s": float(meta.get("timing", {}).get("wall_s", math.nan)),
        "c_1": float(c[0]), "c_2": float(c[1]),
        "num_warmup": spec.inference.num_warmup, "num_samples": spec.inference.num_samples,
        "num_chains": spec.inference.num_chains,
    }
    rows = []
    for q, var, index, key, _ in OBSERVABLES:
        r = summary_row(table, var, index)
        t_data, t_lim = component(th_data.get(key), index), component(th_lim.get(key), index)
        rows.append(common | {
            "quantity": q, "value": float(r["mean"]), "se": float(r["mcse_mean"]),
            "theory_data_c": t_data, "diff": float(r["mean"]) - t_data,
            "theory_limit": t_lim, "diff_limit": float(r["mean"]) - t_lim,
            "r_hat": float(r["r_hat"]), "min_ess": float(np.nanmin([r["ess_bulk"], r["ess_tail"]])),
        })
    th_kl = kl.get("theory") or {}
    for q, section, direction, field, _ in KLS:
        if not kl.get(section):
            continue
        e = kl[section][direction]
        t_lim = _num(th_kl.get(field))
        extra = {"kl_ess": _num(e.get("ess"))}
        if section == "predictive":
            extra = {
                "kl_bias_per_n": _num(e.get("bias_per_n")),
                "kl_corrected_per_n": _num(e.get("corrected_per_n")),
                "kl_min_weight_ess": _num(e.get("min_weight_ess")),
                # predict_run's flag: median weight ESS ≥ predictive.MIN_WEIGHT_ESS in both directions
                "kl_reliable": bool(kl[section].get("bias_reliable", False)),
                "kl_points": int(kl_points),
            }
        rows.append(common | extra | {
            "quantity": q, "value": float(e["per_n"]), "se": float(e["se_per_n"]),
            "theory_data_c": math.nan, "diff": math.nan,  # THEORY.md §6 is stated at c = (2 − 1/ω, 1/ω) only
            "theory_limit": t_lim, "diff_limit": float(e["per_n"]) - t_lim,
            "r_hat": math.nan, "min_ess": math.nan,
        })
    return rows


def theory_curves(etas) -> list[dict]:
    rows = []
    for eta in etas:
        s = theory.posterior_saddle(C_LIMIT, GAMMA, float(eta))
        row = {"eta": float(eta), "phase": s.phase, "d": int(s.d), "lam_1": float(s.lam[0]), "u_1": float(s.u[0]),
               "u_2": float(s.u[1]), "M": float(s.M)}
        try:
            k = theory.teacher_student_kls(GAMMA, float(eta), OMEGA)
            row |= {"fwd_typ": k.fwd_typ, "rev_typ": k.rev_typ, "fwd_pp": k.fwd_pp, "rev_pp": k.rev_pp}
        except ValueError:
            row |= {"fwd_typ": math.nan, "rev_typ": math.nan, "fwd_pp": math.nan, "rev_pp": math.nan}
        rows.append(row)
    return rows


def phase_boundaries(curves: list[dict]) -> list[dict]:
    """η where the §4 phase (or the number d of condensed modes) changes along the grid (geometric midpoints)."""
    out = []
    for a, b in zip(curves[:-1], curves[1:]):
        if (a["phase"], a["d"]) != (b["phase"], b["d"]):
            out.append({"eta": float(math.sqrt(a["eta"] * b["eta"])), "from": f"{a['phase']} (d={a['d']})",
                        "to": f"{b['phase']} (d={b['d']})"})
    return out


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------
def _shade_phases(ax, curves: list[dict], label: bool) -> None:
    etas = np.array([c["eta"] for c in curves])
    phases = [c["phase"] for c in curves]
    start = 0
    for i in range(1, len(phases) + 1):
        if i == len(phases) or phases[i] != phases[start]:
            lo = etas[start] if start == 0 else math.sqrt(etas[start - 1] * etas[start])
            hi = etas[-1] if i == len(phases) else math.sqrt(etas[i - 1] * etas[i])
            ax.axvspan(lo, hi, color=PHASE_COLORS.get(phases[start], "0.8"), alpha=0.08, linewidth=0)
            if label:
                ax.text(math.sqrt(lo * hi), 0.98, phases[start], transform=ax.get_xaxis_transform(), ha="center",
                        va="top", fontsize=8, color=PHASE_COLORS.get(phases[start], "0.3"))
            start = i


def _rows_of(rows: list[dict], q: str) -> list[dict]:
    return sorted((r for r in rows if r["quantity"] == q), key=lambda r: r["eta"])


def _finish_axis(ax, rows: list[dict]) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(r"$\eta$")
    ax.grid(True, alpha=0.3)
    etas = sorted({r["eta"] for r in rows})
    ticks = sorted(set(etas) | {0.1, 1.0})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def plot_observables(rows, curves, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
    grid = np.array([c["eta"] for c in curves])
    Ns = sorted({int(r["N"]) for r in rows})
    for ax, (q, _, _, _, label) in zip(axes, OBSERVABLES):
        _shade_phases(ax, curves, label=True)
        ax.plot(grid, [c[q] for c in curves], color="k", linewidth=1.4, label="theory, N → ∞ (c = 1.6, 0.4)")
        if q == "u_1":
            ax.plot(grid, [c["u_2"] for c in curves], color="0.5", linewidth=1.0, linestyle="--", label=r"theory $u_2$")
        for k, N in enumerate(Ns):
            pts = [r for r in _rows_of(rows, q) if int(r["N"]) == N]
            if pts:
                eta = np.array([r["eta"] for r in pts])
                ax.errorbar(eta, [r["value"] for r in pts], yerr=[r["se"] for r in pts], color=f"C{k}", marker="os^D"[k % 4],
                            linestyle="none", capsize=3, label=f"posterior mean ± MCSE, N = {N}")
                ax.plot(eta, [r["theory_data_c"] for r in pts], color=f"C{k}", marker="x", linestyle="none", markersize=8,
                        label=f"theory at the fitted data c, N = {N}")
        ax.set_title(label)
        _finish_axis(ax, rows)
    axes[0].legend(fontsize=8, loc="center right")
    fig.suptitle(rf"Tempered posteriors at $\gamma$ = {GAMMA:g}, $\omega$ = {OMEGA:g}, K = {K}: THEORY.md §4 vs NUTS")
    return save_figure(fig, path)


def plot_kls(rows, curves, path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
    grid = np.array([c["eta"] for c in curves])
    Ns = sorted({int(r["N"]) for r in rows})
    for ax, (q, section, _, _, label) in zip(axes.ravel(), KLS):
        _shade_phases(ax, curves, label=True)
        ax.plot(grid, [c[q] for c in curves], color="k", linewidth=1.4, label="theory, N → ∞ (THEORY.md §6)")
        for k, N in enumerate(Ns):
            pts = [r for r in _rows_of(rows, q) if int(r["N"]) == N]
            good = [r for r in pts if section != "predictive" or r.get("kl_reliable") in (True, "True")]
            bad = [r for r in pts if r not in good]
            if good:
                ax.errorbar([r["eta"] for r in good], [r["value"] for r in good], yerr=[r["se"] for r in good], color=f"C{k}",
                            marker="os^D"[k % 4], linestyle="none", capsize=3, label=f"estimate ± SE, N = {N}")
                if section == "predictive":
                    ax.plot([r["eta"] for r in good], [r["kl_corrected_per_n"] for r in good], color=f"C{k}", marker="o",
                            markerfacecolor="white", linestyle="none", label=f"Jensen-bias corrected, N = {N}")
            if bad:
                ax.plot([r["eta"] for r in bad], [r["value"] for r in bad], color="0.6", marker="x", linestyle="none",
                        label=f"N = {N}: weights dominated by a few draws (no estimate)")
        ax.set_title(label)
        ax.set_ylabel("per N")
        _finish_axis(ax, rows)
        ax.legend(fontsize=8)
    fig.suptitle(rf"Teacher–student KLs vs $\eta$ at $\gamma$ = {GAMMA:g}, $\omega$ = {OMEGA:g} (β = 1)")
    return save_figure(fig, path)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results",
                     f"smoke test: N = {QUICK_N}, eta in {QUICK_ETAS}, 2 chains of 100/100 draws, {QUICK_KL_POINTS} KL points")
    add_teacher_student_options(p, ",".join(map(str, SIZES)), ",".join(f"{e:g}" for e in ETAS), f"{GAMMA:g} (fixed)")
    p.add_argument("--kl-points", type=int, help=f"Monte Carlo points per direction for the predictive KLs (default {KL_POINTS})")
    p.add_argument("--max-draws", type=int, help="thin the posterior draws to at most this many for the KLs (default: all)")
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    sizes = tuple(args.sizes) if args.sizes else ((QUICK_N,) if args.quick else SIZES)
    etas = tuple(float(e) for e in args.etas) if args.etas else (QUICK_ETAS if args.quick else ETAS)
    if args.gammas and list(args.gammas) != [GAMMA]:
        print(f"error: --gammas: this study runs at gamma = {GAMMA:g} only, got {args.gammas}", file=sys.stderr)
        return 2
    kl_points = args.kl_points if args.kl_points is not None else (QUICK_KL_POINTS if args.quick else KL_POINTS)
    csv_path = out / CSV_NAME
    sw = teacher_student_sweep(args, out, {"model.N": list(sizes), "model.eta": list(etas), "model.gamma": [GAMMA]})
    points, failed, _, sweep_wall = run_study_sweep(sw, analyse_only=args.analyse_only, scheduler=args.scheduler,
                                                    workers=args.workers, processes=not args.quick)
    rows, runs_info, dts = [], {}, {}
    for point in points:
        run_dir = point.folder / sweep.RUN_DIR
        dt, meta = load_run(run_dir)
        t0 = time.perf_counter()
        kl = kl_report(point, kl_points, args.max_draws)
        t_kl = time.perf_counter() - t0
        write_json_atomic(out / "kls" / f"{point.name}.json", kl)
        new = rows_for_run(point.spec, dt, meta, kl, kl_points)
        rows += new
        N, eta = int(point.spec.model.N), float(point.spec.model.eta)
        runs_info[point.name] = {"run": str(run_dir), "fit_wall_s": meta.get("timing", {}).get("wall_s"), "kl_wall_s": t_kl,
                                 "phase": new[0]["phase"], "divergences": new[0]["divergences"], "c": meta.get("c")}
        dts[f"eta={eta:g}" + (f", N={N}" if len(sizes) > 1 else "")] = dt
        print(f"[kl] eta={eta:g} N={N}: phase {new[0]['phase']} (N→∞: {new[0]['phase_limit']}), "
              f"{new[0]['divergences']} divergences, KLs {t_kl:.1f} s", flush=True)
        for r in new:
            print(f"    {r['quantity']:>8s}: {r['value']:+.4f} ± {r['se']:.4f}  theory(c) {r['theory_data_c']:+.4f}  "
                  f"theory(∞) {r['theory_limit']:+.4f}", flush=True)

    rows.sort(key=lambda r: (int(r["N"]), r["eta"], QUANTITIES.index(r["quantity"])))
    write_csv(csv_path, COLUMNS, rows, none="nan")
    lo, hi = ETA_GRID
    grid = np.unique(np.concatenate([np.geomspace(lo, hi, 400), np.array(etas, float)]))
    curves = theory_curves(grid)
    write_csv(out / "theory_curves.csv", CURVE_COLUMNS, curves, none="nan")
    figs = [plot_observables(rows, curves, out / "observables_vs_eta.png"), plot_kls(rows, curves, out / "kls_vs_eta.png")]
    figs += compare_plots(dts, out / "compare") if dts else []  # ArviZ comparison of the tempered runs

    finish_study(
        out, "tempered_posteriors", t_start, files=[CSV_NAME, "theory_curves.csv"], figures=figs, seed=0,
        checks="THEORY.md §4 (λ_1, u_1, M) and §6 (typical/predictive KLs) as functions of η at γ = 0.5, ω = 2.5",
        settings={
            "quick": bool(args.quick), "sizes": list(sizes), "etas": list(etas), "gamma": GAMMA, "omega": OMEGA, "K": K,
            "sweep_file": str(TEACHER_STUDENT_SWEEP.relative_to(TEACHER_STUDENT_SWEEP.parents[2])), "runs": str(sw.out),
            "kl_points": kl_points, "max_draws": args.max_draws, "kl_key": "jax.random.key(inference seed + 1)",
            "predictive_max_n": BAND_PREDICTIVE_MAX_N, "teacher_seed": "spec (0)", "inference_seed": "spec (0)",
            "eta_grid": [lo, hi, len(grid)], "c_limit": list(C_LIMIT),
        },
        phase_boundaries=phase_boundaries(curves),
        runs=runs_info,
        compared_runs=list(dts),
        failed=failed, sweep_wall_s=sweep_wall,
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
