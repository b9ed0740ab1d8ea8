"""Evidence identity: d(log Y)/dγ against the posterior second moment of W (THEORY.md §3, §5).

With the normalised GOE prior P_{γη} of precision γη (THEORY.md §3),
``d log P_{γη}(W)/dγ = −(ηN/4)(tr W² − E_prior[tr W²])``, so exactly, at any N,

    d(log Y)/dγ = −(ηN/4) · (E_post[tr W²] − E_prior[tr W²]),
    E_prior[tr W²] = (N + 1)/(γη)                       (GOE, exact).

This study checks the γ-derivative of the THEORY.md §5 curve
``(1/N) log Y = Φ + (r/2) log(γη) + τη/2`` (:func:`bayes_sbm.theory.log_evidence`;
central finite difference in γ) against the right-hand side from NUTS:

    (1/N) d(log Y)/dγ ≈ −(η/4) · (mean_s tr W_s² − (N + 1)/(γη)) ± (η/4) · MCSE,

at N = 100 in a PM phase (``models/pmo.toml``, γ = 4, η = 5) and an FM phase
(``models/fmo.toml``, γ = 0.5, η = 3).  Both moments are O(N) while their
difference is O(1) (it includes the bulk's response to the −Kη log Z term),
so the draws must be numerous; the MCSE uses the ESS of the mean of the tr W²
series (``bayes_sbm._stats.mean_mcse``).
tr W² is computed from the latent vector without forming W:
``tr W² = Σ_i W_ii² + 2 Σ_{i<j} W_ij²`` (rotation invariant, so the aligned
frame's W' gives the same value).

The identity is exact at finite N for the exact evidence; the theory is the
N → ∞ evidence, so the difference measures the finite-size correction of
``(1/N) d log Y/dγ`` (plus Monte Carlo error).  Theory is given at the data
spectrum c of the finite-N data (``theory_data_c``) and at c = (1.6, 0.4).

Outputs (in ``--out``, default ``analysis/evidence_identity/results``):

* ``identity.csv`` — one row per (point, N): phase, γ, η, theory derivative
  per N (data c and N → ∞), NUTS estimate per N ± MCSE, difference, z,
  E_post[tr W²] ± MCSE, E_prior[tr W²], ESS, divergences;
* ``theory_curves.csv`` — (1/N) d log Y/dγ of the theory around each point;
* ``table.md`` — the finite-N vs theory table;
* ``identity.png`` — per point, the theory derivative vs γ with the NUTS
  estimate ± 2 MCSE at the fitted γ;
* ``metadata.json``.

``--resume`` keeps rows already in the CSV and skips their (point, N).
``--quick``: N = 10, 1 chain of 100 warm-up + 100 draws.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    C_LIMIT, NUTS_SEEDS, finish_study, fmt_num, int_list, md_head, md_row, name_list, nuts_facts, nuts_overrides,
    pick_values, pin_threads, read_csv, run_spec_nuts, start_study, study_parser, theory_pair, write_csv,
)

pin_threads(host_devices=2)  # before NumPy/JAX are imported: 2 chains in parallel

import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import _stats, inference, model, theory  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402
from bayes_sbm.runs import problem_from_spec  # noqa: E402
from bayes_sbm.specs import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent

POINTS = ("pmo", "fmo")
SIZES = (100,)
QUICK_SIZES = (10,)
NUM_SAMPLES = 2000  # per chain: the MCSE of (1/N) d log Y/dγ is (η/4)·sd(tr W²)/√ESS, sd(tr W²) ≈ 2/(γη)
REL_STEP = 1e-4

COLUMNS = ("point", "phase", "phase_limit", "N", "gamma", "eta", "theory_data_c", "theory_limit", "estimate",
           "mcse", "diff", "z", "diff_limit", "post_tr_w2", "post_tr_w2_mcse", "prior_tr_w2", "tr_w2_ess",
           "tr_w2_sd", "divergences", "latent_min_ess_bulk", "num_draws", "fd_step", "fd_same_phase", "c_1", "c_2",
           "trace_check_max_rel_err", "fit_wall_s")
THEORY_COLUMNS = ("point", "N", "eta", "gamma", "theory_data_c", "theory_limit")
STRINGS = ("point", "phase", "phase_limit", "fd_same_phase")


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def trace_w2(problem, latent) -> np.ndarray:
    """tr W² for latent draws (..., N(N+1)/2) → (...), without forming W.

    With the upper triangle u (row-major, diagonal included) of W (or of W' = QᵀWQ
    in the aligned frame, same trace): tr W² = Σ_i u_ii² + 2 Σ_{i<j} u_ij².
    """
    N = problem.N
    rows, cols = np.triu_indices(N)
    weight = np.where(rows == cols, 1.0, 2.0)
    if problem.parametrization != "centred":  # z ~ N(0, I) scaled by the GOE standard deviations
        weight = weight * model.goe_scales(N, problem.gamma * problem.eta) ** 2
    lat = np.asarray(latent, dtype=np.float64)
    return np.einsum("...k,k->...", lat * lat, weight)


def theory_derivative(c, gamma: float, eta: float, rel_step: float = REL_STEP) -> tuple[float, bool]:
    """Central difference of (1/N) log Y (THEORY.md §5) in γ, and whether γ ± h share the phase of γ."""
    h = rel_step * gamma
    d = (theory.log_evidence(c, gamma + h, eta) - theory.log_evidence(c, gamma - h, eta)) / (2.0 * h)
    phases = {theory.posterior_saddle(c, g, eta).phase for g in (gamma - h, gamma, gamma + h)}
    return float(d), len(phases) == 1


def measure(point: str, base_spec, N: int, nuts_overrides: dict, rel_step: float) -> dict:
    spec = base_spec.with_overrides({"model.N": int(N)} | nuts_overrides)
    problem = problem_from_spec(spec)
    gamma, eta = problem.gamma, problem.eta
    res, latent, wall = run_spec_nuts(spec, problem)
    tr = trace_w2(problem, latent)  # (chain, draw)
    # spot check against tr(W W) of explicit coupling matrices for a few draws
    flat = latent.reshape((-1, latent.shape[-1]))
    idx = np.linspace(0, flat.shape[0] - 1, min(5, flat.shape[0])).astype(int)
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
    facts = nuts_facts(res, latent)
    return {
        "point": point, "phase": at_c.phase, "phase_limit": at_limit.phase, "N": int(N), "gamma": gamma, "eta": eta,
        "theory_data_c": th_c, "theory_limit": th_lim, "estimate": estimate, "mcse": mcse, "diff": diff,
        "z": diff / mcse if mcse > 0 else math.nan, "diff_limit": estimate - th_lim,
        "post_tr_w2": post, "post_tr_w2_mcse": post_se, "prior_tr_w2": prior, "tr_w2_ess": ess,
        "tr_w2_sd": m.sd, "divergences": facts["divergences"],
        "latent_min_ess_bulk": facts["latent_min_ess_bulk"], "num_draws": facts["num_draws"],
        "fd_step": rel_step * gamma, "fd_same_phase": str(bool(same_c and same_lim)),
        "c_1": float(c[0]), "c_2": float(c[1]) if c.size > 1 else math.nan,
        "trace_check_max_rel_err": check, "fit_wall_s": wall,
    }


def theory_curve(point: str, row: dict) -> list[dict]:
    g0, eta, N = row["gamma"], row["eta"], row["N"]
    c = np.array([row["c_1"], row["c_2"]])
    c = c[np.isfinite(c)]
    out = []
    for g in np.geomspace(0.5 * g0, 1.5 * g0, 121):
        out.append({"point": point, "N": N, "eta": eta, "gamma": float(g),
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
    points = [p for p in POINTS if any(r["point"] == p for r in rows)] + sorted({r["point"] for r in rows} - set(POINTS))
    fig, axes = plt.subplots(1, max(1, len(points)), figsize=(6 * max(1, len(points)), 4.8), squeeze=False,
                             layout="constrained")
    for ax, p in zip(axes.ravel(), points):
        sel = sorted((r for r in rows if r["point"] == p), key=lambda r: r["N"])
        for k, r in enumerate(sel):
            cv = sorted((c for c in curves if c["point"] == p and c["N"] == r["N"]), key=lambda c: c["gamma"])
            if cv:
                g = [c["gamma"] for c in cv]
                ax.plot(g, [c["theory_data_c"] for c in cv], color=f"C{k}", lw=1.6, label=f"theory, data c (N={r['N']})")
                if k == 0:
                    ax.plot(g, [c["theory_limit"] for c in cv], color="0.4", lw=1.2, ls="--", label="theory, c = (1.6, 0.4)")
            ax.errorbar(r["gamma"], r["estimate"], yerr=2 * r["mcse"], color=f"C{k}", marker="o", mec="k", capsize=4,
                        linestyle="none", label=rf"NUTS $N={r['N']}$ ($\pm 2$ MCSE)")
        phase = sel[0]["phase_limit"] if sel else "?"
        ax.set_title(f"{p}: {phase}, η = {sel[0]['eta']:g}" if sel else p)
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
    p = study_parser(__doc__, HERE / "results", "smoke test: N = 10, 1 chain, 100 warm-up + 100 draws",
                     "keep rows already in the CSV and skip their (point, N)",
                     nuts=("num_warmup", "num_samples", "num_chains"),
                     samples_help=f"NUTS draws per chain (default {NUM_SAMPLES})", models="the specs")
    p.add_argument("--sizes", type=int_list, help="values of N (default 100)")
    p.add_argument("--points", type=name_list, help="phase specs (default pmo,fmo)")
    p.add_argument("--rel-step", type=float, default=REL_STEP, help="relative finite-difference step in gamma (default %(default)s)")
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    q = args.quick
    sizes = pick_values(args.sizes, q, QUICK_SIZES, SIZES)
    points = tuple(args.points) if args.points else POINTS
    nuts = {"inference.num_samples": int(args.num_samples or (100 if q else NUM_SAMPLES))}
    nuts |= nuts_overrides(args, ("num_warmup", "num_chains"))
    csv_path, th_path = out / "identity.csv", out / "theory_curves.csv"
    rows = read_csv(csv_path, strings=STRINGS, ints=("N", "divergences", "num_draws")) if args.resume else []
    done = {(r["point"], r["N"]) for r in rows}
    for p in points:
        base = load_spec(args.models / f"{p}.toml")
        for N in sizes:
            if (p, N) in done:
                print(f"[skip] {p} N={N}: row already in {csv_path.name}", flush=True)
                continue
            r = measure(p, base, N, nuts, args.rel_step)
            rows = [x for x in rows if not (x["point"] == p and x["N"] == N)] + [r]
            rows.sort(key=lambda x: (POINTS.index(x["point"]) if x["point"] in POINTS else 99, x["point"], x["N"]))
            write_csv(csv_path, COLUMNS, rows)
            print(f"[fit] {p} N={N} ({r['phase']}, gamma={r['gamma']:g}, eta={r['eta']:g}): NUTS {r['estimate']:+.5f} ± "
                  f"{r['mcse']:.5f}, theory(c) {r['theory_data_c']:+.5f}, theory(∞) {r['theory_limit']:+.5f}; "
                  f"E_post tr W² {r['post_tr_w2']:.4f} (prior {r['prior_tr_w2']:.4f}), ESS {r['tr_w2_ess']:.0f}, "
                  f"{r['divergences']} div., {r['fit_wall_s']:.1f} s", flush=True)
    curves = [c for r in rows for c in theory_curve(r["point"], r)]
    write_csv(th_path, THEORY_COLUMNS, curves)
    finish_study(
        out, "evidence_identity", t_start, files=[csv_path.name, th_path.name], table=markdown_table(rows),
        figures=[plot(rows, curves, out / "identity.png")], seed=0,
        checks="d(log Y)/dgamma = -(eta N/4)(E_post - E_prior)[tr W^2] vs the gamma-derivative of THEORY.md §5",
        quick=bool(q),
        settings={"sizes": list(sizes), "points": list(points), "nuts_overrides": nuts, "rel_step": args.rel_step,
                  "c_limit": list(C_LIMIT), "seeds": NUTS_SEEDS, "resume": bool(args.resume)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
