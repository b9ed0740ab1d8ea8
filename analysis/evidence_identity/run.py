"""Evidence identity: d(log Y)/dγ against the posterior second moment of W (THEORY.md §3, §5).

With the normalised GOE prior P_{γη} of precision γη (THEORY.md §3),
``d log P_{γη}(W)/dγ = −(ηN/4)(tr W² − E_prior[tr W²])``, so exactly, at any N,

    d(log Y)/dγ = −(ηN/4) · (E_post[tr W²] − E_prior[tr W²]),
    E_prior[tr W²] = (N + 1)/(γη)                       (GOE, exact).

This study checks the γ-derivative of the THEORY.md §5 curve
``(1/N) log Y = Φ + (r/2) log(γη) + τη/2`` (:func:`bayes_sbm.theory.log_evidence`;
central finite difference in γ) against the right-hand side from NUTS:

    (1/N) d(log Y)/dγ ≈ −(η/4) · (mean_s tr W_s² − (N + 1)/(γη)) ± (η/4) · MCSE,

on every point of the teacher–student sweep ``models/sweeps/teacher_student.toml``
(``models/fmo.toml``'s K = 2 rank-one teacher, ω = 2.5, seed 0, at
N ∈ {200, 1000}, η ∈ {0.5, 1, 2, 5} × γ ∈ {0.2 … 5}: every phase the grid
crosses; band representation of THEORY.md §8, 2 chains × 300 draws), run on
Dask distributed and shared with the double-descent, temperature-tuning and
tempered-posterior studies (a rerun skips finished points).  Both moments
are O(N) while their difference is O(1) (it includes the bulk's response to
the −Kη log Z term); the MCSE uses the ESS of the mean of the tr W² series
(``bayes_sbm._stats.mean_mcse``).  tr W² needs no W: tr W² = tr T² of the
band draw (the Haar rotation preserves it), ``Σ_p T_pp² + 2 Σ_{k≥1} T_{p,p−k}²``
from the band storage (aligned runs: ``Σ_i W_ii² + 2 Σ_{i<j} W_ij²`` of the
frame's W'); a spot check compares it with tr(W W) of explicit draws.

The identity is exact at finite N for the exact evidence; the theory is the
N → ∞ evidence, so the difference measures the finite-size correction of
``(1/N) d log Y/dγ`` (plus Monte Carlo error).  Theory is given at the data
spectrum c of the finite-N data (``theory_data_c``) and at c = (1.6, 0.4).

Outputs (in ``--out``, default ``analysis/evidence_identity/results``):

* ``identity.csv`` — one row per (N, η, γ): phase, theory derivative
  per N (data c and N → ∞), NUTS estimate per N ± MCSE, difference, z,
  E_post[tr W²] ± MCSE, E_prior[tr W²], ESS, divergences;
* ``theory_curves.csv`` — (1/N) d log Y/dγ of the theory around each point;
* ``table.md`` — the finite-N vs theory table;
* ``identity.png`` — per η, the theory derivative vs γ (data c of the
  largest N, and c = (1.6, 0.4)) with the NUTS estimates ± 2 MCSE;
* ``metadata.json``.

``--quick``: N = 10, η = 3, γ ∈ {0.5, 4}, 2 chains of 100 warm-up + 100 draws
of the band model in ``OUT/runs`` (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    C_LIMIT, NUTS_SEEDS, TEACHER_STUDENT_SWEEP, add_teacher_student_options, finish_study, fmt_num, md_head, md_row,
    pick_values, pin_threads, run_study_sweep, start_study, study_parser, teacher_student_facts, teacher_student_sweep,
    theory_pair, write_csv,
)

pin_threads()  # before NumPy/JAX are imported (the Dask workers pin themselves)

import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import _stats, band, inference, model, reports, theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402

HERE = Path(__file__).resolve().parent

SIZES = (200, 1000)
ETAS = (0.5, 1.0, 2.0, 5.0)
GAMMAS = (0.2, 0.5, 1.0, 1.7, 2.0, 3.0, 5.0)
QUICK_SIZES = (10,)
QUICK_ETAS = (3.0,)
QUICK_GAMMAS = (0.5, 4.0)
REL_STEP = 1e-4

COLUMNS = ("point", "phase", "phase_limit", "N", "gamma", "eta", "theory_data_c", "theory_limit", "estimate",
           "mcse", "diff", "z", "diff_limit", "post_tr_w2", "post_tr_w2_mcse", "prior_tr_w2", "tr_w2_ess",
           "tr_w2_sd", "divergences", "latent_min_ess_bulk", "num_draws", "fd_step", "fd_same_phase", "c_1", "c_2",
           "trace_check_max_rel_err", "fit_wall_s")
THEORY_COLUMNS = ("point", "N", "eta", "gamma", "theory_data_c", "theory_limit")


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def trace_w2(problem, latent) -> np.ndarray:
    """tr W² for latent draws (..., dim) → (...), without forming W.

    Band model: tr W² = tr T² = Σ_p T_pp² + 2 Σ_{k≥1} T_{p,p−k}² (W = Q P T Pᵀ Qᵀ
    with P, Q orthogonal).  Dense models: with the upper triangle u
    (row-major, diagonal included) of W (or of W' = QᵀWQ in the aligned frame,
    same trace), tr W² = Σ_i u_ii² + 2 Σ_{i<j} u_ij².
    """
    lat = np.asarray(latent, dtype=np.float64)
    if problem.parametrization == "band":
        T = inference.band_draws(problem, lat.reshape((-1, lat.shape[-1])))
        lower = np.where(band._valid_mask(T.m, T.N), np.asarray(T.lower), 0.0) ** 2
        return (lower[:, 0].sum(-1) + 2.0 * lower[:, 1:].sum((-2, -1))).reshape(lat.shape[:-1])
    N = problem.N
    rows, cols = np.triu_indices(N)
    weight = np.where(rows == cols, 1.0, 2.0)
    if problem.parametrization != "centred":  # z ~ N(0, I) scaled by the GOE standard deviations
        weight = weight * model.goe_scales(N, problem.gamma * problem.eta) ** 2
    return np.einsum("...k,k->...", lat * lat, weight)


def theory_derivative(c, gamma: float, eta: float, rel_step: float = REL_STEP) -> tuple[float, bool]:
    """Central difference of (1/N) log Y (THEORY.md §5) in γ, and whether γ ± h share the phase of γ."""
    h = rel_step * gamma
    d = (theory.log_evidence(c, gamma + h, eta) - theory.log_evidence(c, gamma - h, eta)) / (2.0 * h)
    phases = {theory.posterior_saddle(c, g, eta).phase for g in (gamma - h, gamma, gamma + h)}
    return float(d), len(phases) == 1


def point_label(eta: float, gamma: float) -> str:
    return f"eta={eta:g},gamma={gamma:g}"


def measure(point, rel_step: float) -> dict:
    """The identity at one finished sweep point: NUTS −(η/4)(E_post − E_prior) tr W² against the theory derivative."""
    facts = teacher_student_facts(point)
    problem, latent = reports.run_latent_draws(facts["run"])
    N, gamma, eta = problem.N, problem.gamma, problem.eta
    tr = trace_w2(problem, latent)  # (chain, draw)
    # spot check against tr(W W) of explicit coupling matrices for a few draws
    flat = latent.reshape((-1, latent.shape[-1]))
    idx = np.linspace(0, flat.shape[0] - 1, min(3, flat.shape[0])).astype(int)
    W = inference.coupling_draws(problem, flat[idx])
    explicit = np.einsum("sij,sji->s", W, W)
    check = float(np.max(np.abs(explicit - tr.reshape(-1)[idx]) / np.abs(explicit)))
    m = _stats.mean_mcse(tr)  # MCSE from the ESS of the mean (NaN for constant draws)
    post, post_se, ess = m.mean, m.mcse, m.ess
    prior = (N + 1) / (gamma * eta)
    estimate = -(eta / 4.0) * (post - prior)
    mcse = (eta / 4.0) * post_se
    c = problem.frame.c
    th_c, same_c = theory_derivative(c, gamma, eta, rel_step)
    th_lim, same_lim = theory_derivative(C_LIMIT, gamma, eta, rel_step)
    diff = estimate - th_c
    at_c, at_limit = theory_pair(c, gamma, eta)
    return {
        "point": point_label(eta, gamma), "phase": at_c.phase, "phase_limit": at_limit.phase, "N": int(N), "gamma": gamma,
        "eta": eta, "theory_data_c": th_c, "theory_limit": th_lim, "estimate": estimate, "mcse": mcse, "diff": diff,
        "z": diff / mcse if mcse > 0 else math.nan, "diff_limit": estimate - th_lim,
        "post_tr_w2": post, "post_tr_w2_mcse": post_se, "prior_tr_w2": prior, "tr_w2_ess": ess,
        "tr_w2_sd": m.sd, "divergences": facts["divergences"],
        "latent_min_ess_bulk": facts["latent_min_ess_bulk"], "num_draws": facts["num_draws"],
        "fd_step": rel_step * gamma, "fd_same_phase": str(bool(same_c and same_lim)),
        "c_1": float(c[0]), "c_2": float(c[1]) if c.size > 1 else math.nan,
        "trace_check_max_rel_err": check, "fit_wall_s": facts["fit_wall_s"],
    }


#: γ grid of the theory curves (log-spaced, covering the sweep's γ values).
THEORY_GAMMAS = np.geomspace(0.15, 6.0, 160)


def theory_curves(rows: list[dict]) -> list[dict]:
    """(1/N) d log Y/dγ of THEORY.md §5 on :data:`THEORY_GAMMAS` per (N, η): at the data c of that N and at c = (1.6, 0.4)."""
    out = []
    for N, eta in sorted({(r["N"], r["eta"]) for r in rows}):
        r0 = next(r for r in rows if r["N"] == N and r["eta"] == eta)
        c = np.array([r0["c_1"], r0["c_2"]])
        c = c[np.isfinite(c)]
        for g in THEORY_GAMMAS:
            out.append({"point": point_label(eta, float(g)), "N": N, "eta": eta, "gamma": float(g),
                        "theory_data_c": theory_derivative(c, float(g), eta)[0],
                        "theory_limit": theory_derivative(C_LIMIT, float(g), eta)[0]})
    return out


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------
def _num(v, digits: int = 5) -> str:
    return fmt_num(v, digits, small=1e-4, large=1e5)


def markdown_table(rows: list[dict]) -> str:
    head = ("phase", "γ", "η", "N", "theory d/dγ (1/N) log Y (data c)", "NUTS −(η/4)(E_post − E_prior) tr W² ± MCSE",
            "difference", "diff/MCSE", "theory (N→∞ c)", "E_post tr W² ± MCSE", "E_prior tr W²", "ESS", "div.")
    lines = ["# Evidence identity d(log Y)/dγ = −(ηN/4)(E_post − E_prior)[tr W²] (THEORY.md §3, §5)", "",
             "All per N. theory: central finite difference in γ of THEORY.md §5 (N → ∞ evidence) at the data spectrum "
             "(and at c = (1.6, 0.4)); the identity is exact at finite N for the exact evidence, so the difference is the "
             "finite-size correction of (1/N) d log Y/dγ plus Monte Carlo error. E_prior[tr W²] = (N + 1)/(γη) exactly.", "",
             *md_head(head)]
    for r in rows:
        lines.append(md_row([
            f"{r['phase']} ({r['point']})", _num(r["gamma"], 3), _num(r["eta"], 3), str(r["N"]),
            _num(r["theory_data_c"]), f"{_num(r['estimate'])} ± {_num(r['mcse'])}", _num(r["diff"]), _num(r["z"], 2),
            _num(r["theory_limit"]), f"{_num(r['post_tr_w2'], 4)} ± {_num(r['post_tr_w2_mcse'], 4)}",
            _num(r["prior_tr_w2"], 4), _num(r["tr_w2_ess"], 0), str(r["divergences"]),
        ]))
    return "\n".join(lines) + "\n"


def plot(rows, curves, path: Path) -> Path:
    etas = sorted({r["eta"] for r in rows})
    sizes = sorted({r["N"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(etas)), figsize=(5.2 * max(1, len(etas)), 4.6), squeeze=False,
                             layout="constrained")
    for ax, eta in zip(axes.ravel(), etas):
        for k, N in enumerate(sizes):
            cv = sorted((c for c in curves if c["eta"] == eta and c["N"] == N), key=lambda c: c["gamma"])
            if cv:
                g = [c["gamma"] for c in cv]
                ax.plot(g, [c["theory_data_c"] for c in cv], color=f"C{k}", lw=1.4, label=f"theory, data c (N={N})")
                if k == len(sizes) - 1:
                    ax.plot(g, [c["theory_limit"] for c in cv], color="0.4", lw=1.0, ls="--", label="theory, c = (1.6, 0.4)")
            sel = sorted((r for r in rows if r["eta"] == eta and r["N"] == N), key=lambda r: r["gamma"])
            if sel:
                ax.errorbar([r["gamma"] for r in sel], [r["estimate"] for r in sel], yerr=[2 * r["mcse"] for r in sel],
                            color=f"C{k}", marker="o", mec="k", capsize=3, linestyle="none",
                            label=rf"NUTS $N={N}$ ($\pm 2$ MCSE)")
        ax.set_xscale("log")
        ax.set_title(rf"$\eta = {eta:g}$")
        ax.set_xlabel(r"$\gamma$")
        ax.set_ylabel(r"$(1/N)\, d\log Y/d\gamma$")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(r"$d\log Y/d\gamma = -(\eta N/4)(E_{post} - E_{prior})[\mathrm{tr}\,W^2]$: NUTS vs THEORY.md §5")
    return save_figure(fig, path)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results", "smoke test: N = 10, eta = 3, gamma in {0.5, 4}, 2 chains of 100 + 100 draws")
    add_teacher_student_options(p, ",".join(map(str, SIZES)), ",".join(f"{e:g}" for e in ETAS), ",".join(f"{g:g}" for g in GAMMAS))
    p.add_argument("--rel-step", type=float, default=REL_STEP, help="relative finite-difference step in gamma (default %(default)s)")
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
    csv_path, th_path = out / "identity.csv", out / "theory_curves.csv"
    rows = []
    for point in points:
        r = measure(point, args.rel_step)
        rows.append(r)
        print(f"[identity] N={r['N']} eta={r['eta']:g} gamma={r['gamma']:g} ({r['phase']}): NUTS {r['estimate']:+.5f} ± "
              f"{r['mcse']:.5f}, theory(c) {r['theory_data_c']:+.5f} (z = {r['z']:+.2f}), theory(∞) {r['theory_limit']:+.5f}; "
              f"ESS {r['tr_w2_ess']:.0f}, {r['divergences']:.0f} div.", flush=True)
    rows.sort(key=lambda x: (x["N"], x["eta"], x["gamma"]))
    write_csv(csv_path, COLUMNS, rows)
    curves = theory_curves(rows)
    write_csv(th_path, THEORY_COLUMNS, curves)
    zs = np.array([r["z"] for r in rows if r["fd_same_phase"] == "True" and math.isfinite(r["z"])])
    finish_study(
        out, "evidence_identity", t_start, files=[csv_path.name, th_path.name], table=markdown_table(rows),
        figures=[plot(rows, curves, out / "identity.png")], seed=0,
        checks="d(log Y)/dgamma = -(eta N/4)(E_post - E_prior)[tr W^2] vs the gamma-derivative of THEORY.md §5",
        quick=bool(q),
        settings={"sizes": list(sizes), "etas": list(etas), "gammas": list(gammas), "rel_step": args.rel_step,
                  "sweep_file": str(TEACHER_STUDENT_SWEEP.relative_to(TEACHER_STUDENT_SWEEP.parents[2])),
                  "runs": str(sw.out), "c_limit": list(C_LIMIT), "seeds": NUTS_SEEDS},
        z_summary={"count": int(zs.size), "mean": float(zs.mean()) if zs.size else None,
                   "rms": float(np.sqrt(np.mean(zs ** 2))) if zs.size else None,
                   "max_abs": float(np.max(np.abs(zs))) if zs.size else None},
        failed=failed, sweep_wall_s=sweep_wall,
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
