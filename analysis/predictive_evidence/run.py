"""Predictive forward KL from evidence ratios where Monte Carlo weights degenerate (THEORY.md §3, §6).

At β = 1 the posterior predictive is an evidence ratio (THEORY.md §3),

    log P_pp(x) = log Y(D ∪ {x}) − log Y(D)        (η = 1: every point has weight 1),

so the predictive forward KL needs no log-mean-exp over posterior draws:

    D(P* ‖ P_pp)/N = E_{x~P*}[log p*(x) − log Y(D ∪ {x}) + log Y(D)] / N,

averaged over M teacher points x_j as paired differences (log p*(x_j) exact;
its fluctuation over x cancels most of that of log P_pp(x_j)), each log Y by
thermodynamic integration (:func:`bayes_sbm.evidence.thermodynamic_integration`).
At N = 200 the Monte Carlo route of ``bayes-sbm predict`` has a median weight
ESS of 1 (one draw dominates; the tempered-posterior study flags it), while
the two TI estimates of a ratio each carry ~0.3 nat of error and their
finite-size biases largely cancel.  log P_pp(x)/N is self-averaging over
x ~ P* at large N; the spread over the M points gives its SE.

This study checks ``theory.teacher_student_kls(γ, η = 1, ω).fwd_pp`` for the
K = 2 rank-one teacher of ``models/fmo.toml`` (ω = 2.5, seed 0) at γ = 0.5
and η = 1 (FMo), N = 200, with M = 3 teacher points x_j (key
``fold_in(key(data seed), 1)``).  The M + 1 evidence estimates run as one
sweep over data files (task ``evidence``, TI only; band model) on Dask
distributed — a LocalCluster here, ``--scheduler tcp://HOST:8786`` for a
cluster — and a rerun skips the finished ones.

Outputs (in ``--out``, default ``analysis/predictive_evidence/results``):

* ``predictive_kl.csv`` — per point x_j: log Y(D ∪ {x_j}) ± SE, log P_pp(x_j)
  ± SE, per N; and the summary row (the KL ± SE, theory, z);
* ``table.md``, ``metadata.json``;
* ``data/`` — D.npy, Dx<j>.npy and the base spec they are fitted with;
  ``runs/`` — the sweep folder (one ``evidence.json`` per data file).

``--quick``: N = 10, M = 2, aligned model, 4 rungs × 100 draws (a smoke test).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    ROOT, finish_study, fmt_num, md_head, md_row, pin_threads, run_study_sweep, start_study, study_parser, write_csv,
)

pin_threads()  # before NumPy/JAX are imported (the Dask workers pin themselves)

import json  # noqa: E402
import math  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import sweep, teacher, theory  # noqa: E402
from bayes_sbm.distribution import SphericalBoltzmann  # noqa: E402
from bayes_sbm.io import save_npy_atomic, write_text_atomic  # noqa: E402
from bayes_sbm.specs import load_spec, parse_spec  # noqa: E402

HERE = Path(__file__).resolve().parent
BASE_SPEC = ROOT / "models" / "fmo.toml"
GAMMA, ETA = 0.5, 1.0
N_DEFAULT, POINTS_DEFAULT = 200, 3
LADDER = {"rungs": 10, "max_rungs": 14, "samples": 300, "warmup": 150, "ti": True, "svi": False}
QUICK = {"N": 10, "points": 2, "ladder": {"rungs": 4, "max_rungs": 4, "samples": 100, "warmup": 50, "ti": True, "svi": False}}
COLUMNS = ("row", "N", "gamma", "eta", "data_file", "log_evidence", "se", "log_pp", "log_pp_se", "log_pp_per_n",
           "fwd_pp_per_n", "fwd_pp_se_per_n", "theory_fwd_pp", "diff", "z", "teacher_log_prob_per_n")


def parser():
    p = study_parser(__doc__, HERE / "results", "smoke test: N = 10, M = 2, aligned model, 4 rungs x 100 draws")
    p.add_argument("--size", type=int, help=f"N (default {N_DEFAULT})")
    p.add_argument("--points", type=int, help=f"teacher points x_j (default {POINTS_DEFAULT})")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    p.add_argument("--analyse-only", action="store_true", help="no estimating: analyse the points already finished")
    return p


def write_inputs(folder: Path, N: int, M: int, quick: bool) -> tuple[list[str], float, np.ndarray]:
    """D.npy, Dx<j>.npy and base.toml in ``folder``; returns the data file names, ω and log p*(x_j) (M,)."""
    base = load_spec(BASE_SPEC)
    d = base.data
    omega = float(np.ravel(d.omega)[0])
    td = teacher.teacher_student_data(jax.random.key(d.seed), N, d.K, d.omega)  # the data bayes-sbm fit would draw
    xs = teacher.sample_teacher(jax.random.fold_in(jax.random.key(d.seed), 1), td.teacher, M)
    folder.mkdir(parents=True, exist_ok=True)
    save_npy_atomic(folder / "D.npy", td.data)
    names = ["D.npy"]
    for j, x in enumerate(xs):
        save_npy_atomic(folder / f"Dx{j}.npy", np.vstack([td.data, x]))
        names.append(f"Dx{j}.npy")
    raw = {"name": "predictive_evidence", "description": "data (and one teacher point) of the evidence-ratio predictive KL",
           "model": {"N": N, "gamma": GAMMA, "eta": ETA, "parametrization": "aligned" if quick else "band"},
           "data": {"source": "file", "path": "D.npy"},
           "inference": {"method": "nuts", "num_warmup": 150, "num_samples": 300, "num_chains": 2, "seed": 0}}
    write_text_atomic(folder / "base.toml", parse_spec(raw, source="<predictive_evidence>", base_dir=folder).to_toml())
    teacher_log_prob = np.asarray(SphericalBoltzmann(td.teacher.W).log_prob(xs), dtype=np.float64)  # log p*(x_j), exact
    return names, omega, teacher_log_prob


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    q = args.quick
    N = int(args.size or (QUICK["N"] if q else N_DEFAULT))
    M = int(args.points or (QUICK["points"] if q else POINTS_DEFAULT))
    if N < 4 or M < 1:
        print(f"error: --size {N} / --points {M}: need N >= 4 and at least one point", file=sys.stderr)
        return 2
    names, omega, teacher_log_prob = write_inputs(out / "data", N, M, q)
    raw = {"name": "predictive_evidence", "base": "base.toml", "task": "evidence", "grid": {"data.path": names},
           "evidence": QUICK["ladder"] if q else LADDER}
    sw = sweep.parse_sweep(raw, source=str(out / "data" / "sweep"), base_dir=out / "data", out=out / "runs")
    points, failed, point_seconds, sweep_wall = run_study_sweep(sw, analyse_only=args.analyse_only, scheduler=args.scheduler,
                                                                workers=args.workers, processes=not q)
    est = {}
    for point in points:
        ti = json.loads((point.folder / sweep.EVIDENCE_FILE).read_text())["estimators"]["ti"]
        est[point.values["data.path"]] = (float(ti["log_evidence"]), float(ti["se"]))
    rows = []
    th = theory.teacher_student_kls(GAMMA, ETA, omega)
    if "D.npy" in est and len(est) > 1:
        y0, s0 = est["D.npy"]
        rows.append({"row": "D", "N": N, "gamma": GAMMA, "eta": ETA, "data_file": "D.npy", "log_evidence": y0, "se": s0})
        diffs, ses = [], []
        for j, name in enumerate(names[1:]):
            if name not in est:
                continue
            y, s = est[name]
            diffs.append(teacher_log_prob[j] - (y - y0))
            ses.append(s)
            rows.append({"row": "D+x", "N": N, "gamma": GAMMA, "eta": ETA, "data_file": name, "log_evidence": y, "se": s,
                         "log_pp": y - y0, "log_pp_se": math.hypot(s, s0), "log_pp_per_n": (y - y0) / N,
                         "teacher_log_prob_per_n": teacher_log_prob[j] / N})
        d = np.array(diffs)
        # SE: the TI errors (log Y(D) shared by every ratio) and the spread of the paired differences over the points
        se_ti = math.sqrt(s0**2 + float(np.mean(np.square(ses))) / d.size)
        se_x = float(np.std(d, ddof=1)) / math.sqrt(d.size) if d.size > 1 else math.nan
        se = math.hypot(se_ti, se_x) if math.isfinite(se_x) else se_ti
        kl = float(d.mean()) / N
        rows.append({"row": "KL", "N": N, "gamma": GAMMA, "eta": ETA, "fwd_pp_per_n": kl, "fwd_pp_se_per_n": se / N,
                     "theory_fwd_pp": th.fwd_pp, "diff": kl - th.fwd_pp, "z": (kl - th.fwd_pp) / (se / N)})
        print(f"N={N} gamma={GAMMA:g} eta={ETA:g}: D(P*||P_pp)/N = {kl:.4f} ± {se / N:.4f} from {d.size} evidence ratios "
              f"(theory {th.fwd_pp:.4f}, z = {(kl - th.fwd_pp) / (se / N):+.2f})", flush=True)
    write_csv(out / "predictive_kl.csv", COLUMNS, rows)
    table = ["# Predictive forward KL from evidence ratios (THEORY.md §3, §6)", "",
             "log P_pp(x) = log Y(D ∪ {x}) − log Y(D) by TI at η = 1; D(P*‖P_pp)/N = mean_j [log p*(x_j) − log P_pp(x_j)]/N; "
             "SE from the TI errors and the spread over the points.", "",
             *md_head(("row", "data", "log Y ± SE", "log P_pp(x) ± SE", "per N", "D(P*‖P_pp)/N ± SE", "theory", "z"))]
    for r in rows:
        table.append(md_row([r["row"], r.get("data_file", "–"),
                             f"{fmt_num(r['log_evidence'])} ± {fmt_num(r['se'])}" if "log_evidence" in r else "–",
                             f"{fmt_num(r['log_pp'])} ± {fmt_num(r['log_pp_se'])}" if "log_pp" in r else "–",
                             fmt_num(r.get("log_pp_per_n")) if "log_pp_per_n" in r else "–",
                             f"{fmt_num(r['fwd_pp_per_n'])} ± {fmt_num(r['fwd_pp_se_per_n'])}" if "fwd_pp_per_n" in r else "–",
                             fmt_num(r.get("theory_fwd_pp")) if "theory_fwd_pp" in r else "–",
                             fmt_num(r.get("z"), 2) if "z" in r else "–"]))
    finish_study(out, "predictive_evidence", t_start, files=["predictive_kl.csv"], table="\n".join(table) + "\n", seed=0,
                 checks="THEORY.md §6 predictive forward KL (teacher_student_kls(...).fwd_pp) via the §3 evidence ratio",
                 quick=bool(q), settings={"N": N, "points": M, "gamma": GAMMA, "eta": ETA, "omega": omega,
                                          "ladder": QUICK["ladder"] if q else LADDER, "base_spec": "models/fmo.toml (teacher)",
                                          "point_key": "fold_in(key(data seed), 1)", "sweep": sw.to_dict()},
                 failed=failed, timings={"sweep_wall_s": sweep_wall, "point_seconds": point_seconds})
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
