"""Temperature tuning: typical forward KL against the sampling temperature β (THEORY.md §6).

Checks the THEORY.md §6 curve "Sampling temperature β (temperature tuning)"

    ⟨D(P* ‖ P_{βW})⟩/N = β E_fwd + ½ S(μ̃; γη/β²) − ½(1 − log ω)

(:func:`bayes_sbm.theory.forward_kl_typical_beta`) with its window
(β_c, √(γη)) (:func:`bayes_sbm.theory.temperature_window`), inside which the
sampler condenses on the outlier and the forward KL is lowered, at η = 5,
γ ∈ {1.7, 2, 3}, ω = 2.5, K = 2, N ∈ {200, 1000}.

One NUTS fit per (N, γ) from the teacher–student sweep
``models/sweeps/teacher_student.toml`` (``models/fmo.toml`` with ``model.N``,
``model.gamma``, ``model.eta`` overridden, band representation of THEORY.md
§8; teacher seed 0, inference seed 0), run on Dask distributed (a
LocalCluster here, ``--scheduler tcp://HOST:8786`` for a cluster; a rerun
skips finished points; the fits are shared with the double-descent study).
β only rescales W in p(x | βW), so no refitting is needed: for each β of the
grid the exact per-draw forward KL ``D(P* ‖ p(·|βW_s))`` comes from
:func:`bayes_sbm.reports.run_typical_kls` (band draws without N × N
matrices, averaged exactly over the Haar block; MCSE from the ESS of the
per-draw series).  The finite-N argmin is refined by a bounded
scalar minimisation of the posterior-mean curve (same draws) and compared
with the theory argmin; the gain ``KL(β=1) − KL(β*)`` is reported with a
paired standard error (per-draw differences).  Default: N ∈ {200, 1000}.

Outputs (in ``--out``, default ``analysis/temperature_tuning/results``):

* ``kl_vs_beta.csv`` — finite N: one row per (N, γ, β): forward and reverse
  typical KL per N ± MCSE, theory, difference, sampling phase;
* ``theory_curves.csv`` — the theory curve on a fine β grid per γ;
* ``argmin.csv`` — per (N, γ): theory window and argmin, finite-N argmin
  (grid and refined), KL at β = 1 and at the argmin, gain ± SE;
* ``table.md`` — the finite-N vs theory table (argmins, gains, KL at β = 1);
* ``temperature_tuning.png`` — forward KL vs β: finite N (points ± MCSE) over
  the theory curves, windows shaded, argmins marked;
* ``metadata.json``.

``--quick``: N = 10, γ = 2, 5 β values, 2 chains of 100 + 100 draws of the
band model in ``OUT/runs`` (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    NUTS_SEEDS, TEACHER_STUDENT_SWEEP, add_teacher_student_options, finish_study, float_list, fmt_num, md_head,
    md_row,
    pick_values, pin_threads, run_study_sweep, start_study, study_parser, teacher_student_facts, teacher_student_sweep,
    write_csv,
)

pin_threads()  # before NumPy/JAX are imported (the Dask workers pin themselves)

import math  # noqa: E402
import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import minimize_scalar  # noqa: E402

from bayes_sbm import _stats, reports, theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402

HERE = Path(__file__).resolve().parent

ETA = 5.0
GAMMAS = (1.7, 2.0, 3.0)
SIZES = (200, 1000)
BETAS = tuple(np.round(np.linspace(0.6, 3.0, 15), 6))
QUICK_GAMMAS = (2.0,)
QUICK_SIZES = (10,)
QUICK_BETAS = tuple(np.round(np.linspace(0.6, 3.0, 5), 6))
THEORY_BETAS = np.linspace(0.3, 4.5, 1500)

KL_COLUMNS = ("N", "gamma", "eta", "omega", "beta", "fwd_per_n", "fwd_se_per_n", "theory_fwd", "diff", "z",
              "rev_per_n", "rev_se_per_n", "fwd_ess", "sampling_phase", "posterior_phase", "c_1", "c_2",
              "divergences", "latent_min_ess_bulk", "num_draws")
THEORY_COLUMNS = ("gamma", "eta", "omega", "beta", "theory_fwd", "sampling_phase")
ARGMIN_COLUMNS = ("N", "gamma", "eta", "omega", "beta_c", "beta_edge", "theory_argmin", "theory_min", "theory_beta1",
                  "grid_argmin", "refined_argmin", "refined_min", "refined_min_se", "kl_beta1", "kl_beta1_se",
                  "gain", "gain_se", "theory_gain", "argmin_diff", "fit_wall_s", "kl_wall_s")


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def theory_curve(gamma: float, eta: float, omega: float):
    vals = np.array([theory.forward_kl_typical_beta(gamma, eta, omega, b) for b in THEORY_BETAS])
    i = int(np.argmin(vals))
    lo, hi = THEORY_BETAS[max(0, i - 2)], THEORY_BETAS[min(len(THEORY_BETAS) - 1, i + 2)]
    r = minimize_scalar(lambda b: theory.forward_kl_typical_beta(gamma, eta, omega, b), bounds=(lo, hi),
                        method="bounded", options={"xatol": 1e-7})
    argmin, kl_min = (float(r.x), float(r.fun)) if r.fun <= vals[i] else (float(THEORY_BETAS[i]), float(vals[i]))
    return vals, argmin, kl_min


def study_one(point, betas):
    """Forward/reverse typical KLs of one finished sweep point on the β grid, and its argmin summary."""
    facts = teacher_student_facts(point)
    N, omega, gamma, eta = facts["N"], facts["omega"], facts["gamma"], facts["eta"]
    t0 = time.perf_counter()
    kl_at = reports.run_typical_kl_function(facts["run"])  # the run and the teacher read once for every β
    cache: dict[float, object] = {}

    def kl(b):
        b = float(b)
        if b not in cache:
            cache[b] = kl_at(b)
        return cache[b]

    rows = []
    for b in betas:
        t = kl(b)
        th = float(theory.forward_kl_typical_beta(gamma, eta, omega, b))
        diff = t.forward_per_n - th
        rows.append({
            "N": N, "gamma": gamma, "eta": eta, "omega": omega, "beta": float(b),
            "fwd_per_n": t.forward_per_n, "fwd_se_per_n": t.forward_se_per_n, "theory_fwd": th, "diff": diff,
            "z": diff / t.forward_se_per_n if t.forward_se_per_n > 0 else math.nan,
            "rev_per_n": t.reverse_per_n, "rev_se_per_n": t.reverse_se_per_n, "fwd_ess": t.forward_ess,
            "sampling_phase": theory.sampling_phase(gamma, eta, omega, b), "posterior_phase": facts["phase"],
            "c_1": facts["c_1"], "c_2": facts["c_2"],
            "divergences": facts["divergences"], "latent_min_ess_bulk": facts["latent_min_ess_bulk"],
            "num_draws": facts["num_draws"],
        })
    # refine the finite-N argmin on the posterior-mean curve (same draws: a smooth function of β)
    ys = np.array([r["fwd_per_n"] for r in rows])
    i = int(np.argmin(ys))
    bs = np.array([r["beta"] for r in rows])
    lo, hi = bs[max(0, i - 1)], bs[min(len(bs) - 1, i + 1)]
    refined = float(bs[i])
    if hi > lo:
        r = minimize_scalar(lambda b: kl(b).forward_per_n, bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
        if r.fun <= ys[i]:
            refined = float(r.x)
    t_star, t_one = kl(refined), kl(1.0)
    _, th_argmin, th_min = theory_curve(gamma, eta, omega)
    th_beta1 = float(theory.forward_kl_typical_beta(gamma, eta, omega, 1.0))
    beta_c, beta_edge = theory.temperature_window(gamma, eta, omega)
    summary = {
        "N": N, "gamma": gamma, "eta": eta, "omega": omega, "beta_c": beta_c, "beta_edge": beta_edge,
        "theory_argmin": th_argmin, "theory_min": th_min, "theory_beta1": th_beta1,
        "grid_argmin": float(bs[i]), "refined_argmin": refined,
        "refined_min": t_star.forward_per_n, "refined_min_se": t_star.forward_se_per_n,
        "kl_beta1": t_one.forward_per_n, "kl_beta1_se": t_one.forward_se_per_n,
        "gain": t_one.forward_per_n - t_star.forward_per_n,
        "gain_se": _stats.mean_mcse(t_one.forward - t_star.forward).mcse / N,  # paired: per-draw differences
        "theory_gain": th_beta1 - th_min, "argmin_diff": refined - th_argmin,
        "fit_wall_s": facts["fit_wall_s"], "kl_wall_s": time.perf_counter() - t0,
    }
    return rows, summary


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------
def markdown_table(rows: list[dict], argmins: list[dict]) -> str:
    lines = ["# Temperature tuning: typical forward KL vs β (THEORY.md §6)", "",
             "## argmin β and the gain KL(β=1) − KL(β*) (per N)", "",
             "finite-N argmin: grid minimum refined by a bounded minimisation of the posterior-mean curve (same draws). "
             "gain SE: paired (per-draw differences).", ""]
    head = ("N", "γ", "η", "window (β_c, √γη)", "argmin theory", "argmin finite N (grid)", "argmin diff",
            "KL(β=1) ± SE", "theory KL(β=1)", "KL(β*) ± SE", "theory min", "gain ± SE", "theory gain")
    lines += md_head(head)
    for a in argmins:
        lines.append(md_row([
            str(a["N"]), fmt_num(a["gamma"], 2), fmt_num(a["eta"], 2), f"({fmt_num(a['beta_c'], 3)}, {fmt_num(a['beta_edge'], 3)})",
            fmt_num(a["theory_argmin"], 3), f"{fmt_num(a['refined_argmin'], 3)} ({fmt_num(a['grid_argmin'], 3)})",
            fmt_num(a["argmin_diff"], 3), f"{fmt_num(a['kl_beta1'])} ± {fmt_num(a['kl_beta1_se'])}", fmt_num(a["theory_beta1"]),
            f"{fmt_num(a['refined_min'])} ± {fmt_num(a['refined_min_se'])}", fmt_num(a["theory_min"]),
            f"{fmt_num(a['gain'])} ± {fmt_num(a['gain_se'])}", fmt_num(a["theory_gain"]),
        ]))
    lines += ["", "## forward KL per N on the β grid", ""]
    head = ("N", "γ", "β", "sampling phase", "finite N ± MCSE", "theory", "diff", "diff/SE", "reverse ± MCSE")
    lines += md_head(head)
    for r in rows:
        lines.append(md_row([
            str(r["N"]), fmt_num(r["gamma"], 2), fmt_num(r["beta"], 3), r["sampling_phase"],
            f"{fmt_num(r['fwd_per_n'])} ± {fmt_num(r['fwd_se_per_n'])}", fmt_num(r["theory_fwd"]), fmt_num(r["diff"]),
            fmt_num(r["z"], 2), f"{fmt_num(r['rev_per_n'])} ± {fmt_num(r['rev_se_per_n'])}",
        ]))
    return "\n".join(lines) + "\n"


def plot(rows, theory_rows, argmins, path: Path) -> Path:
    gammas = sorted({r["gamma"] for r in theory_rows} | {r["gamma"] for r in rows})
    sizes = sorted({r["N"] for r in rows})
    colors = {g: plt.cm.plasma(x) for g, x in zip(gammas, np.linspace(0.0, 0.75, max(1, len(gammas))))}
    markers = dict(zip(sizes, "osD^v"))
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    lo_y, hi_y = [], []
    for g in gammas:
        col = colors[g]
        th = sorted((r for r in theory_rows if r["gamma"] == g), key=lambda r: r["beta"])
        if th:
            b = np.array([r["beta"] for r in th])
            y = np.array([r["theory_fwd"] for r in th])
            ax.plot(b, y, color=col, lw=1.8, label=rf"theory $\gamma={g:g}$")
            lo_y.append(y.min())
            hi_y.append(np.interp(1.0, b, y))
        a0 = next((a for a in argmins if a["gamma"] == g), None)
        if a0 is not None:
            if math.isfinite(a0["beta_c"]):
                ax.axvspan(a0["beta_c"], a0["beta_edge"], color=col, alpha=0.10)
            ax.plot(a0["theory_argmin"], a0["theory_min"], "v", color=col, mec="k", ms=9)
        for N in sizes:
            sel = sorted((r for r in rows if r["gamma"] == g and r["N"] == N), key=lambda r: r["beta"])
            if not sel:
                continue
            ax.errorbar([r["beta"] for r in sel], [r["fwd_per_n"] for r in sel], yerr=[r["fwd_se_per_n"] for r in sel],
                        color=col, marker=markers.get(N, "o"), linestyle=":", capsize=3, mfc="white",
                        label=rf"NUTS $N={N}$, $\gamma={g:g}$")
            lo_y.append(min(r["fwd_per_n"] for r in sel))
            hi_y.append(max(r["fwd_per_n"] for r in sel))
            a = next((a for a in argmins if a["gamma"] == g and a["N"] == N), None)
            if a is not None:
                ax.errorbar(a["refined_argmin"], a["refined_min"], yerr=a["refined_min_se"], color=col, marker="*",
                            ms=13, mec="k", linestyle="none")
    ax.axvline(1.0, color="k", lw=0.8)
    if lo_y:
        span = max(hi_y) - min(lo_y)
        ax.set_ylim(min(lo_y) - 0.15 * span - 0.02, max(hi_y) + 0.25 * span + 0.02)
    betas = [r["beta"] for r in rows] or [0.6, 3.0]
    ax.set_xlim(min(betas) - 0.15, max(betas) + 0.3)
    ax.set_xlabel(r"sampling inverse temperature $\beta$")
    ax.set_ylabel(r"$\langle D(P^*\|P_{\beta W})\rangle/N$")
    ax.set_title("Temperature tuning (THEORY.md §6): shaded $(\\beta_c, \\sqrt{\\gamma\\eta})$; "
                 r"$\blacktriangledown$ theory argmin, $\bigstar$ finite-N argmin", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results", "smoke test: N = 10, gamma = 2, 5 beta values, 2 chains of 100+100 draws")
    add_teacher_student_options(p, ",".join(map(str, SIZES)), f"{ETA:g}", ",".join(f"{g:g}" for g in GAMMAS))
    p.add_argument("--betas", type=float_list, help="beta grid (default 15 points 0.6..3)")
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    q = args.quick
    sizes = pick_values(args.sizes, q, QUICK_SIZES, SIZES)
    gammas = pick_values(args.gammas, q, QUICK_GAMMAS, GAMMAS)
    etas = pick_values(args.etas, q, (ETA,), (ETA,))
    betas = tuple(sorted(set(args.betas))) if args.betas else (QUICK_BETAS if q else BETAS)
    sw = teacher_student_sweep(args, out, {"model.N": list(sizes), "model.eta": list(etas), "model.gamma": list(gammas)})
    points, failed, _, sweep_wall = run_study_sweep(sw, analyse_only=args.analyse_only, scheduler=args.scheduler,
                                                    workers=args.workers, processes=not q)
    omega = float(np.ravel(sw.base.data.omega)[0])
    kl_path, th_path, am_path = out / "kl_vs_beta.csv", out / "theory_curves.csv", out / "argmin.csv"

    # theory curves (cheap: always recomputed)
    theory_rows = []
    for eta in etas:
        for g in gammas:
            vals, _, _ = theory_curve(g, eta, omega)
            theory_rows += [{"gamma": g, "eta": eta, "omega": omega, "beta": float(b), "theory_fwd": float(v),
                             "sampling_phase": theory.sampling_phase(g, eta, omega, b)} for b, v in zip(THEORY_BETAS, vals)]
    write_csv(th_path, THEORY_COLUMNS, theory_rows)

    rows, argmins, fits = [], [], {}
    for point in points:
        new, summary = study_one(point, betas)
        rows += new
        argmins.append(summary)
        N, g, eta = summary["N"], summary["gamma"], summary["eta"]
        facts = {k: new[0][k] for k in ("divergences", "latent_min_ess_bulk", "num_draws")} | {"fit_wall_s": summary["fit_wall_s"]}
        fits[f"N{N}_eta{eta:g}_gamma{g:g}"] = facts
        print(f"[kl] N={N} gamma={g:g} eta={eta:g}: {facts['divergences']:.0f} divergences, min latent ESS "
              f"{facts['latent_min_ess_bulk']:.0f}, KLs {summary['kl_wall_s']:.1f} s", flush=True)
        print(f"    argmin beta: finite N {summary['refined_argmin']:.3f} (grid {summary['grid_argmin']:.3f}), theory "
              f"{summary['theory_argmin']:.3f}, window ({summary['beta_c']:.3f}, {summary['beta_edge']:.3f}); "
              f"gain {summary['gain']:.4f} ± {summary['gain_se']:.4f} (theory {summary['theory_gain']:.4f})", flush=True)
    rows.sort(key=lambda r: (r["N"], r["eta"], r["gamma"], r["beta"]))
    argmins.sort(key=lambda r: (r["N"], r["eta"], r["gamma"]))
    write_csv(kl_path, KL_COLUMNS, rows)
    write_csv(am_path, ARGMIN_COLUMNS, argmins)

    finish_study(
        out, "temperature_tuning", t_start, files=[kl_path.name, th_path.name, am_path.name],
        table=markdown_table(rows, argmins), figures=[plot(rows, theory_rows, argmins, out / "temperature_tuning.png")],
        seed=0,
        checks="THEORY.md §6 typical forward KL vs beta (forward_kl_typical_beta) and the window (beta_c, sqrt(gamma eta))",
        quick=bool(q),
        settings={"sizes": list(sizes), "gammas": list(gammas), "etas": list(etas), "omega": omega, "betas": list(betas),
                  "sweep_file": str(TEACHER_STUDENT_SWEEP.relative_to(TEACHER_STUDENT_SWEEP.parents[2])),
                  "runs": str(sw.out), "seeds": NUTS_SEEDS,
                  "theory_beta_grid": [float(THEORY_BETAS[0]), float(THEORY_BETAS[-1]), len(THEORY_BETAS)]},
        fits=fits, argmins=argmins, failed=failed, sweep_wall_s=sweep_wall,
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
