"""Posterior means against the large-N spectral saddle point (THEORY.md §4, §7).

Checks the first item of THEORY.md §7: "for a teacher–student data set at
N ∈ {50, 100, 200, (400)}, in every phase: posterior means of λ_1, u_1, M,
e_kᵀWe_k and (1/N) log Z(W) … report the finite-N value, the theory value and
their difference, and show that the difference shrinks as N grows."

For each phase spec ``models/{pmo,pme,fmo,fme,sg}.toml`` (K = 2 rank-one
teacher, ω = 2.5, teacher seed 0) and each N, the spec is refitted with NUTS
at that N (``spec.with_overrides({"model.N": N})``), and the posterior mean
(± MCSE) of five observables is compared with two THEORY.md §4 values:

* ``theory_data_c`` — the saddle point at the *finite-N data spectrum*
  c = eig(C) of the data actually fitted (``meta["theory"]`` of the run);
  the difference ``diff = mean − theory_data_c`` isolates the finite-size
  corrections of the posterior itself;
* ``theory_limit`` — the saddle point at the N → ∞ data spectrum
  c = (2 − 1/ω, 1/ω) = (1.6, 0.4) (:func:`bayes_sbm.theory.posterior_saddle`);
  ``diff_limit`` also contains the O(1/√N) fluctuation of the data spectrum.

Observables (THEORY.md §4 "measurable finite-N counterparts"): ``lam_1`` (top
eigenvalue λ_1), ``u_1`` (overlap² (v_1·e_1)²), ``M`` (condensate),
``signal_1`` (e_1ᵀWe_1, theory (ξ_1 − 1)/a_1) and ``log_z_per_n``
((1/N) log Z(W), theory ½(S(μ_Z) − 1)).

Outputs (in ``--out``, default ``analysis/posterior_vs_theory/results``):

* ``posterior_vs_theory.csv`` — one row per (spec, N, observable): mean,
  MCSE, both theory values and differences, R-hat and min(bulk, tail) ESS of
  the observable, divergences and sampling seconds of the run;
* ``table.md`` — the same as a Markdown table;
* ``diff_vs_n.png`` — per observable, |mean − theory| against N (log–log)
  per phase, with MCSE error bars, filled markers for the data-c theory and
  open markers for the N → ∞ theory, and a 1/√N guide line;
* ``means_vs_n.png`` — per observable, mean ± MCSE against N per phase with
  the N → ∞ theory as dashed lines and the data-c theory as crosses;
* ``metadata.json`` — versions, seeds, settings, run folders, timings;
* ``runs/<spec>_N<N>/`` — each fitted run folder (``bayes-sbm diagnose`` works
  on it).

``--resume`` keeps the rows already in the CSV and skips their (spec, N);
a run folder that is complete and was fitted with the same spec is reused
instead of refitted. ``--quick``: N ∈ {10, 16}, specs fmo and pmo, 100
warm-up + 100 draws per chain (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    C_LIMIT, OMEGA, PHASE_COLORS, QUICK_NUTS, complete_groups, component, finish_study, fit_or_reuse, fmt_num,
    md_head, md_row, nuts_overrides, pick_values, pin_threads, previous_runs, read_csv, start_study, study_parser,
    summary_row, write_csv,
)

pin_threads(host_devices=2)  # before NumPy/JAX are imported: 2 chains in parallel

import math  # noqa: E402
import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import diagnostics, theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402
from bayes_sbm.specs import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent

SPECS = ("pmo", "pme", "fmo", "fme", "sg")
SIZES = (50, 100, 200)
QUICK_SPECS = ("fmo", "pmo")
QUICK_SIZES = (10, 16)

#: (observable, posterior variable, component, key of the theory reference (ObservableReference.as_dict()), label)
OBSERVABLES = (
    ("lam_1", "lam_top", 0, "lam", r"$\lambda_1$"),
    ("u_1", "u", 0, "u", r"$u_1$"),
    ("M", "M", None, "M", r"$M$"),
    ("signal_1", "signal", 0, "signal", r"$e_1^\top W e_1$"),
    ("log_z_per_n", "log_z_per_n", None, "log_z_per_n", r"$N^{-1}\log Z$"),
)
COLUMNS = (
    "spec", "phase", "N", "observable", "mean", "mcse", "theory_data_c", "diff", "theory_limit", "diff_limit",
    "r_hat_max", "min_ess", "divergences", "sampling_s",
    # extra context
    "sd", "phase_limit", "c_1", "c_2", "latent_max_r_hat", "latent_min_ess_bulk", "num_warmup", "num_samples", "num_chains",
)
STRINGS = ("spec", "phase", "observable", "phase_limit")
INTS = ("N", "divergences", "num_warmup", "num_samples", "num_chains")
CSV_NAME = "posterior_vs_theory.csv"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def rows_for_run(spec_name: str, spec, dt, meta: dict) -> list[dict]:
    """One CSV row per observable for a fitted run."""
    model = spec.model
    th_data = meta.get("theory") or {}
    if "error" in th_data:
        th_data = {}
    th_lim = theory.observable_reference(C_LIMIT, model.gamma, model.eta).as_dict()
    table = diagnostics.summary_table(dt, var_names=("lam_top", "u", "M", "signal", "log_z_per_n"), theory={})
    c = list(meta.get("c", [math.nan, math.nan])) + [math.nan, math.nan]
    ls = meta.get("latent_summary", {})
    out = []
    for obs, var, index, key, _ in OBSERVABLES:
        r = summary_row(table, var, index)
        mean = float(r["mean"])
        t_data = component(th_data.get(key), index)
        t_lim = component(th_lim.get(key), index)
        out.append({
            "spec": spec_name,
            "phase": th_data.get("phase", "n/a"),
            "N": int(model.N),
            "observable": obs,
            "mean": mean,
            "mcse": float(r["mcse_mean"]),
            "theory_data_c": t_data,
            "diff": mean - t_data,
            "theory_limit": t_lim,
            "diff_limit": mean - t_lim,
            "r_hat_max": float(r["r_hat"]),
            "min_ess": float(np.nanmin([r["ess_bulk"], r["ess_tail"]])),
            "divergences": int(meta.get("divergences", -1)),
            "sampling_s": float(meta.get("timing", {}).get("total_s", math.nan)),
            "sd": float(r["sd"]),
            "phase_limit": th_lim["phase"],
            "c_1": float(c[0]),
            "c_2": float(c[1]),
            "latent_max_r_hat": float(ls.get("max_r_hat", math.nan)),
            "latent_min_ess_bulk": float(ls.get("min_ess_bulk", math.nan)),
            "num_warmup": spec.inference.num_warmup,
            "num_samples": spec.inference.num_samples,
            "num_chains": spec.inference.num_chains,
        })
    return out


def _sort_key(r: dict):
    spec_order = {s: i for i, s in enumerate(SPECS)}
    obs_order = {o[0]: i for i, o in enumerate(OBSERVABLES)}
    return (spec_order.get(r["spec"], 99), r["spec"], int(r["N"]), obs_order.get(r["observable"], 99))


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------
def markdown_table(rows: list[dict]) -> str:
    head = ("spec", "phase", "N", "observable", "mean ± MCSE", "theory (data c)", "diff", "theory (N→∞)", "diff (N→∞)",
            "R-hat", "min ESS", "div.", "time (s)")
    lines = [
        "# Posterior means vs THEORY.md §4",
        "",
        "theory (data c): saddle point at the fitted data spectrum; theory (N→∞): at c = (1.6, 0.4). "
        "diff = mean − theory. R-hat and min(bulk, tail) ESS of the observable; divergences and sampling time of the run.",
        "",
        *md_head(head),
    ]
    for r in rows:
        ess = float(r["min_ess"])
        cells = [
            r["spec"], r["phase"], str(r["N"]), r["observable"],
            f"{fmt_num(r['mean'])} ± {fmt_num(r['mcse'])}",
            fmt_num(r["theory_data_c"]), fmt_num(r["diff"]),
            fmt_num(r["theory_limit"]), fmt_num(r["diff_limit"]),
            fmt_num(r["r_hat_max"], 3), f"{ess:.0f}" if math.isfinite(ess) else "–",
            str(r["divergences"]), fmt_num(r["sampling_s"], 1),
        ]
        lines.append(md_row(cells))
    return "\n".join(lines) + "\n"


def _guide(ax, Ns, ys) -> None:
    """1/√N guide through the geometric mean of the plotted points."""
    Ns, ys = np.asarray(Ns, float), np.asarray(ys, float)
    ok = np.isfinite(ys) & (ys > 0)
    if not ok.any():
        return
    n0 = float(np.exp(np.mean(np.log(Ns[ok]))))
    y0 = float(np.exp(np.mean(np.log(ys[ok]))))
    grid = np.geomspace(Ns.min(), Ns.max(), 20) if Ns.max() > Ns.min() else np.array([Ns.min() / 1.2, Ns.max() * 1.2])
    ax.plot(grid, y0 * np.sqrt(n0 / grid), color="0.4", linestyle=":", linewidth=1.4, label=r"$\propto 1/\sqrt{N}$")


def _by_spec(rows: list[dict], obs: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["observable"] == obs:
            out.setdefault(r["spec"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: int(r["N"]))
    return out


def _phase_of(group: list[dict]) -> str:
    phases = {r["phase_limit"] for r in group}
    return group[0]["phase_limit"] if len(phases) == 1 else "/".join(sorted(phases))


def plot_diffs(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), layout="constrained")
    axes = axes.ravel()
    for ax, (obs, _, _, _, label) in zip(axes, OBSERVABLES):
        all_N, all_y = [], []
        for i, (spec, group) in enumerate(_by_spec(rows, obs).items()):
            phase = _phase_of(group)
            color = PHASE_COLORS.get(phase, f"C{i}")
            N = np.array([r["N"] for r in group], float)
            d = np.abs(np.array([r["diff"] for r in group], float))
            dl = np.abs(np.array([r["diff_limit"] for r in group], float))
            se = np.array([r["mcse"] for r in group], float)
            for y, filled, ls in ((d, True, "-"), (dl, False, "--")):
                ok = np.isfinite(y) & (y > 0)
                if not ok.any():
                    continue
                # asymmetric bars clipped at the axis floor of a log scale
                lo = np.minimum(se[ok], 0.9 * y[ok])
                ax.errorbar(N[ok], y[ok], yerr=[lo, se[ok]], color=color, linestyle=ls, marker="o", capsize=3,
                            markerfacecolor=color if filled else "white",
                            label=f"{spec} ({phase})" if filled else None)
                all_N += list(N[ok])
                all_y += list(y[ok])
        if all_N:
            _guide(ax, all_N, all_y)
            ax.set_xscale("log")
            ax.set_yscale("log")
            Ns = sorted(set(all_N))
            ax.set_xticks(Ns, [str(int(n)) for n in Ns])
            ax.minorticks_off()
        ax.set_xlabel("N")
        ax.set_ylabel(f"|mean − theory| of {label}")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].axis("off")
    if handles:
        axes[-1].legend(handles, labels, loc="center", title="spec (phase)")
    axes[-1].text(0.5, 0.05, "filled/solid: vs theory at the data c\nopen/dashed: vs N → ∞ theory (c = 1.6, 0.4)\n"
                  "bars: MCSE", ha="center", va="bottom", transform=axes[-1].transAxes, fontsize=9)
    fig.suptitle("Finite-size trend of posterior means vs THEORY.md §4")
    return save_figure(fig, path)


def plot_means(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), layout="constrained")
    axes = axes.ravel()
    for ax, (obs, _, _, _, label) in zip(axes, OBSERVABLES):
        for i, (spec, group) in enumerate(_by_spec(rows, obs).items()):
            phase = _phase_of(group)
            color = PHASE_COLORS.get(phase, f"C{i}")
            N = np.array([r["N"] for r in group], float)
            ax.errorbar(N, [r["mean"] for r in group], yerr=[r["mcse"] for r in group], color=color, marker="o",
                        capsize=3, label=f"{spec} ({phase})")
            ax.plot(N, [r["theory_data_c"] for r in group], color=color, marker="x", linestyle="none", markersize=8)
            ax.axhline(group[0]["theory_limit"], color=color, linestyle="--", linewidth=1.0)
        ax.set_xscale("log")
        Ns = sorted({int(r["N"]) for r in rows})
        if Ns:
            ax.set_xticks(Ns, [str(n) for n in Ns])
            ax.minorticks_off()
        ax.set_xlabel("N")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].axis("off")
    if handles:
        axes[-1].legend(handles, labels, loc="center", title="spec (phase)")
    axes[-1].text(0.5, 0.05, "points: posterior mean ± MCSE\n×: theory at the data c; dashed: N → ∞ theory",
                  ha="center", va="bottom", transform=axes[-1].transAxes, fontsize=9)
    fig.suptitle("Posterior means vs N (THEORY.md §4)")
    return save_figure(fig, path)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results",
                     f"smoke test: N in {QUICK_SIZES}, specs {QUICK_SPECS}, "
                     f"{QUICK_NUTS['num_warmup']}/{QUICK_NUTS['num_samples']} draws",
                     "keep rows already in the CSV and skip their (spec, N)",
                     nuts=("num_warmup", "num_samples"), models="the phase specs")
    p.add_argument("--sizes", type=int, nargs="+", help=f"values of N (default {SIZES})")
    p.add_argument("--specs", nargs="+", choices=SPECS, help=f"phase specs (default {SPECS})")
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    sizes = pick_values(args.sizes, args.quick, QUICK_SIZES, SIZES)
    specs = pick_values(args.specs, args.quick, QUICK_SPECS, SPECS)
    nuts = nuts_overrides(args, ("num_warmup", "num_samples"))
    csv_path = out / CSV_NAME

    rows = read_csv(csv_path, strings=STRINGS, ints=INTS, blank_ints=True, keep_bad_floats=True) if args.resume else []
    rows, done = complete_groups(rows, lambda r: (r["spec"], int(r["N"])), len(OBSERVABLES))
    runs_info = previous_runs(out, args.resume)
    for name in specs:
        base = load_spec(args.models / f"{name}.toml")
        for N in sizes:
            run_dir = out / "runs" / f"{name}_N{N}"
            if (name, N) in done:
                print(f"[skip] {name} N={N}: rows already in {csv_path.name}", flush=True)
                runs_info.setdefault(f"{name}_N{N}", {"run": str(run_dir)})
                continue
            spec = base.with_overrides({"model.N": int(N)} | nuts)
            t0 = time.perf_counter()
            dt, meta, reused = fit_or_reuse(spec, run_dir, args.resume)
            new = rows_for_run(name, spec, dt, meta)
            rows = [r for r in rows if not (r["spec"] == name and int(r["N"]) == N)] + new
            rows.sort(key=_sort_key)
            write_csv(csv_path, COLUMNS, rows)  # after every run: an interrupted study resumes from here
            wall = time.perf_counter() - t0
            runs_info[f"{name}_N{N}"] = {
                "run": str(run_dir), "reused": reused, "wall_s": wall, "phase": new[0]["phase"],
                "divergences": new[0]["divergences"], "c": meta.get("c"),
            }
            print(f"[{'reuse' if reused else 'fit'}] {name} N={N}: phase {new[0]['phase']}, "
                  f"{new[0]['divergences']} divergences, {wall:.1f} s", flush=True)
            for r in new:
                print(f"    {r['observable']:>12s}: {r['mean']:+.4f} ± {r['mcse']:.4f}  theory(c) {r['theory_data_c']:+.4f}"
                      f"  theory(∞) {r['theory_limit']:+.4f}  R-hat {r['r_hat_max']:.3f}", flush=True)

    rows.sort(key=_sort_key)
    write_csv(csv_path, COLUMNS, rows)
    finish_study(
        out, "posterior_vs_theory", t_start, files=[CSV_NAME], table=markdown_table(rows),
        figures=[plot_diffs(rows, out / "diff_vs_n.png"), plot_means(rows, out / "means_vs_n.png")], seed=0,
        checks="THEORY.md §4 saddle-point values of λ_1, u_1, M, e_1ᵀWe_1, (1/N) log Z vs posterior means (§7)",
        settings={
            "quick": bool(args.quick), "sizes": list(sizes), "specs": list(specs),
            "num_warmup": nuts.get("inference.num_warmup", "spec"), "num_samples": nuts.get("inference.num_samples", "spec"),
            "num_chains": "spec", "resume": bool(args.resume), "c_limit": list(C_LIMIT), "omega": OMEGA,
            "teacher_seed": "spec (0)", "inference_seed": "spec (0)",
        },
        runs=runs_info,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
