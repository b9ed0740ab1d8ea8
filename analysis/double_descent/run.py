"""Double descent: typical reverse KL against the regularisation γ (THEORY.md §6).

Checks the THEORY.md §6 curve "Regularisation (double descent)": the typical
reverse KL

    ⟨D(P_W ‖ P*)⟩/N = E_pp + ½(ω − log ω) − ½(1 − g_Z²/(2κ) + log g_Z)
    (PM phases: ½(ω − log ω − 1 + 1/(2γη)))

(``bayes_sbm.theory.teacher_student_kls(γ, η, 2.5).rev_typ``) as a function
of γ at η ∈ {1, 5}, ω = 2.5, K = 2: at η = 5 (above η* ≈ 1.34) it dips,
rises across the FM/PM boundary and falls again; at η = 1 it decreases.

One NUTS fit per (η, γ) on a log-spaced γ grid (``models/fmo.toml`` with
``model.gamma``, ``model.eta``, ``model.N`` overridden; teacher seed 0,
inference seed 0 — the fit ``bayes-sbm fit`` of that spec would make); the
per-draw reverse (and forward) KL to the teacher is exact
(:func:`bayes_sbm.predictive.typical_kls` at β = 1, ``ess="auto"``).

Outputs (in ``--out``, default ``analysis/double_descent/results``):

* ``rev_kl_vs_gamma.csv`` — one row per (N, η, γ): typical reverse and
  forward KL per N ± MCSE, theory values, differences, phase, NUTS facts;
* ``theory_curves.csv`` — the theory curves on a fine γ grid per η;
* ``table.md`` — the finite-N vs theory table;
* ``double_descent.png`` — reverse (left) and forward (right) typical KL vs
  γ: NUTS points ± MCSE over the theory curves, phase changes marked;
* ``metadata.json``.

``--resume`` keeps rows already in the CSV and skips their (N, η, γ).
``--quick``: N = 10, η = 1, γ ∈ {0.3, 1, 3}, 1 chain of 100 + 100 draws.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    NUTS_SEEDS, finish_study, float_list, fmt_num, int_list_via_float, md_head, md_row, nuts_facts, nuts_overrides,
    pick_values, pin_threads, read_csv, start_study, study_parser, teacher_student_fit, write_csv,
)

pin_threads(host_devices=2)  # before NumPy/JAX are imported: 2 chains in parallel

import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402
from bayes_sbm.predictive import typical_kls  # noqa: E402
from bayes_sbm.specs import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent

ETAS = (1.0, 5.0)
GAMMAS = tuple(float(g) for g in np.round(np.geomspace(0.1, 10.0, 10), 6))
SIZES = (100,)
QUICK_ETAS = (1.0,)
QUICK_GAMMAS = (0.3, 1.0, 3.0)
QUICK_SIZES = (10,)
THEORY_GAMMAS = np.geomspace(0.05, 20.0, 500)
BASE_SPEC = "fmo"

COLUMNS = ("N", "eta", "gamma", "omega", "rev_per_n", "rev_se_per_n", "theory_rev", "diff_rev", "z_rev",
           "fwd_per_n", "fwd_se_per_n", "theory_fwd", "diff_fwd", "phase", "phase_limit", "c_1", "c_2",
           "divergences", "latent_min_ess_bulk", "rev_ess", "num_draws", "fit_wall_s")
THEORY_COLUMNS = ("eta", "gamma", "omega", "theory_rev", "theory_fwd", "phase")
STRINGS = ("phase", "phase_limit")


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def fit_and_measure(base_spec, N: int, gamma: float, eta: float, nuts_overrides: dict) -> dict:
    """NUTS fit of the overridden spec and the exact typical KLs of its draws to the teacher (β = 1)."""
    f = teacher_student_fit(base_spec, N, gamma, eta, nuts_overrides)
    kl = typical_kls(f.W, f.teacher_W, 1.0, ess="auto")
    omega = float(np.ravel(f.spec.data.omega)[0])
    th = theory.teacher_student_kls(gamma, eta, omega)
    facts = nuts_facts(f.result, f.latent)
    c = f.problem.frame.c
    return {
        "N": int(N), "eta": float(eta), "gamma": float(gamma), "omega": omega,
        "rev_per_n": kl.reverse_per_n, "rev_se_per_n": kl.reverse_se_per_n, "theory_rev": float(th.rev_typ),
        "diff_rev": kl.reverse_per_n - float(th.rev_typ),
        "z_rev": (kl.reverse_per_n - float(th.rev_typ)) / kl.reverse_se_per_n if kl.reverse_se_per_n > 0 else math.nan,
        "fwd_per_n": kl.forward_per_n, "fwd_se_per_n": kl.forward_se_per_n, "theory_fwd": float(th.fwd_typ),
        "diff_fwd": kl.forward_per_n - float(th.fwd_typ),
        "phase": theory.posterior_saddle(c, gamma, eta).phase, "phase_limit": th.phase,
        "c_1": float(c[0]), "c_2": float(c[1]) if c.size > 1 else math.nan,
        "divergences": facts["divergences"], "latent_min_ess_bulk": facts["latent_min_ess_bulk"],
        "rev_ess": kl.reverse_ess, "num_draws": facts["num_draws"], "fit_wall_s": f.wall_s,
    }


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
def markdown_table(rows: list[dict]) -> str:
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
            str(r["divergences"]), fmt_num(r["latent_min_ess_bulk"], 0),
        ]))
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
    p = study_parser(__doc__, HERE / "results", "smoke test: N = 10, eta = 1, gamma in {0.3, 1, 3}, 100+100 draws",
                     "keep rows already in the CSV and skip their (N, eta, gamma)",
                     nuts=("num_warmup", "num_samples", "num_chains"), models="the specs")
    p.add_argument("--sizes", type=int_list_via_float, help="values of N (default 100)")
    p.add_argument("--etas", type=float_list, help="values of eta (default 1,5)")
    p.add_argument("--gammas", type=float_list, help="gamma grid (default 10 log-spaced values 0.1..10)")
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    q = args.quick
    sizes = pick_values(args.sizes, q, QUICK_SIZES, SIZES)
    etas = pick_values(args.etas, q, QUICK_ETAS, ETAS)
    gammas = pick_values(args.gammas, q, QUICK_GAMMAS, GAMMAS)
    nuts = nuts_overrides(args)
    csv_path, th_path = out / "rev_kl_vs_gamma.csv", out / "theory_curves.csv"
    base_spec = load_spec(args.models / f"{BASE_SPEC}.toml")
    omega = float(np.ravel(base_spec.data.omega)[0])
    th_rows = theory_rows(etas, omega)
    write_csv(th_path, THEORY_COLUMNS, th_rows)
    rows = read_csv(csv_path, strings=STRINGS, ints=("N", "divergences", "num_draws")) if args.resume else []
    done = {(r["N"], r["eta"], r["gamma"]) for r in rows}
    for N in sizes:
        for eta in etas:
            for g in gammas:
                if (N, float(eta), float(g)) in done:
                    print(f"[skip] N={N} eta={eta:g} gamma={g:g}: row already in {csv_path.name}", flush=True)
                    continue
                r = fit_and_measure(base_spec, N, g, eta, nuts)
                rows = [x for x in rows if not (x["N"] == N and x["eta"] == eta and x["gamma"] == g)] + [r]
                rows.sort(key=lambda x: (x["N"], x["eta"], x["gamma"]))
                write_csv(csv_path, COLUMNS, rows)  # after every fit: an interrupted study resumes from here
                print(f"[fit] N={N} eta={eta:g} gamma={g:g} ({r['phase']}): reverse {r['rev_per_n']:.4f} ± "
                      f"{r['rev_se_per_n']:.4f} (theory {r['theory_rev']:.4f}), forward {r['fwd_per_n']:.4f} ± "
                      f"{r['fwd_se_per_n']:.4f} (theory {r['theory_fwd']:.4f}); {r['divergences']} div., "
                      f"{r['fit_wall_s']:.1f} s", flush=True)

    finish_study(
        out, "double_descent", t_start, files=[csv_path.name, th_path.name], table=markdown_table(rows),
        figures=[plot(rows, th_rows, out / "double_descent.png")], seed=0,
        checks="THEORY.md §6 typical reverse KL vs gamma (teacher_student_kls(...).rev_typ), eta in {1, 5}",
        quick=bool(q),
        settings={"sizes": list(sizes), "etas": list(etas), "gammas": list(gammas), "omega": omega,
                  "base_spec": f"models/{BASE_SPEC}.toml", "nuts_overrides": nuts or "spec",
                  "seeds": NUTS_SEEDS,
                  "theory_gamma_grid": [float(THEORY_GAMMAS[0]), float(THEORY_GAMMAS[-1]), len(THEORY_GAMMAS)],
                  "resume": bool(args.resume)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
