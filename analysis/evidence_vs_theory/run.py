"""Log evidence (1/N) log Y against the large-N theory (THEORY.md §5, §7).

Checks the THEORY.md §5 curve

    (1/N) log Y_η(D) = Φ(c_1 … c_r) + (r/2) log(γη) + τη/2
    (PM phases: (η Σ_k c_k² − K) / (4γ))

(:func:`bayes_sbm.theory.log_evidence`) against every numerical estimator of
§7: thermodynamic integration (TI) and stepping stone (SS) from one NUTS
ladder (:func:`bayes_sbm.evidence.thermodynamic_integration`), and the ELBO,
the importance-sampling estimate and the importance-weighted bound from an
SVI fit with the structured guide (:func:`bayes_sbm.evidence.svi_evidence`).

For each phase spec ``models/{pmo,pme,fmo,fme,sg}.toml`` (K = 2 rank-one
teacher, ω = 2.5, teacher seed 0) and each N, the spec is evaluated at that N
(``spec.with_overrides({"model.N": N})``) and each estimate is compared with
two theory values:

* ``theory_data_c`` — THEORY.md §5 at the finite-N data spectrum c = eig(C)
  of the data actually used (``diff = estimate − theory_data_c``: the
  finite-size correction of the evidence plus Monte Carlo error);
* ``theory_limit`` — at the N → ∞ spectrum c = (1.6, 0.4)
  (``diff_limit`` also carries the O(1/√N) fluctuation of the data spectrum).

Keys: ``bayes_sbm.settings.derive_keys(spec.inference.seed)`` (``.ti``,
``.svi``, ``.importance``), as in ``bayes-sbm evidence``
(``bayes_sbm.reports.evidence_report``); the ladder/SVI sizes are options here.

Outputs (in ``--out``, default ``analysis/evidence_vs_theory/results``):

* ``evidence_vs_theory.csv`` — one row per (spec, N, estimator): estimate and
  SE per N, both theory values and differences, wall and CPU seconds of the
  estimator's group (TI+SS share one ladder, ELBO/importance/IWAE one SVI
  fit), ESS and ladder facts;
* ``table.md`` — the finite-N vs theory table;
* ``estimates_vs_phase.png`` — per N: estimates ± SE by phase with both theory
  values (top) and estimate − theory(data c) ± SE (bottom);
* ``diff_vs_n.png`` — per spec: |estimate − theory| against N (log–log), a
  1/N guide (the finite-size trend);
* ``metadata.json`` — versions, seeds, settings, timings.

``--resume`` keeps rows already in the CSV and skips (spec, N, group) whose
estimators are all there.  ``--quick``: N = 8, specs pmo and fmo, 4 rungs ×
100 draws (warm-up 100/50), 300 SVI steps (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    C_LIMIT, OMEGA, evidence_group, finish_study, fmt_num, int_list, ladder_settings, md_head, md_row, name_list,
    pick_values, pin_threads, read_csv, start_study, study_parser, theory_pair, write_csv,
)

pin_threads()  # before NumPy/JAX are imported

import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm.plots import save_figure  # noqa: E402
from bayes_sbm.runs import problem_from_spec  # noqa: E402
from bayes_sbm.specs import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent

SPECS = ("pmo", "pme", "fmo", "fme", "sg")
SIZES = (50, 100)
QUICK_SPECS = ("pmo", "fmo")
QUICK_SIZES = (8,)
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
STRING_COLUMNS = ("spec", "phase", "phase_limit", "estimator", "group", "settings")
CSV_NAME = "evidence_vs_theory.csv"


# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------
def _sort_key(r: dict):
    return (SPECS.index(r["spec"]) if r["spec"] in SPECS else 99, r["spec"], int(r["N"]),
            ESTIMATORS.index(r["estimator"]) if r["estimator"] in ESTIMATORS else 99)


# --------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------
def _row(base: dict, name: str, group: str, est, wall: float, cpu: float, **extra) -> dict:
    per_n, se_n = est.per_n, est.se_per_n
    diff = per_n - base["theory_data_c"]
    return base | {
        "estimator": name, "group": group, "per_n": per_n, "se_per_n": se_n,
        "diff": diff, "diff_limit": per_n - base["theory_limit"],
        "z": diff / se_n if se_n > 0 else math.nan,
        "log_evidence": est.log_evidence, "se": est.se, "wall_s": wall, "cpu_s": cpu,
        "ess": math.nan, "num_rungs": math.nan, "quadrature_correction_per_n": math.nan,
    } | extra


def group_rows(group: str, spec, problem, base: dict, **options) -> list[dict]:
    """The rows of one estimator group (:func:`analysis._common.evidence_group`)."""
    g = evidence_group(group, spec, problem, **options)
    f = g.facts
    if group == "ti":
        ti = {"ess": f["min_rung_ess"], "num_rungs": float(f["num_rungs"])}  # float: the SVI rows hold NaN here
        extra = {"ti": ti | {"quadrature_correction_per_n": f["quadrature_correction_per_n"]}, "stepping_stone": ti}
    else:
        extra = {"importance": {"ess": f["importance_ess"]}}
    return [_row(base, name, group, est, g.wall_s, g.cpu_s, **extra.get(name, {})) for name, est in g.estimates.items()]


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------
def markdown_table(rows: list[dict]) -> str:
    head = ("spec", "phase", "N", "estimator", "(1/N) log Y ± SE", "theory (data c)", "diff", "diff/SE",
            "theory (N→∞)", "diff (N→∞)", "ESS", "CPU s (group)")
    lines = [
        "# (1/N) log Y vs THEORY.md §5",
        "",
        "theory (data c): THEORY.md §5 at the data spectrum used; theory (N→∞): at c = (1.6, 0.4). "
        "diff = estimate − theory. TI and stepping stone share one NUTS ladder, ELBO/importance/IWAE one SVI fit: "
        "the CPU seconds are those of the shared group. ESS: smallest rung ESS (TI/SS) or importance-weight ESS. "
        "ELBO and IWAE are lower bounds (in expectation).",
        "",
        *md_head(head),
    ]
    for r in rows:
        ess = float(r["ess"])
        cells = [r["spec"], r["phase"], str(r["N"]), LABELS.get(r["estimator"], r["estimator"]),
                 f"{fmt_num(r['per_n'])} ± {fmt_num(r['se_per_n'])}", fmt_num(r["theory_data_c"]), fmt_num(r["diff"]),
                 fmt_num(r["z"], 2), fmt_num(r["theory_limit"]), fmt_num(r["diff_limit"]),
                 f"{ess:.0f}" if math.isfinite(ess) else "–", fmt_num(r["cpu_s"], 1)]
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
    p = study_parser(__doc__, HERE / "results", "smoke test: N = 8, specs pmo, fmo, 4 rungs x 100 draws, 300 SVI steps",
                     "keep rows already in the CSV and skip their (spec, N, group)", models="the phase specs")
    p.add_argument("--sizes", type=int_list, help=f"values of N, comma separated (default {','.join(map(str, SIZES))}; 200 optional)")
    p.add_argument("--specs", type=name_list, help=f"phase specs (default {','.join(SPECS)})")
    p.add_argument("--rungs", type=int, help="initial TI rungs (default 12)")
    p.add_argument("--max-rungs", type=int, help="TI rungs after adaptive bisection (default 20)")
    p.add_argument("--samples", type=int, help="NUTS draws per rung (default 500)")
    p.add_argument("--warmup", type=int, help="NUTS warm-up per rung after the first (default 200)")
    p.add_argument("--first-warmup", type=int, help="NUTS warm-up of the first rung (default 500)")
    p.add_argument("--prior-draws", type=int, help="exact GOE draws at t = 0 (default 4000)")
    p.add_argument("--svi-steps", type=int, help="SVI steps (default: the spec's, 3000)")
    p.add_argument("--svi-draws", type=int, help="guide draws for the SVI evidence (default 4000)")
    p.add_argument("--no-ti", action="store_true", help="skip TI / stepping stone")
    p.add_argument("--no-svi", action="store_true", help="skip the SVI estimators")
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    q = args.quick
    sizes = pick_values(args.sizes, q, QUICK_SIZES, SIZES)
    specs = pick_values(args.specs, q, QUICK_SPECS, SPECS)
    pick = lambda given, quick, full: given if given is not None else (quick if q else full)  # noqa: E731
    ladder = ladder_settings(args)
    svi_steps = pick(args.svi_steps, 300, None)
    svi_draws = pick(args.svi_draws, 1000, 4000)
    groups = [g for g, on in (("ti", not args.no_ti), ("svi", not args.no_svi)) if on]
    settings_text = (f"rungs={ladder.num_rungs}/{ladder.max_rungs} samples={ladder.num_samples} warmup={ladder.first_warmup}/"
                     f"{ladder.num_warmup} prior={ladder.prior_draws} svi_steps={svi_steps or 'spec'} svi_draws={svi_draws}")

    csv_path = out / CSV_NAME
    rows = read_csv(csv_path, strings=STRING_COLUMNS, ints=("N", "seed")) if args.resume else []

    def have(spec, N, group):
        names = {r["estimator"] for r in rows if r["spec"] == spec and int(r["N"]) == N}
        return set(GROUPS[group]) <= names

    timings = {}
    for name in specs:
        base_spec = load_spec(args.models / f"{name}.toml")
        for N in sizes:
            todo = [g for g in groups if not have(name, N, g)]
            if not todo:
                print(f"[skip] {name} N={N}: rows already in {csv_path.name}", flush=True)
                continue
            spec = base_spec.with_overrides({"model.N": int(N)})
            problem = problem_from_spec(spec)
            c = problem.frame.c
            g, e = problem.gamma, problem.eta
            at_c, at_limit = theory_pair(c, g, e)
            base = {
                "spec": name, "N": int(N), "gamma": g, "eta": e, "seed": spec.inference.seed, "settings": settings_text,
                "phase": at_c.phase, "phase_limit": at_limit.phase,
                "theory_data_c": at_c.log_evidence_per_n, "theory_limit": at_limit.log_evidence_per_n,
                "c_1": float(c[0]), "c_2": float(c[1]) if c.size > 1 else math.nan,
            }
            for group in todo:
                new = group_rows(group, spec, problem, base, ladder=ladder, svi_steps=svi_steps, svi_draws=svi_draws)
                names = {r["estimator"] for r in new}
                rows = [r for r in rows if not (r["spec"] == name and int(r["N"]) == N and r["estimator"] in names)] + new
                rows.sort(key=_sort_key)
                write_csv(csv_path, COLUMNS, rows)  # after every group: an interrupted study resumes from here
                timings[f"{name}_N{N}_{group}"] = {"wall_s": new[0]["wall_s"], "cpu_s": new[0]["cpu_s"]}
                print(f"[{group}] {name} N={N} ({base['phase']}): theory(c) {base['theory_data_c']:+.5f}  "
                      f"theory(∞) {base['theory_limit']:+.5f}  [{new[0]['wall_s']:.1f} s wall, {new[0]['cpu_s']:.1f} s CPU]",
                      flush=True)
                for r in new:
                    print(f"    {LABELS[r['estimator']]:>15s}: {r['per_n']:+.5f} ± {r['se_per_n']:.5f}  diff {r['diff']:+.5f}",
                          flush=True)

    rows.sort(key=_sort_key)
    write_csv(csv_path, COLUMNS, rows)
    figs = []
    if rows:
        figs = [plot_estimates(rows, out / "estimates_vs_phase.png"), plot_diff_vs_n(rows, out / "diff_vs_n.png")]
    finish_study(
        out, "evidence_vs_theory", t_start, files=[CSV_NAME], table=markdown_table(rows), figures=figs, seed=None,
        checks="THEORY.md §5 (1/N) log Y vs TI, stepping stone, ELBO, importance, IWAE (§7)",
        quick=bool(q),
        settings={
            "sizes": list(sizes), "specs": list(specs), "ladder": {k: getattr(ladder, k) for k in (
                "num_rungs", "max_rungs", "power", "quadrature_tol", "num_warmup", "first_warmup", "num_samples",
                "num_chains", "prior_draws", "target_accept")},
            "svi": {"guide": "structured (spec)", "steps": svi_steps or "spec", "evidence_draws": svi_draws, "iw_group": 64},
            "seeds": "spec inference.seed (0): settings.derive_keys (.ti, .svi, .importance); teacher seed: spec data.seed (0)",
            "c_limit": list(C_LIMIT), "omega": OMEGA, "resume": bool(args.resume),
        },
        timings=timings,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
