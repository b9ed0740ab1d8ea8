"""Log evidence (1/N) log Y against the large-N theory (THEORY.md §5, §7).

Checks the THEORY.md §5 curve

    (1/N) log Y_η(D) = Φ(c_1 … c_r) + (r/2) log(γη) + τη/2
    (PM phases: (η Σ_k c_k² − K) / (4γ))

(:func:`bayes_sbm.theory.log_evidence`) against every numerical estimator of
§7: thermodynamic integration (TI) and stepping stone (SS) from one NUTS
ladder (:func:`bayes_sbm.evidence.thermodynamic_integration`), and the ELBO,
the importance-sampling estimate and the importance-weighted bound from an
SVI fit with the structured guide (:func:`bayes_sbm.evidence.svi_evidence`).

The estimates run as one sweep (:mod:`bayes_sbm.sweep`, task ``evidence``,
the grid of ``models/sweeps/evidence_vs_theory.toml``: the five phase specs
``models/{pmo,pme,fmo,fme,sg}.toml`` (K = 2 rank-one teacher, ω = 2.5,
teacher seed 0) × N ∈ {100, 200, 400, 1000}, band representation of THEORY.md §8,
10 → 14 rungs × 300 NUTS draws) on Dask distributed: a LocalCluster here or
``--scheduler tcp://HOST:8786``.  Each point keeps its full report
(``runs/<point>/evidence.json``, the JSON of ``bayes-sbm evidence --json``);
a rerun skips finished points.  Each estimate is compared with two theory
values:

* ``theory_data_c`` — THEORY.md §5 at the finite-N data spectrum c = eig(C)
  of the data actually used (``diff = estimate − theory_data_c``: the
  finite-size correction of the evidence plus Monte Carlo error);
* ``theory_limit`` — at the N → ∞ spectrum c = (1.6, 0.4)
  (``diff_limit`` also carries the O(1/√N) fluctuation of the data spectrum).

Finite-size extrapolation: per (spec, estimator) the difference d(N) is fitted
as a + b N^(−p) (p ∈ {1, 2/3, 1/2, 1/3}, weighted by the SE;
:func:`analysis._common.extrapolations`) and the law with the smallest χ² is
reported with a ± SE(a) and z = a/SE(a): the N → ∞ value is theory + a.

Keys: ``bayes_sbm.settings.derive_keys(spec.inference.seed)`` (``.ti``,
``.svi``, ``.importance``), as in ``bayes-sbm evidence``
(``bayes_sbm.reports.evidence_report``).

Outputs (in ``--out``, default ``analysis/evidence_vs_theory/results``):

* ``evidence_vs_theory.csv`` — one row per (spec, N, estimator): estimate and
  SE per N, both theory values and differences, the seconds of the
  estimator's group (TI+SS share one ladder, ELBO/importance/IWAE one SVI
  fit), ESS and ladder facts;
* ``finite_size.csv`` — one row per (spec, estimator, law);
* ``table.md`` — the extrapolation table, then the finite-N table;
* ``estimates_vs_phase.png`` — per N: estimates ± SE by phase with both theory
  values (top) and estimate − theory(data c) ± SE (bottom);
* ``diff_vs_n.png`` — per spec: |estimate − theory| against N (log–log), a
  1/N guide (the finite-size trend);
* ``metadata.json`` — versions, seeds, settings, the sweep, timings;
* ``runs/`` — the sweep folder.

``--quick``: N ∈ {8, 10, 12}, specs pmo and fmo, 4 rungs × 100 draws, 300 SVI
steps, one worker thread (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    C_LIMIT, FINITE_SIZE_LAWS, OMEGA, ROOT, extrapolations, finish_study, fmt_num, md_head, md_row, pin_threads,
    print_extrapolations, run_study_sweep, size_points, start_study, study_parser, sweep_from_file, write_csv,
)

pin_threads()  # before NumPy/JAX are imported

import json  # noqa: E402
import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import sweep, theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402

HERE = Path(__file__).resolve().parent

SPECS = ("pmo", "pme", "fmo", "fme", "sg")
SWEEP_FILE = ROOT / "models" / "sweeps" / "evidence_vs_theory.toml"
QUICK_SPECS = ("pmo", "fmo")
QUICK_SIZES = (8, 10, 12)
#: --quick: the [evidence] settings of a smoke test.
QUICK_EVIDENCE = {"rungs": 4, "max_rungs": 4, "samples": 100, "warmup": 50, "svi_steps": 300}
ESTIMATORS = ("ti", "stepping_stone", "elbo", "importance", "iwae")
GROUPS = {"ti": ("ti", "stepping_stone"), "svi": ("elbo", "importance", "iwae")}
LABELS = {"ti": "TI", "stepping_stone": "stepping stone", "elbo": "ELBO", "importance": "importance", "iwae": "IWAE (64)"}
MARKERS = {"ti": "o", "stepping_stone": "s", "elbo": "v", "importance": "D", "iwae": "^"}
COLORS = {"ti": "C0", "stepping_stone": "C1", "elbo": "C2", "importance": "C3", "iwae": "C4"}
COLUMNS = (
    "spec", "phase", "phase_limit", "N", "estimator", "group", "per_n", "se_per_n",
    "theory_data_c", "diff", "theory_limit", "diff_limit", "z",
    "log_evidence", "se", "wall_s", "cpu_s", "ess", "num_rungs", "quadrature_correction_per_n",
    "c_1", "c_2", "gamma", "eta", "seed", "settings",
)
FSS_COLUMNS = ("spec", "phase", "estimator", "law", "p", "num_sizes", "a", "se_a", "z", "b", "chi2_dof", "accepted",
               "best", "theory_limit", "extrapolated")
#: The finite-size laws of (1/N) log Y: those of the posterior study plus log N/N, the order of the Gaussian
#: fluctuation of a condensed mode (a log N term in log Z(W) and in the posterior's entropy of that mode).
EVIDENCE_LAWS = FINITE_SIZE_LAWS | {"log N/N": (1.0, "log")}
CSV_NAME, FSS_NAME = "evidence_vs_theory.csv", "finite_size.csv"


# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------
def _sort_key(r: dict):
    return (SPECS.index(r["spec"]) if r["spec"] in SPECS else 99, r["spec"], int(r["N"]),
            ESTIMATORS.index(r["estimator"]) if r["estimator"] in ESTIMATORS else 99)


# --------------------------------------------------------------------------
# rows from the sweep's evidence reports
# --------------------------------------------------------------------------
def report_rows(point, report: dict) -> list[dict]:
    """One row per estimator of a point's ``evidence.json`` (:func:`bayes_sbm.reports.evidence_report`)."""
    c = list(report["c"]) + [math.nan]
    g, e = float(report["gamma"]), float(report["eta"])
    limit = theory.observable_reference(C_LIMIT, g, e)
    seconds = report.get("seconds", {})
    base = {"spec": point.values["spec"], "N": int(report["N"]), "gamma": g, "eta": e, "seed": point.spec.inference.seed,
            "phase": report["phase"], "phase_limit": limit.phase, "theory_data_c": float(report["theory_per_n"]),
            "theory_limit": float(limit.log_evidence_per_n), "c_1": float(c[0]), "c_2": float(c[1]),
            "settings": point.folder.name}
    rows = []
    for name, est in report.get("estimators", {}).items():
        group = "ti" if name in GROUPS["ti"] else "svi"
        per_n, se_n = float(est["per_n"]), float(est["se_per_n"])
        diff = per_n - base["theory_data_c"]
        wall = seconds.get("ti+stepping_stone" if group == "ti" else "svi", math.nan)
        rows.append(base | {
            "estimator": name, "group": group, "per_n": per_n, "se_per_n": se_n, "diff": diff,
            "diff_limit": per_n - base["theory_limit"], "z": diff / se_n if se_n > 0 else math.nan,
            "log_evidence": float(est["log_evidence"]), "se": float(est["se"]), "wall_s": wall, "cpu_s": math.nan,
            "ess": float(est.get("ess", math.nan)), "num_rungs": float(est.get("num_rungs", math.nan)),
            "quadrature_correction_per_n": float(est.get("quadrature_correction", math.nan)) / base["N"],
        })
    return rows


def finite_size_rows(rows: list[dict]) -> list[dict]:
    """Every finite-size law fitted to d(N) per (spec, estimator)."""
    out = []
    for spec in _specs_in(rows):
        for est in ESTIMATORS:
            sel = [r for r in rows if r["spec"] == spec and r["estimator"] == est]
            if not sel:
                continue
            N, d, se = size_points(sel, lambda r: True, se="se_per_n")
            for f in extrapolations(N, d, se, EVIDENCE_LAWS):
                out.append({"spec": spec, "phase": sel[0]["phase_limit"], "estimator": est, **f,
                            "theory_limit": sel[0]["theory_limit"], "extrapolated": sel[0]["theory_limit"] + f["a"]})
    return out


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------
def accepted_z(fss: list[dict], best: dict) -> str:
    """``law: z`` for every accepted law of the fit that ``best`` belongs to."""
    same = [f for f in fss if f["spec"] == best["spec"] and f["estimator"] == best["estimator"] and f["accepted"]]
    return ", ".join(f"{f['law']}: {f['z']:+.1f}" for f in same) or "none"


def markdown_table(rows: list[dict], fss: list[dict]) -> str:
    head = ("spec", "phase", "N", "estimator", "(1/N) log Y ± SE", "theory (data c)", "diff", "diff/SE",
            "theory (N→∞)", "diff (N→∞)", "ESS", "wall s (group)")
    lines = [
        "# (1/N) log Y vs THEORY.md §5",
        "",
        "theory (data c): THEORY.md §5 at the data spectrum used; theory (N→∞): at c = (1.6, 0.4). "
        "diff = estimate − theory. TI and stepping stone share one NUTS ladder, ELBO/importance/IWAE one SVI fit: "
        "the CPU seconds are those of the shared group. ESS: smallest rung ESS (TI/SS) or importance-weight ESS. "
        "ELBO and IWAE are lower bounds (in expectation).",
        "",
        "## N → ∞ extrapolation",
        "",
        "d(N) = estimate − theory (data c) fitted as a + b f(N), f ∈ {1/N, log N/N, N^-2/3, N^-1/2, N^-1/3} (weighted by "
        "the SE); a law is accepted when its χ² is below its 1 % point; shown: the fastest accepted law, and z = a/SE(a) "
        "under every accepted law (the law uncertainty of the extrapolation). N → ∞ value = theory (c = 1.6, 0.4) + a.",
        "",
        *md_head(("spec", "phase (N→∞)", "estimator", "law", "sizes", "N → ∞ value ± SE", "theory", "z", "χ²/dof",
                  "z under the accepted laws")),
        *[md_row([f["spec"], f["phase"], LABELS.get(f["estimator"], f["estimator"]), f["law"], str(f["num_sizes"]),
                  f"{fmt_num(f['extrapolated'])} ± {fmt_num(f['se_a'])}", fmt_num(f["theory_limit"]), fmt_num(f["z"], 2),
                  fmt_num(f["chi2_dof"], 2), accepted_z(fss, f)]) for f in fss if f["best"]],
        "",
        "## Finite N",
        "",
        *md_head(head),
    ]
    for r in rows:
        ess = float(r["ess"])
        cells = [r["spec"], r["phase"], str(r["N"]), LABELS.get(r["estimator"], r["estimator"]),
                 f"{fmt_num(r['per_n'])} ± {fmt_num(r['se_per_n'])}", fmt_num(r["theory_data_c"]), fmt_num(r["diff"]),
                 fmt_num(r["z"], 2), fmt_num(r["theory_limit"]), fmt_num(r["diff_limit"]),
                 f"{ess:.0f}" if math.isfinite(ess) else "–", fmt_num(r["wall_s"], 1)]
        lines.append(md_row(cells))
    return "\n".join(lines) + "\n"


def _specs_in(rows):
    return [s for s in SPECS if any(r["spec"] == s for r in rows)] + sorted({r["spec"] for r in rows} - set(SPECS))


def plot_estimates(rows: list[dict], path: Path) -> Path:
    sizes = sorted({int(r["N"]) for r in rows})
    specs = _specs_in(rows)
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.8 * len(sizes) + 1.5, 7.5), squeeze=False,
                             sharex=True, layout="constrained")
    ests = [e for e in ESTIMATORS if any(r["estimator"] == e for r in rows)]
    width = 0.6 / max(1, len(ests))
    for j, N in enumerate(sizes):
        top, bottom = axes[0, j], axes[1, j]
        for i, spec in enumerate(specs):
            sel = [r for r in rows if r["spec"] == spec and int(r["N"]) == N]
            if not sel:
                continue
            top.hlines(sel[0]["theory_data_c"], i - 0.38, i + 0.38, color="k", lw=2,
                       label="theory (data c)" if i == 0 else None)
            top.hlines(sel[0]["theory_limit"], i - 0.38, i + 0.38, color="0.55", lw=1.5, ls="--",
                       label="theory (N→∞)" if i == 0 else None)
            for k, e in enumerate(ests):
                r = next((r for r in sel if r["estimator"] == e), None)
                if r is None:
                    continue
                x = i + (k - (len(ests) - 1) / 2) * width
                kw = dict(color=COLORS[e], marker=MARKERS[e], capsize=3, linestyle="none",
                          label=LABELS[e] if i == 0 else None)
                top.errorbar(x, r["per_n"], yerr=r["se_per_n"], **kw)
                kw.pop("label")
                bottom.errorbar(x, r["diff"], yerr=r["se_per_n"], **kw)
        bottom.axhline(0.0, color="k", lw=1)
        top.set_title(f"N = {N}")
        top.set_ylabel(r"$(1/N)\,\log Y$")
        bottom.set_ylabel(r"estimate − theory (data c)")
        labels = [f"{s}\n({next(r['phase'] for r in rows if r['spec'] == s and int(r['N']) == N)})"
                  if any(r["spec"] == s and int(r["N"]) == N for r in rows) else s for s in specs]
        bottom.set_xticks(range(len(specs)), labels)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4 * len(sizes)), fontsize=8)
    fig.suptitle(r"$(1/N)\log Y$ by phase: estimators ± SE vs THEORY.md §5")
    return save_figure(fig, path)


def plot_diff_vs_n(rows: list[dict], path: Path) -> Path:
    specs = _specs_in(rows)
    ncol = min(3, max(1, len(specs)))
    nrow = -(-len(specs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False, layout="constrained")
    sizes = sorted({int(r["N"]) for r in rows})
    for ax, spec in zip(axes.ravel(), specs):
        phase = next(r["phase_limit"] for r in rows if r["spec"] == spec)
        ys = []
        for e in ESTIMATORS:
            sel = sorted((r for r in rows if r["spec"] == spec and r["estimator"] == e), key=lambda r: r["N"])
            if not sel:
                continue
            N = np.array([r["N"] for r in sel], float)
            for key, filled, ls in (("diff", True, "-"), ("diff_limit", False, ":")):
                y = np.abs(np.array([r[key] for r in sel], float))
                se = np.array([r["se_per_n"] for r in sel], float)
                ok = np.isfinite(y) & (y > 0)
                if not ok.any():
                    continue
                lo = np.minimum(se[ok], 0.9 * y[ok])
                ax.errorbar(N[ok], y[ok], yerr=[lo, se[ok]], color=COLORS[e], marker=MARKERS[e], linestyle=ls,
                            capsize=3, markerfacecolor=COLORS[e] if filled else "white",
                            label=LABELS[e] if filled else None)
                if filled:
                    ys += list(y[ok])
        if ys and len(sizes) > 1:
            n0 = float(np.exp(np.mean(np.log(sizes))))
            y0 = float(np.exp(np.mean(np.log(ys))))
            grid = np.geomspace(min(sizes), max(sizes), 20)
            ax.plot(grid, y0 * n0 / grid, color="0.4", ls="--", lw=1, label=r"$\propto 1/N$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_title(f"{spec} ({phase} at N→∞)")
        ax.set_xlabel("N")
        ax.set_ylabel(r"$|$estimate − theory$|$ per N")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.ravel()[len(specs):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle("Finite-size trend of (1/N) log Y vs THEORY.md §5 (filled: data-c theory; open/dotted: N→∞ theory; bars: SE)")
    return save_figure(fig, path)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results", f"smoke test: N in {QUICK_SIZES}, specs {QUICK_SPECS}, {QUICK_EVIDENCE}")
    p.add_argument("--sizes", type=int, nargs="+", help="values of N (default: the sweep file's)")
    p.add_argument("--specs", nargs="+", choices=SPECS, help="phase specs (default: all five)")
    p.add_argument("--rungs", type=int, help="initial TI rungs (default: the sweep file's)")
    p.add_argument("--max-rungs", type=int, help="TI rungs after adaptive bisection")
    p.add_argument("--samples", type=int, help="NUTS draws per rung")
    p.add_argument("--warmup", type=int, help="NUTS warm-up per rung")
    p.add_argument("--svi-steps", type=int, help="SVI steps (default: the spec's)")
    p.add_argument("--no-ti", action="store_true", help="skip TI / stepping stone")
    p.add_argument("--no-svi", action="store_true", help="skip the SVI estimators")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    p.add_argument("--analyse-only", action="store_true", help="no estimating: analyse the points already finished")
    return p


def make_sweep(args, out: Path) -> sweep.Sweep:
    given = {"rungs": args.rungs, "max_rungs": args.max_rungs, "samples": args.samples, "warmup": args.warmup,
             "svi_steps": args.svi_steps}
    table = (QUICK_EVIDENCE if args.quick else {}) | {k: v for k, v in given.items() if v is not None}
    if args.no_ti:
        table["ti"] = False
    if args.no_svi:
        table["svi"] = False
    return sweep_from_file(SWEEP_FILE, out / "runs", specs=args.specs or (QUICK_SPECS if args.quick else None),
                           grid={"model.N": args.sizes or (QUICK_SIZES if args.quick else None)},
                           fixed={"model.parametrization": "aligned"} if args.quick else None, tables={"evidence": table})


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    sw = make_sweep(args, out)
    points, failed, point_seconds, sweep_wall = run_study_sweep(sw, analyse_only=args.analyse_only, scheduler=args.scheduler,
                                                                workers=args.workers, processes=not args.quick)
    rows = []
    for point in points:
        rows += report_rows(point, json.loads((point.folder / sweep.EVIDENCE_FILE).read_text()))
    rows.sort(key=_sort_key)
    fss = finite_size_rows(rows)
    write_csv(out / CSV_NAME, COLUMNS, rows)
    write_csv(out / FSS_NAME, FSS_COLUMNS, fss)
    print_extrapolations(fss, "estimator", LABELS, digits=5)
    figs = [plot_estimates(rows, out / "estimates_vs_phase.png"), plot_diff_vs_n(rows, out / "diff_vs_n.png")] if rows else []
    finish_study(
        out, "evidence_vs_theory", t_start, files=[CSV_NAME, FSS_NAME], table=markdown_table(rows, fss), figures=figs, seed=None,
        checks="THEORY.md §5 (1/N) log Y vs TI, stepping stone, ELBO, importance, IWAE (§7), extrapolated to N → ∞",
        quick=bool(args.quick),
        settings={"sweep": sw.to_dict(), "scheduler": args.scheduler or "LocalCluster", "laws": {k: list(v) if isinstance(v, tuple) else v for k, v in EVIDENCE_LAWS.items()},
                  "seeds": "spec inference.seed (0): settings.derive_keys (.ti, .svi, .importance); teacher seed: spec data.seed (0)",
                  "c_limit": list(C_LIMIT), "omega": OMEGA},
        timings={"sweep_wall_s": sweep_wall, "point_seconds": point_seconds},
        failed=failed,
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
