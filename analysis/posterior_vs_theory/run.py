"""Posterior means against the large-N spectral saddle point, with finite-size extrapolation (THEORY.md §4, §7).

Checks the first item of THEORY.md §7 at large N: for a teacher–student data
set in every phase, the posterior means of λ_1, u_1, M, e_1ᵀWe_1 and
(1/N) log Z(W), their difference from the theory, and that the difference
vanishes as N → ∞ — measured as a finite-size law fitted over N and its
extrapolated N → ∞ value with a standard error.

The fits run as one sweep (:mod:`bayes_sbm.sweep`, the grid of
``models/sweeps/posterior_vs_theory.toml``: the five phase specs
``models/{pmo,pme,fmo,fme,sg}.toml`` × N ∈ {100, 200, 400, 1000, 2000} × teacher
seed, band representation of THEORY.md §8, 2 chains × (300 + 300) NUTS draws)
on Dask distributed: a LocalCluster of single-threaded workers here, or an
existing cluster with ``--scheduler tcp://HOST:8786`` (the same study at
N = 10⁴ on a cluster is ``--sizes ... 10000 --scheduler ...``).  Each point is
a run folder written atomically; a rerun skips finished points.

Observables per draw W (THEORY.md §4 "measurable finite-N counterparts"):
``lam_1``, ``u_1`` = (v_1·e_1)², ``M`` = (2/N)∂log Z/∂λ_1, ``signal_1`` =
e_1ᵀWe_1, ``log_z_per_n``; and, for the edge phases, the condensate resolved
over the top modes (:func:`bayes_sbm.band.edge_observables`):

* ``Q_1`` = E_{p(x|W)}[(e_1·x)²]/N = (2/N)∂log Z/∂W_11 — the weight of the
  Gibbs measure along the top data axis.  It needs no choice of modes: in a
  condensed phase it is M·u_1 + O(1/N) (the condensate carries a fraction M of
  |x|², a fraction u_1 of it along e_1; the bulk adds e_1ᵀ(z−W)⁻¹e_1/N), in a
  paramagnetic one O(1/N).  Theory: ``M u_1`` of §4.
* ``M_w`` = Σ_{k≤w} f_k, the occupation f_k = (2/N)∂log Z/∂λ_k summed over the
  top w modes, and ``u_w`` = Σ_{k≤w} f_k (v_k·e_1)² / M_w, the overlap of that
  condensate with e_1 (w = 4 and 8).  At finite N the edge modes are
  O(N^(-2/3)) apart and share the condensate; M_w, u_w test whether it is
  carried by a bounded number of them.  Theory: M and u_1 of §4.

Theory values: ``theory_data_c`` (the saddle point at the fitted data
spectrum, isolating the posterior's own finite-size corrections) and
``theory_limit`` (at the N → ∞ spectrum c = (1.6, 0.4)).  For each (phase,
observable) the difference d(N) = mean − theory_data_c is fitted by weighted
least squares as d = a + b N^(−p) for p ∈ {1, 2/3, 1/2, 1/3} (weights 1/SE²,
SE = MCSE, or the seed-to-seed SE when several seeds are given; the SE of a
is scaled up by √(χ²/dof) when χ²/dof > 1); the law with the smallest χ² is
reported, with a (the N → ∞ value is theory_limit + a) and z = a/SE(a).

Outputs (in ``--out``, default ``analysis/posterior_vs_theory/results``):

* ``posterior_vs_theory.csv`` — one row per (spec, N, seed, observable): mean,
  MCSE, both theory values and differences, R-hat and min ESS, divergences;
* ``finite_size.csv`` — one row per (spec, observable, law): a, SE(a), z, b,
  χ²/dof, whether it is the best law;
* ``table.md`` — the extrapolation table, then the per-point table;
* ``diff_vs_n.png`` — d(N) ± SE against N per phase with the best fitted law;
* ``means_vs_n.png`` — means ± MCSE against N with the theory values;
* ``edge_condensate.png`` — Q_1, M_w and u_w against N for the condensed phases;
* ``metadata.json`` — versions, seeds, settings, the sweep, timings;
* ``runs/`` — the sweep folder (one run folder per point, ``results.csv``/``.nc``).

``--quick``: specs fmo and fme at N ∈ {60, 80}, 1 chain × (60 + 60) draws,
Dask workers as threads of this process (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    C_LIMIT, FINITE_SIZE_LAWS, PHASE_COLORS, ROOT, extrapolations, finish_study, fmt_num, md_head, md_row, pin_threads,
    print_extrapolations, run_study_sweep, size_points, start_study, study_parser, sweep_from_file, write_csv,
)

pin_threads()  # before NumPy/JAX are imported (the Dask workers pin themselves)

import math  # noqa: E402
import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import _stats, band, diagnostics, inference, sweep, theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402
from bayes_sbm.runs import load_run  # noqa: E402

HERE = Path(__file__).resolve().parent
SWEEP_FILE = ROOT / "models" / "sweeps" / "posterior_vs_theory.toml"

SPECS = ("pmo", "pme", "fmo", "fme", "sg")
QUICK_SPECS = ("fmo", "fme")
QUICK_SIZES = (60, 80)
QUICK_SET = {"inference.num_warmup": 60, "inference.num_samples": 60, "inference.num_chains": 1}
#: Top modes resolved per draw, and the windows w of M_w, u_w.
EDGE_MODES = 8
WINDOWS = (4, 8)
#: Draws (evenly thinned over chains) on which the edge observables are computed; their MCSE accounts for it.
MAX_EDGE_DRAWS = 240

#: (observable, label); theory keys below.
OBSERVABLES = (
    ("lam_1", r"$\lambda_1$"),
    ("u_1", r"$u_1$"),
    ("M", r"$M$"),
    ("signal_1", r"$e_1^\top W e_1$"),
    ("log_z_per_n", r"$N^{-1}\log Z$"),
    ("Q_1", r"$Q_1=E[(e_1\cdot x)^2]/N$"),
    *((f"M_{w}", rf"$M_{w}$") for w in WINDOWS),
    *((f"u_{w}", rf"$u_{{({w})}}$") for w in WINDOWS),
)
#: Posterior variables of the stored observables: (observable, variable, component).
STORED = (("lam_1", "lam_top", 0), ("u_1", "u", 0), ("M", "M", None), ("signal_1", "signal", 0), ("log_z_per_n", "log_z_per_n", None))
COLUMNS = (
    "spec", "phase", "N", "seed", "observable", "mean", "mcse", "theory_data_c", "diff", "theory_limit", "diff_limit",
    "r_hat", "min_ess", "divergences", "fit_s", "phase_limit", "c_1", "c_2", "num_draws",
)
FSS_COLUMNS = ("spec", "phase", "observable", "law", "p", "num_sizes", "a", "se_a", "z", "b", "chi2_dof", "best",
               "theory_limit", "extrapolated")
CSV_NAME, FSS_NAME = "posterior_vs_theory.csv", "finite_size.csv"


# --------------------------------------------------------------------------
# theory
# --------------------------------------------------------------------------
def theory_values(ref: dict) -> dict[str, float]:
    """Observable → §4 value from an ``ObservableReference.as_dict()`` (edge observables: M, u_1, M·u_1)."""

    def first(key):
        v = ref.get(key)
        arr = np.ravel(np.asarray(v if v is not None else math.nan, dtype=float))
        return float(arr[0]) if arr.size else math.nan

    M, u = first("M"), first("u")
    out = {"lam_1": first("lam"), "u_1": u, "M": M, "signal_1": first("signal"), "log_z_per_n": first("log_z_per_n"),
           "Q_1": M * u}
    for w in WINDOWS:
        out[f"M_{w}"], out[f"u_{w}"] = M, u
    return out


# --------------------------------------------------------------------------
# per-run observables
# --------------------------------------------------------------------------
def _latent_draws(dt) -> np.ndarray:
    for group in ("unconstrained_posterior", "posterior"):
        if group in dt.children and "z" in dt[group].data_vars:
            return np.asarray(dt[group]["z"].values, dtype=np.float64)
    raise ValueError("the run stores no latent z (not a band run?)")


def edge_draws(dt, data: np.ndarray, gamma: float, eta: float) -> dict[str, np.ndarray]:
    """Per-draw Q_1, M_w, u_w of a band run, on draws thinned to at most MAX_EDGE_DRAWS: name → (chain, draw)."""
    z = _latent_draws(dt)
    chains, draws = z.shape[:2]
    keep = np.unique(np.linspace(0, draws - 1, max(1, min(draws, MAX_EDGE_DRAWS // chains))).round().astype(int))
    z = z[:, keep]
    problem = inference.make_problem(data, gamma, eta, 1.0, "band")
    T = inference.band_draws(problem, z.reshape((-1, z.shape[-1])))
    edge = band.edge_observables(T, 1, min(EDGE_MODES, problem.N))
    shape = (chains, keep.size)
    f, ov = edge.occupations, edge.overlaps[..., 0]  # (S, w), (S, w): (v_k·e_1)²
    out = {"Q_1": edge.data_condensate[:, 0].reshape(shape)}
    for w in WINDOWS:
        Mw = f[:, :w].sum(-1)
        out[f"M_{w}"] = Mw.reshape(shape)
        out[f"u_{w}"] = (np.sum(f[:, :w] * ov[:, :w], -1) / Mw).reshape(shape)
    return out


def rows_for_point(point, dt, meta: dict) -> list[dict]:
    """One CSV row per observable for the fitted run of a sweep point."""
    model = point.spec.model
    th_data = meta.get("theory") if isinstance(meta.get("theory"), dict) and "error" not in meta["theory"] else {}
    ref_lim = theory.observable_reference(C_LIMIT, model.gamma, model.eta).as_dict()
    t_data, t_lim = theory_values(th_data), theory_values(ref_lim)
    table = diagnostics.summary_table(dt, var_names=tuple(v for _, v, _ in STORED), theory={})
    c = [*list(meta.get("c", [])), math.nan, math.nan]
    stats: dict[str, tuple[float, float, float, float, int]] = {}
    for obs, var, index in STORED:
        labels = [lab for lab in table.labels if lab == var or lab.startswith(f"{var}[")]
        r = table.row(labels[0 if index is None else index])
        stats[obs] = (float(r["mean"]), float(r["mcse_mean"]), float(r["r_hat"]), float(np.nanmin([r["ess_bulk"], r["ess_tail"]])),
                      int(dt["posterior"].sizes["chain"] * dt["posterior"].sizes["draw"]))
    if dt.attrs.get("parametrization") == "band":
        data = np.asarray(dt["observed_data"]["x"].values, dtype=np.float64)
        for obs, draws in edge_draws(dt, data, model.gamma, model.eta).items():
            m = _stats.mean_mcse(draws)
            stats[obs] = (m.mean, m.mcse, math.nan, m.ess, int(draws.size))
    rows = []
    for obs, _ in OBSERVABLES:
        if obs not in stats:
            continue
        mean, mcse, rhat, ess, n = stats[obs]
        rows.append({
            "spec": point.values.get("spec", point.spec.name), "phase": th_data.get("phase", "n/a"), "N": int(model.N),
            "seed": int(point.spec.data.seed), "observable": obs, "mean": mean, "mcse": mcse,
            "theory_data_c": t_data[obs], "diff": mean - t_data[obs], "theory_limit": t_lim[obs], "diff_limit": mean - t_lim[obs],
            "r_hat": rhat, "min_ess": ess, "divergences": int(meta.get("divergences", -1)),
            "fit_s": float((meta.get("timing") or {}).get("wall_s", math.nan)), "phase_limit": ref_lim["phase"],
            "c_1": float(c[0]), "c_2": float(c[1]), "num_draws": n,
        })
    return rows


# --------------------------------------------------------------------------
# finite-size scaling
# --------------------------------------------------------------------------
def _points(rows: list[dict], spec: str, obs: str):
    return size_points(rows, lambda r: r["spec"] == spec and r["observable"] == obs)


def finite_size_rows(rows: list[dict]) -> list[dict]:
    """Every finite-size law fitted to d(N) per (spec, observable) (:func:`analysis._common.extrapolations`)."""
    out = []
    for spec in dict.fromkeys(r["spec"] for r in rows):
        for obs, _ in OBSERVABLES:
            N, d, se = _points(rows, spec, obs)
            if N.size == 0:
                continue
            ref = next(r for r in rows if r["spec"] == spec and r["observable"] == obs)
            for f in extrapolations(N, d, se):
                out.append({"spec": spec, "phase": ref["phase_limit"], "observable": obs, **f,
                            "theory_limit": ref["theory_limit"], "extrapolated": ref["theory_limit"] + f["a"]})
    return out


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------
def markdown_table(rows: list[dict], fss: list[dict]) -> str:
    lines = [
        "# Posterior means vs THEORY.md §4: finite-size extrapolation",
        "",
        "d(N) = mean − theory at the fitted data spectrum, fitted as d = a + b N^(−p) (weighted by the MCSE; the law with "
        "the smallest χ² shown). N → ∞ value = theory (c = 1.6, 0.4) + a; z = a / SE(a) (|z| ≤ 3: consistent with theory). "
        "Q_1 = E[(e_1·x)²]/N against M u_1; M_w, u_w: the condensate of the top w modes and its overlap with e_1.",
        "",
        *md_head(("spec", "phase (N→∞)", "observable", "law", "sizes", "N → ∞ value ± SE", "theory", "z", "χ²/dof")),
    ]
    for f in fss:
        if not f["best"]:
            continue
        lines.append(md_row([f["spec"], f["phase"], f["observable"], f["law"], str(f["num_sizes"]),
                             f"{fmt_num(f['extrapolated'])} ± {fmt_num(f['se_a'])}", fmt_num(f["theory_limit"]),
                             fmt_num(f["z"], 2), fmt_num(f["chi2_dof"], 2)]))
    lines += ["", "## Per point", "", *md_head(("spec", "phase", "N", "seed", "observable", "mean ± MCSE", "theory (data c)", "diff",
                                                 "theory (N→∞)", "R-hat", "min ESS", "div.", "fit (s)"))]
    for r in rows:
        lines.append(md_row([r["spec"], r["phase"], str(r["N"]), str(r["seed"]), r["observable"],
                             f"{fmt_num(r['mean'])} ± {fmt_num(r['mcse'])}", fmt_num(r["theory_data_c"]), fmt_num(r["diff"]),
                             fmt_num(r["theory_limit"]), fmt_num(r["r_hat"], 3),
                             f"{r['min_ess']:.0f}" if math.isfinite(r["min_ess"]) else "–", str(r["divergences"]),
                             fmt_num(r["fit_s"], 1)]))
    return "\n".join(lines) + "\n"


def _color(spec: str, rows: list[dict], i: int) -> str:
    phase = next((r["phase_limit"] for r in rows if r["spec"] == spec), "")
    return PHASE_COLORS.get(phase, f"C{i}")


def _grid(n: int):
    ncols = 4
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained", squeeze=False)
    return fig, axes.ravel()


def _finish(fig, axes, used: int, title: str, path: Path) -> Path:
    """Blank the unused panels, one legend below (the first panel's entries), the title; save."""
    for ax in axes[used:]:
        ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_diffs(rows: list[dict], fss: list[dict], path: Path) -> Path:
    specs = list(dict.fromkeys(r["spec"] for r in rows))
    fig, axes = _grid(len(OBSERVABLES))
    for ax, (obs, label) in zip(axes, OBSERVABLES):
        for i, spec in enumerate(specs):
            N, d, se = _points(rows, spec, obs)
            if N.size == 0:
                continue
            color = _color(spec, rows, i)
            ax.errorbar(N, d, yerr=se, color=color, marker="o", linestyle="none", capsize=3, label=spec)
            best = next((f for f in fss if f["spec"] == spec and f["observable"] == obs and f["best"]), None)
            if best is not None and math.isfinite(best["a"]):
                grid = np.geomspace(N.min(), 1e5, 60)
                ax.plot(grid, best["a"] + best["b"] * grid ** (-best["p"]), color=color, linewidth=1.2)
                ax.errorbar([1.4e5], [best["a"]], yerr=[best["se_a"]], color=color, marker="s", capsize=3)
        ax.axhline(0.0, color="k", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("N (square: N → ∞ extrapolation)")
        ax.set_title(f"{label}: mean − theory")
        ax.grid(True, alpha=0.3)
    return _finish(fig, axes, len(OBSERVABLES), "Finite-size scaling of posterior means (THEORY.md §4): points ± SE, best law a + b N^-p", path)


def plot_means(rows: list[dict], path: Path) -> Path:
    specs = list(dict.fromkeys(r["spec"] for r in rows))
    fig, axes = _grid(len(OBSERVABLES))
    for ax, (obs, label) in zip(axes, OBSERVABLES):
        for i, spec in enumerate(specs):
            group = sorted((r for r in rows if r["spec"] == spec and r["observable"] == obs), key=lambda r: (r["N"], r["seed"]))
            if not group:
                continue
            color = _color(spec, rows, i)
            N = [r["N"] for r in group]
            ax.errorbar(N, [r["mean"] for r in group], yerr=[r["mcse"] for r in group], color=color, marker="o", capsize=3,
                        linestyle="none", label=spec)
            ax.plot(N, [r["theory_data_c"] for r in group], color=color, marker="x", linestyle="none")
            ax.axhline(group[0]["theory_limit"], color=color, linestyle="--", linewidth=1.0)
        ax.set_xscale("log")
        ax.set_xlabel("N")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    return _finish(fig, axes, len(OBSERVABLES), "Posterior means ± MCSE vs N; ×: theory at the data c; dashed: N → ∞ theory", path)


def plot_edge(rows: list[dict], path: Path) -> Path:
    """Q_1 / (M u_1), M_w / M and u_w / u_1 against N: the condensate resolved over the top modes, in units of theory."""
    names = [("Q_1", "Q_1 / (M u_1)")] + [(f"M_{w}", f"M_{w} / M") for w in WINDOWS] + [(f"u_{w}", f"u_({w}) / u_1") for w in WINDOWS] \
        + [("M", "M (top mode) / M"), ("u_1", "u_1 (top mode) / u_1")]
    specs = [s for s in dict.fromkeys(r["spec"] for r in rows)
             if any(r["spec"] == s and r["observable"] == "Q_1" and abs(r["theory_limit"]) > 0 for r in rows)]
    fig, axes = _grid(len(names))
    for ax, (obs, label) in zip(axes, names):
        for i, spec in enumerate(specs):
            group = sorted((r for r in rows if r["spec"] == spec and r["observable"] == obs and r["theory_data_c"]),
                           key=lambda r: (r["N"], r["seed"]))
            if not group:
                continue
            t = np.array([r["theory_data_c"] for r in group])
            ax.errorbar([r["N"] for r in group], np.array([r["mean"] for r in group]) / t,
                        yerr=np.array([r["mcse"] for r in group]) / np.abs(t), color=_color(spec, rows, i), marker="o",
                        capsize=3, label=spec)
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("N")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    return _finish(fig, axes, len(names), "Condensate over the top modes vs theory (1 = THEORY.md §4 at the data c)", path)


def _sort_key(r: dict):
    order = {s: i for i, s in enumerate(SPECS)}
    obs = {o: i for i, (o, _) in enumerate(OBSERVABLES)}
    return order.get(r["spec"], 99), r["spec"], int(r["N"]), int(r["seed"]), obs.get(r["observable"], 99)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results",
                     f"smoke test: specs {QUICK_SPECS}, N in {QUICK_SIZES}, 1 chain x (60 + 60) draws, threads")
    p.add_argument("--sizes", type=int, nargs="+", help="values of N (default: the sweep file's)")
    p.add_argument("--specs", nargs="+", choices=SPECS, help="phase specs (default: all five)")
    p.add_argument("--seeds", type=int, nargs="+", help="teacher seeds (default: the sweep file's)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    p.add_argument("--analyse-only", action="store_true", help="no fitting: analyse the points already finished")
    return p


def make_sweep(args, out: Path) -> sweep.Sweep:
    """The sweep file's grid, narrowed by the command line; point folders under ``out/runs``."""
    return sweep_from_file(
        SWEEP_FILE, out / "runs", specs=args.specs or (QUICK_SPECS if args.quick else None),
        grid={"model.N": args.sizes or (QUICK_SIZES if args.quick else None), "data.seed": args.seeds},
        fixed=QUICK_SET if args.quick else None,
    )


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    sw = make_sweep(args, out)
    points, failed, fit_seconds, fit_wall = run_study_sweep(sw, analyse_only=args.analyse_only, scheduler=args.scheduler,
                                                            workers=args.workers, processes=not args.quick)
    t_an = time.perf_counter()
    rows = []
    for point in points:
        dt, meta = load_run(point.folder / sweep.RUN_DIR)
        rows += rows_for_point(point, dt, meta)
    rows.sort(key=_sort_key)
    fss = finite_size_rows(rows)
    analysis_wall = time.perf_counter() - t_an
    write_csv(out / CSV_NAME, COLUMNS, rows)
    write_csv(out / FSS_NAME, FSS_COLUMNS, fss)
    print_extrapolations(fss, "observable")
    finish_study(
        out, "posterior_vs_theory", t_start, files=[CSV_NAME, FSS_NAME], table=markdown_table(rows, fss),
        figures=[plot_diffs(rows, fss, out / "diff_vs_n.png"), plot_means(rows, out / "means_vs_n.png"),
                 plot_edge(rows, out / "edge_condensate.png")], seed=0,
        checks="THEORY.md §4 saddle-point values of λ_1, u_1, M, e_1ᵀWe_1, (1/N) log Z, and M u_1 (Q_1), vs posterior "
               "means extrapolated to N → ∞ (§7)",
        settings={"quick": bool(args.quick), "sweep": sw.to_dict(), "scheduler": args.scheduler or "LocalCluster",
                  "edge_modes": EDGE_MODES, "windows": list(WINDOWS), "max_edge_draws": MAX_EDGE_DRAWS, "laws": FINITE_SIZE_LAWS,
                  "c_limit": list(C_LIMIT)},
        timing={"sweep_wall_s": fit_wall, "analysis_wall_s": analysis_wall, "point_seconds": fit_seconds},
        failed=failed,
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
