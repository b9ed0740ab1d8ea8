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

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpyro  # noqa: E402

numpyro.set_host_device_count(2)  # before JAX starts: 2 chains in parallel

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from bayes_sbm import inference, teacher, theory  # noqa: E402
from bayes_sbm.io import run_metadata, write_json_atomic, write_text_atomic  # noqa: E402
from bayes_sbm.plots import save_figure  # noqa: E402
from bayes_sbm.predictive import typical_kls  # noqa: E402
from bayes_sbm.runs import latent_summary, problem_from_spec  # noqa: E402
from bayes_sbm.specs import load_spec  # noqa: E402

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
# CSV helpers
# --------------------------------------------------------------------------
def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def write_csv(path: Path, columns, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c, "")) for c in columns])
    write_text_atomic(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as fh:
        raw = list(csv.DictReader(fh))
    out = []
    for r in raw:
        row = {}
        for k, v in r.items():
            if k in STRINGS:
                row[k] = v
            elif k in ("N", "divergences", "num_draws"):
                row[k] = int(float(v))
            else:
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    row[k] = math.nan
        out.append(row)
    return out


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def fit_and_measure(base_spec, N: int, gamma: float, eta: float, nuts_overrides: dict) -> dict:
    """NUTS fit of the overridden spec and the exact typical KLs of its draws to the teacher (β = 1)."""
    spec = base_spec.with_overrides({"model.N": int(N), "model.gamma": float(gamma), "model.eta": float(eta)} | nuts_overrides)
    d = spec.data
    td = teacher.teacher_student_data(jax.random.key(d.seed), spec.model.N, d.K, d.omega)  # as runs.load_spec_data
    problem = problem_from_spec(spec, td.data)
    i = spec.inference
    settings = inference.NutsSettings(num_warmup=i.num_warmup, num_samples=i.num_samples, num_chains=i.num_chains,
                                      target_accept=i.target_accept, dense_mass=i.dense_mass,
                                      max_tree_depth=i.max_tree_depth, chain_method=i.chain_method, progress_bar=False)
    key_fit = jax.random.split(jax.random.key(i.seed))[0]  # as runs.fit_spec
    t0 = time.perf_counter()
    res = inference.run_nuts(key_fit, problem, settings)
    wall = time.perf_counter() - t0
    latent = res.samples[problem.latent_site]
    W = inference.coupling_draws(problem, latent)
    kl = typical_kls(W, np.asarray(td.teacher.W), 1.0, ess="auto")
    omega = float(np.ravel(d.omega)[0])
    th = theory.teacher_student_kls(gamma, eta, omega)
    c = problem.frame.c
    return {
        "N": int(N), "eta": float(eta), "gamma": float(gamma), "omega": omega,
        "rev_per_n": kl.reverse_per_n, "rev_se_per_n": kl.reverse_se_per_n, "theory_rev": float(th.rev_typ),
        "diff_rev": kl.reverse_per_n - float(th.rev_typ),
        "z_rev": (kl.reverse_per_n - float(th.rev_typ)) / kl.reverse_se_per_n if kl.reverse_se_per_n > 0 else math.nan,
        "fwd_per_n": kl.forward_per_n, "fwd_se_per_n": kl.forward_se_per_n, "theory_fwd": float(th.fwd_typ),
        "diff_fwd": kl.forward_per_n - float(th.fwd_typ),
        "phase": theory.posterior_saddle(c, gamma, eta).phase, "phase_limit": th.phase,
        "c_1": float(c[0]), "c_2": float(c[1]) if c.size > 1 else math.nan,
        "divergences": int(np.sum(res.sample_stats["diverging"])),
        "latent_min_ess_bulk": latent_summary(latent)["min_ess_bulk"], "rev_ess": kl.reverse_ess,
        "num_draws": int(latent.shape[0] * latent.shape[1]), "fit_wall_s": wall,
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
def _num(v, digits: int = 4) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return "–"
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    head = ("N", "η", "γ", "phase (data c / N→∞)", "reverse KL ± MCSE", "theory", "diff", "diff/SE",
            "forward KL ± MCSE", "theory fwd", "div.", "min latent ESS")
    lines = ["# Typical reverse KL vs γ (THEORY.md §6, double descent)", "",
             "Per N. theory: teacher_student_kls(γ, η, ω).rev_typ / .fwd_typ (N → ∞ data spectrum c = (1.6, 0.4)); "
             "diff = finite N − theory.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r["N"]), _num(r["eta"], 2), _num(r["gamma"], 3), f"{r['phase']} / {r['phase_limit']}",
            f"{_num(r['rev_per_n'])} ± {_num(r['rev_se_per_n'])}", _num(r["theory_rev"]), _num(r["diff_rev"]),
            _num(r["z_rev"], 2), f"{_num(r['fwd_per_n'])} ± {_num(r['fwd_se_per_n'])}", _num(r["theory_fwd"]),
            str(r["divergences"]), _num(r["latent_min_ess_bulk"], 0),
        ]) + " |")
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
def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smoke test: N = 10, eta = 1, gamma in {0.3, 1, 3}, 100+100 draws")
    p.add_argument("--resume", action="store_true", help="keep rows already in the CSV and skip their (N, eta, gamma)")
    p.add_argument("--sizes", type=lambda s: [int(v) for v in _floats(s)], help="values of N (default 100)")
    p.add_argument("--etas", type=_floats, help="values of eta (default 1,5)")
    p.add_argument("--gammas", type=_floats, help="gamma grid (default 10 log-spaced values 0.1..10)")
    p.add_argument("--num-warmup", type=int, help="NUTS warm-up per chain (default: the spec's, 500)")
    p.add_argument("--num-samples", type=int, help="NUTS draws per chain (default: the spec's, 500)")
    p.add_argument("--num-chains", type=int, help="NUTS chains (default: the spec's, 2)")
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder of the specs (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    q = args.quick
    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if q else SIZES)
    etas = tuple(args.etas) if args.etas else (QUICK_ETAS if q else ETAS)
    gammas = tuple(args.gammas) if args.gammas else (QUICK_GAMMAS if q else GAMMAS)
    nuts = {}
    for key, given, quick in (("inference.num_warmup", args.num_warmup, 100), ("inference.num_samples", args.num_samples, 100),
                              ("inference.num_chains", args.num_chains, 1)):
        if given is not None or q:
            nuts[key] = int(given if given is not None else quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, th_path = out / "rev_kl_vs_gamma.csv", out / "theory_curves.csv"
    base_spec = load_spec(args.models / f"{BASE_SPEC}.toml")
    omega = float(np.ravel(base_spec.data.omega)[0])
    th_rows = theory_rows(etas, omega)
    write_csv(th_path, THEORY_COLUMNS, th_rows)
    rows = read_csv(csv_path) if args.resume else []
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

    write_text_atomic(out / "table.md", markdown_table(rows))
    figs = [plot(rows, th_rows, out / "double_descent.png")]
    meta = run_metadata(
        seed=0,
        study="double_descent",
        checks="THEORY.md §6 typical reverse KL vs gamma (teacher_student_kls(...).rev_typ), eta in {1, 5}",
        quick=bool(q),
        settings={"sizes": list(sizes), "etas": list(etas), "gammas": list(gammas), "omega": omega,
                  "base_spec": f"models/{BASE_SPEC}.toml", "nuts_overrides": nuts or "spec",
                  "seeds": "teacher: spec data.seed (0); NUTS: split(key(spec inference.seed))[0] as runs.fit_spec",
                  "theory_gamma_grid": [float(THEORY_GAMMAS[0]), float(THEORY_GAMMAS[-1]), len(THEORY_GAMMAS)],
                  "resume": bool(args.resume)},
        outputs=[csv_path.name, th_path.name, "table.md"] + [p.name for p in figs],
        wall_s=time.perf_counter() - t_start,
    )
    write_json_atomic(out / "metadata.json", meta)
    print(f"wrote {csv_path.name}, {th_path.name}, table.md, {', '.join(p.name for p in figs)} and metadata.json in {out} "
          f"({time.perf_counter() - t_start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
