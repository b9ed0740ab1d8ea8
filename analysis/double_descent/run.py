"""Double descent: typical reverse KL against the regularisation γ (THEORY.md §6).

Checks the THEORY.md §6 curve "Regularisation (double descent)": the typical
reverse KL

    ⟨D(P_W ‖ P*)⟩/N = E_pp + ½(ω − log ω) − ½(1 − g_Z²/(2κ) + log g_Z)
    (PM phases: ½(ω − log ω − 1 + 1/(2γη)))

(``bayes_sbm.theory.teacher_student_kls(γ, η, 2.5).rev_typ``) as a function
of γ at η ∈ {0.5, 1, 2, 5}, ω = 2.5, K = 2: at η = 2, 5 (above η* ≈ 1.34) it dips,
rises across the FM/PM boundary and falls again; at η = 0.5, 1 it decreases.

One NUTS fit per (N, η, γ) from the teacher–student sweep
``models/sweeps/teacher_student.toml`` (``models/fmo.toml`` with ``model.N``,
``model.eta``, ``model.gamma`` overridden, band representation of THEORY.md
§8; teacher seed 0, inference seed 0), run on Dask distributed (a
LocalCluster here, ``--scheduler tcp://HOST:8786`` for a cluster); a rerun
skips finished points, and the run folders are shared with the
temperature-tuning and tempered-posterior studies.  The per-draw reverse and
forward KLs to the teacher are exact (:func:`bayes_sbm.reports.run_typical_kls`
at β = 1: band draws without N × N matrices, averaged exactly over the Haar
block; MCSE from the ESS of the per-draw series).  Default: N ∈ {200, 1000},
η ∈ {0.5, 1, 2, 5}, γ ∈ {0.2, 0.5, 1, 1.7, 2, 3, 5}.

Outputs (in ``--out``, default ``analysis/double_descent/results``):

* ``rev_kl_vs_gamma.csv`` — one row per (N, η, γ): typical reverse and
  forward KL per N ± MCSE, theory values, differences, phase, NUTS facts;
* ``theory_curves.csv`` — the theory curves on a fine γ grid per η;
* ``table.md`` — the finite-N vs theory table;
* ``double_descent.png`` — reverse (left) and forward (right) typical KL vs
  γ: NUTS points ± MCSE over the theory curves, phase changes marked;
* ``metadata.json``.

``--quick``: N = 10, η = 1, γ ∈ {0.3, 1, 3}, 2 chains of 100 + 100 draws of
the band model, in ``OUT/runs`` (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    NUTS_SEEDS, TEACHER_STUDENT_SWEEP, add_teacher_student_options, finish_study, fmt_num, md_head, md_row,
    pick_values, pin_threads, run_study_sweep, start_study, study_parser, teacher_student_facts, teacher_student_sweep,
    two_size_limit, write_csv,
)

pin_threads()  # before NumPy/JAX are imported (the Dask workers pin themselves)

import math  # noqa: E402
import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import reports, theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402

HERE = Path(__file__).resolve().parent

ETAS = (0.5, 1.0, 2.0, 5.0)
GAMMAS = (0.2, 0.5, 1.0, 1.7, 2.0, 3.0, 5.0)
SIZES = (200, 1000)
QUICK_ETAS = (1.0,)
QUICK_GAMMAS = (0.3, 1.0, 3.0)
QUICK_SIZES = (10,)
THEORY_GAMMAS = np.geomspace(0.05, 20.0, 500)

COLUMNS = ("N", "eta", "gamma", "omega", "rev_per_n", "rev_se_per_n", "theory_rev", "diff_rev", "z_rev",
           "fwd_per_n", "fwd_se_per_n", "theory_fwd", "diff_fwd", "phase", "phase_limit", "c_1", "c_2",
           "divergences", "latent_min_ess_bulk", "max_r_hat", "rev_ess", "num_draws", "fit_wall_s", "kl_wall_s")
THEORY_COLUMNS = ("eta", "gamma", "omega", "theory_rev", "theory_fwd", "phase")
STRINGS = ("phase", "phase_limit")


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def measure(point) -> dict:
    """The exact typical KLs (β = 1) of a finished sweep point to its teacher, next to THEORY.md §6."""
    f = teacher_student_facts(point)
    t0 = time.perf_counter()
    kl = reports.run_typical_kls(f["run"], [1.0])[0]
    kl_wall = time.perf_counter() - t0
    gamma, eta = f["gamma"], f["eta"]
    th = theory.teacher_student_kls(gamma, eta, f["omega"])
    z = lambda d, se: d / se if se > 0 else math.nan  # noqa: E731
    return {
        **{k: f[k] for k in ("N", "eta", "gamma", "omega")},
        "rev_per_n": kl.reverse_per_n, "rev_se_per_n": kl.reverse_se_per_n, "theory_rev": float(th.rev_typ),
        "diff_rev": kl.reverse_per_n - float(th.rev_typ), "z_rev": z(kl.reverse_per_n - float(th.rev_typ), kl.reverse_se_per_n),
        "fwd_per_n": kl.forward_per_n, "fwd_se_per_n": kl.forward_se_per_n, "theory_fwd": float(th.fwd_typ),
        "diff_fwd": kl.forward_per_n - float(th.fwd_typ),
        "phase": f["phase"], "phase_limit": th.phase, "c_1": f["c_1"], "c_2": f["c_2"],
        **{k: f[k] for k in ("divergences", "latent_min_ess_bulk", "max_r_hat")},
        "rev_ess": kl.reverse_ess, "num_draws": f["num_draws"], "fit_wall_s": f["fit_wall_s"], "kl_wall_s": kl_wall,
    }


LIMIT_COLUMNS = ("eta", "gamma", "kl", "phase_limit", "N_small", "N_large", "diff_small", "diff_large", "shrink",
                 "a_1_over_n", "se_1_over_n", "a_n_half", "se_n_half")


def limit_rows(rows: list[dict]) -> list[dict]:
    """Per (η, γ, direction): the differences from theory at the smallest and largest N, their ratio and the N → ∞
    limits under 1/N and N^(−1/2) through those two sizes (:func:`analysis._common.two_size_limit`)."""
    out = []
    sizes = sorted({r["N"] for r in rows})
    if len(sizes) < 2:
        return out
    n1, n2 = sizes[0], sizes[-1]
    for eta, g in sorted({(r["eta"], r["gamma"]) for r in rows}):
        pair = {r["N"]: r for r in rows if r["eta"] == eta and r["gamma"] == g and r["N"] in (n1, n2)}
        if len(pair) < 2:
            continue
        for kl in ("rev", "fwd"):
            (d1, s1), (d2, s2) = ((pair[n][f"diff_{kl}"], pair[n][f"{kl}_se_per_n"]) for n in (n1, n2))
            a1, e1 = two_size_limit(n1, d1, s1, n2, d2, s2, 1.0)
            ah, eh = two_size_limit(n1, d1, s1, n2, d2, s2, 0.5)
            out.append({"eta": eta, "gamma": g, "kl": kl, "phase_limit": pair[n2]["phase_limit"], "N_small": n1, "N_large": n2,
                        "diff_small": d1, "diff_large": d2, "shrink": d1 / d2 if d2 else math.nan,
                        "a_1_over_n": a1, "se_1_over_n": e1, "a_n_half": ah, "se_n_half": eh})
    return out


def theory_rows(etas, omega: float) -> list[dict]:
    out = []
    for eta in etas:
        for g in THEORY_GAMMAS:
            r = theory.teacher_student_kls(float(g), eta, omega)
            out.append({"eta": eta, "gamma": float(g), "omega": omega, "theory_rev": float(r.rev_typ),
                        "theory_fwd": float(r.fwd_typ), "phase": r.phase})
    return out


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------
def limits_table(limits: list[dict]) -> list[str]:
    if not limits:
        return []
    n1, n2 = limits[0]["N_small"], limits[0]["N_large"]
    lines = ["", f"## Finite-size trend: N = {n1} → {n2}", "",
             f"diff = finite N − theory; shrink = diff(N = {n1}) / diff(N = {n2}) (1/N: {n2 / n1:g}, N^-1/2: "
             f"{math.sqrt(n2 / n1):.2f}); the N → ∞ limit of diff through the two sizes under each law (no degree of freedom "
             "left to test the law).", "",
             *md_head(("η", "γ", "KL", "phase (N→∞)", f"diff N={n1}", f"diff N={n2}", "shrink", "limit (1/N) ± SE",
                       "limit (N^-1/2) ± SE"))]
    for r in limits:
        lines.append(md_row([fmt_num(r["eta"], 2), fmt_num(r["gamma"], 3), r["kl"], r["phase_limit"], fmt_num(r["diff_small"]),
                             fmt_num(r["diff_large"]), fmt_num(r["shrink"], 2),
                             f"{fmt_num(r['a_1_over_n'])} ± {fmt_num(r['se_1_over_n'])}",
                             f"{fmt_num(r['a_n_half'])} ± {fmt_num(r['se_n_half'])}"]))
    return lines


def markdown_table(rows: list[dict], limits: list[dict] = ()) -> str:
    head = ("N", "η", "γ", "phase (data c / N→∞)", "reverse KL ± MCSE", "theory", "diff", "diff/SE",
            "forward KL ± MCSE", "theory fwd", "div.", "min latent ESS")
    lines = ["# Typical reverse KL vs γ (THEORY.md §6, double descent)", "",
             "Per N. theory: teacher_student_kls(γ, η, ω).rev_typ / .fwd_typ (N → ∞ data spectrum c = (1.6, 0.4)); "
             "diff = finite N − theory.", "",
             *md_head(head)]
    for r in rows:
        lines.append(md_row([
            str(r["N"]), fmt_num(r["eta"], 2), fmt_num(r["gamma"], 3), f"{r['phase']} / {r['phase_limit']}",
            f"{fmt_num(r['rev_per_n'])} ± {fmt_num(r['rev_se_per_n'])}", fmt_num(r["theory_rev"]), fmt_num(r["diff_rev"]),
            fmt_num(r["z_rev"], 2), f"{fmt_num(r['fwd_per_n'])} ± {fmt_num(r['fwd_se_per_n'])}", fmt_num(r["theory_fwd"]),
            fmt_num(r["divergences"], 0), fmt_num(r["latent_min_ess_bulk"], 0),
        ]))
    lines += limits_table(list(limits))
    return "\n".join(lines) + "\n"


def plot(rows, th_rows, path: Path) -> Path:
    etas = sorted({r["eta"] for r in th_rows} | {r["eta"] for r in rows})
    sizes = sorted({r["N"] for r in rows})
    colors = {e: plt.cm.viridis(x) for e, x in zip(etas, np.linspace(0.0, 0.8, max(1, len(etas))))}
    markers = dict(zip(sizes, "osD^v"))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), layout="constrained")
    for ax, key, title in ((axes[0], "rev", r"typical reverse $\langle D(P_W\|P^*)\rangle/N$"),
                           (axes[1], "fwd", r"typical forward $\langle D(P^*\|P_W)\rangle/N$")):
        ys = []
        for e in etas:
            col = colors[e]
            th = sorted((r for r in th_rows if r["eta"] == e), key=lambda r: r["gamma"])
            if th:
                g = np.array([r["gamma"] for r in th])
                y = np.array([r[f"theory_{key}"] for r in th])
                ax.plot(g, y, color=col, lw=1.8, label=rf"theory $\eta={e:g}$")
                ph = [r["phase"] for r in th]
                for k in range(len(ph) - 1):
                    if ph[k] != ph[k + 1]:
                        gb = math.sqrt(g[k] * g[k + 1])
                        ax.axvline(gb, color=col, lw=0.8, ls=":")
                        ax.text(gb, 0.99, f" {ph[k]}|{ph[k + 1]}", color=col, fontsize=7, rotation=90, va="top",
                                transform=ax.get_xaxis_transform())
                ys += list(y[np.isfinite(y)])
            for N in sizes:
                sel = sorted((r for r in rows if r["eta"] == e and r["N"] == N), key=lambda r: r["gamma"])
                if not sel:
                    continue
                ax.errorbar([r["gamma"] for r in sel], [r[f"{key}_per_n"] for r in sel],
                            yerr=[r[f"{key}_se_per_n"] for r in sel], color=col, marker=markers.get(N, "o"), mfc="white",
                            linestyle="none", capsize=3, label=rf"NUTS $N={N}$, $\eta={e:g}$")
                ys += [r[f"{key}_per_n"] for r in sel]
        ax.set_xscale("log")
        if ys:
            lo, hi = float(np.nanmin(ys)), float(np.nanpercentile(ys, 98))
            ax.set_ylim(max(0.0, lo - 0.1 * (hi - lo)), hi + 0.15 * (hi - lo) + 1e-3)
        ax.set_xlabel(r"regularisation $\gamma$")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(r"Double descent (THEORY.md §6): typical KLs vs $\gamma$, rank-one teacher $\omega=2.5$, K = 2; "
                 "dotted: posterior phase changes")
    return save_figure(fig, path)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results", "smoke test: N = 10, eta = 1, gamma in {0.3, 1, 3}, 2 chains of 100+100 draws")
    add_teacher_student_options(p, ",".join(map(str, SIZES)), ",".join(f"{e:g}" for e in ETAS), ",".join(f"{g:g}" for g in GAMMAS))
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    q = args.quick
    sizes = pick_values(args.sizes, q, QUICK_SIZES, SIZES)
    etas = pick_values(args.etas, q, QUICK_ETAS, ETAS)
    gammas = pick_values(args.gammas, q, QUICK_GAMMAS, GAMMAS)
    sw = teacher_student_sweep(args, out, {"model.N": list(sizes), "model.eta": list(etas), "model.gamma": list(gammas)})
    points, failed, _, sweep_wall = run_study_sweep(sw, analyse_only=args.analyse_only, scheduler=args.scheduler,
                                                    workers=args.workers, processes=not q)
    omega = float(np.ravel(sw.base.data.omega)[0])
    csv_path, th_path = out / "rev_kl_vs_gamma.csv", out / "theory_curves.csv"
    th_rows = theory_rows(etas, omega)
    write_csv(th_path, THEORY_COLUMNS, th_rows)
    rows = []
    for point in points:
        r = measure(point)
        rows.append(r)
        print(f"[kl] N={r['N']} eta={r['eta']:g} gamma={r['gamma']:g} ({r['phase']}): reverse {r['rev_per_n']:.4f} ± "
              f"{r['rev_se_per_n']:.4f} (theory {r['theory_rev']:.4f}), forward {r['fwd_per_n']:.4f} ± "
              f"{r['fwd_se_per_n']:.4f} (theory {r['theory_fwd']:.4f}); {r['divergences']:.0f} div., {r['kl_wall_s']:.1f} s",
              flush=True)
    rows.sort(key=lambda x: (x["N"], x["eta"], x["gamma"]))
    write_csv(csv_path, COLUMNS, rows)
    limits = limit_rows(rows)
    write_csv(out / "finite_size.csv", LIMIT_COLUMNS, limits)
    finish_study(
        out, "double_descent", t_start, files=[csv_path.name, th_path.name, "finite_size.csv"], table=markdown_table(rows, limits),
        figures=[plot(rows, th_rows, out / "double_descent.png")], seed=0,
        checks="THEORY.md §6 typical reverse and forward KLs vs gamma (teacher_student_kls(...).rev_typ, .fwd_typ)",
        quick=bool(q),
        settings={"sizes": list(sizes), "etas": list(etas), "gammas": list(gammas), "omega": omega,
                  "sweep_file": str(TEACHER_STUDENT_SWEEP.relative_to(TEACHER_STUDENT_SWEEP.parents[2])),
                  "runs": str(sw.out), "seeds": NUTS_SEEDS,
                  "theory_gamma_grid": [float(THEORY_GAMMAS[0]), float(THEORY_GAMMAS[-1]), len(THEORY_GAMMAS)]},
        failed=failed, sweep_wall_s=sweep_wall,
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
