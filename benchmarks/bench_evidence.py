#!/usr/bin/env python
"""Benchmark of the evidence estimators: error of (1/N) log Y against theory per CPU-second (THEORY.md §5).

For each phase spec (default ``models/pmo.toml`` — PM — and ``models/fmo.toml``
— FM; K = 2 rank-one teacher, ω = 2.5, teacher seed 0) and each
N ∈ ``--sizes`` (default 50, 100) it runs

* one NUTS ladder (:func:`bayes_sbm.evidence.thermodynamic_integration`),
  which gives **TI** and **stepping stone** from the same draws: both rows
  carry the full cost of the ladder (``shared_cost_with`` names the other);
* one SVI fit with the structured guide plus guide draws
  (:func:`bayes_sbm.inference.run_svi`, :func:`bayes_sbm.evidence.svi_evidence`),
  which gives the **ELBO**, the **importance** estimate and the **IWAE**
  bound (groups of 64): all three rows carry the cost of the fit and the draws
  (``svi_fit_cpu_s`` and ``svi_draws_cpu_s`` split it);

and reports, per estimator: (1/N) log Y, its Monte Carlo SE per N, the
THEORY.md §5 value at the data spectrum (``theory_per_n``) and at
c = (1.6, 0.4), ``|estimate − theory|`` per N, wall and CPU seconds
(``time.process_time`` of this process: all its threads; XLA and BLAS are
pinned to ``--threads`` threads, default 1, *before* JAX is imported),
``se2_cpu = (SE/N)² × CPU-s`` (the work-normalised variance: smaller is
better; for a fixed estimator it is roughly constant once compilation is
amortised) and ``cpu_to_target_s = se2_cpu / 0.002²`` (the CPU seconds the
same estimator would need for SE/N = 0.002 if its variance fell like
1/cost; it ignores the fixed compilation cost, so it is optimistic at small
budgets).  ELBO and IWAE are lower bounds: their SE says nothing about their
bias, which shows in ``abs_error_per_n``.

Target of the issue (``targets`` in the JSON): SE of (1/N) log Y ≤ 0.002
within 10 CPU-minutes at N = 100; ``meets_target`` is set on the N = 100 rows.

The JSON (``--out``, default ``benchmarks/results/bench_evidence.json``) is
rewritten atomically after every estimator group, so a stopped run keeps its
finished rows; ``--resume`` keeps the rows already there (same settings) and
runs only the missing groups.  ``--quick``: N = 8, 4 rungs × 100 draws,
300 SVI steps (a smoke run).

Usage: ``python benchmarks/bench_evidence.py [--quick] [--sizes 50,100] [--specs pmo,fmo]
[--out PATH] [--resume] [--threads T]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402  (standard library only: threads are pinned in main)
    LADDER_OPTIONS, ROOT, evidence_group, ladder_settings, name_list, pin_threads, size_list, theory_pair,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_evidence.json"
SPECS = ("pmo", "fmo")
SIZES = (50, 100)
QUICK_SIZES = (8,)
TARGETS = {"N": 100, "se_per_n": 0.002, "cpu_s": 600.0}
GROUPS = {"ti": ("ti", "stepping_stone"), "svi": ("elbo", "importance", "iwae")}
ESTIMATORS = tuple(e for group in GROUPS.values() for e in group)
KIND = {"ti": "consistent", "stepping_stone": "consistent (biased low at finite draws)", "elbo": "lower bound",
        "importance": "consistent (biased low when the weight ESS is small)", "iwae": "lower bound"}
#: Settings that must agree for ``--resume`` to reuse rows.
SIGNATURE_KEYS = ("quick", "threads", "ladder", "svi_steps", "svi_draws", "svi_learning_rate", "seed")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: N = 8, 4 rungs x 100 draws, 300 SVI steps")
    p.add_argument("--sizes", type=size_list, default=None, help="comma-separated N (default 50,100; 8 with --quick)")
    p.add_argument("--specs", type=name_list, default=list(SPECS),
                   help="phase specs in models/ (default pmo,fmo: a PM and an FM phase)")
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder of the specs (default: %(default)s)")
    p.add_argument("--estimators", type=name_list, default=["ti", "svi"],
                   help="groups to run: ti (TI + stepping stone), svi (ELBO, importance, IWAE); default both")
    p.add_argument("--rungs", type=int, default=None, help="initial TI rungs (default 12; 4 with --quick)")
    p.add_argument("--max-rungs", type=int, default=None, help="TI rungs after bisection (default 20; 4 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="NUTS draws per rung (default 500; 100 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="NUTS warm-up per later rung (default 200; 50 with --quick)")
    p.add_argument("--first-warmup", type=int, default=None, help="NUTS warm-up of the first rung (default 500; 100 with --quick)")
    p.add_argument("--prior-draws", type=int, default=None, help="exact GOE draws at t = 0 (default 4000; 1000 with --quick)")
    p.add_argument("--svi-steps", type=int, default=None, help="SVI steps (default 3000; 300 with --quick)")
    p.add_argument("--svi-draws", type=int, default=None, help="guide draws for the evidence (default 4000; 1000 with --quick)")
    p.add_argument("--svi-learning-rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the estimators (default 0, as the specs)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for BLAS/XLA (default 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="keep finished rows of --out and run only the missing groups")
    args = p.parse_args(argv)
    q = args.quick
    pick = lambda v, quick, full: v if v is not None else (quick if q else full)  # noqa: E731
    args.sizes = args.sizes or list(QUICK_SIZES if q else SIZES)
    args.svi_steps = pick(args.svi_steps, 300, 3000)
    args.svi_draws = pick(args.svi_draws, 1000, 4000)
    bad = [e for e in args.estimators if e not in GROUPS]
    if bad:
        p.error(f"--estimators: unknown group(s) {bad}; choose from {list(GROUPS)}")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def _row(base: dict, name: str, group: str, est, wall: float, cpu: float, **extra) -> dict:
    per_n, se_n = float(est.per_n), float(est.se_per_n)
    se2_cpu = se_n**2 * cpu
    row = base | {
        "estimator": name, "kind": KIND[name], "group": group,
        "shared_cost_with": [e for e in GROUPS[group] if e != name],
        "per_n": per_n, "se_per_n": se_n, "log_evidence": float(est.log_evidence), "se": float(est.se),
        "error_per_n": per_n - base["theory_per_n"], "abs_error_per_n": abs(per_n - base["theory_per_n"]),
        "abs_error_limit_per_n": abs(per_n - base["theory_limit_per_n"]),
        "wall_s": wall, "cpu_s": cpu, "se2_cpu": se2_cpu,
        "cpu_to_target_s": se2_cpu / TARGETS["se_per_n"] ** 2,
    } | extra
    if base["N"] == TARGETS["N"]:
        row["meets_target"] = bool(se_n <= TARGETS["se_per_n"] and cpu <= TARGETS["cpu_s"])
    return row


def run_group(group: str, spec, problem, args, ladder, base: dict) -> list[dict]:
    """The rows of one group (:func:`analysis._common.evidence_group`, keys from ``--seed``), each with the group's cost."""
    g = evidence_group(group, spec, problem, seed=args.seed, ladder=ladder, svi_steps=args.svi_steps,
                       svi_draws=args.svi_draws, svi_learning_rate=args.svi_learning_rate)
    f = dict(g.facts)
    if group == "ti":
        quad = {"quadrature_correction_per_n": f.pop("quadrature_correction_per_n")}
        extra = {"ti": quad | f, "stepping_stone": f}
    else:
        importance = {"importance_ess": f.pop("importance_ess")}
        extra = {"elbo": f, "importance": importance | f, "iwae": f}
    return [_row(base, name, group, est, g.wall_s, g.cpu_s, **extra[name]) for name, est in g.estimates.items()]


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def summary(rows: list[dict]) -> dict:
    """Per (spec, N): the consistent estimator with the smallest work-normalised variance, and the target check."""
    out = {}
    for key in sorted({(r["spec"], r["N"]) for r in rows}):
        sel = [r for r in rows if (r["spec"], r["N"]) == key]
        consistent = [r for r in sel if r["kind"].startswith("consistent")]
        best = min(consistent, key=lambda r: r["se2_cpu"]) if consistent else None
        smallest_err = min(sel, key=lambda r: r["abs_error_per_n"])
        out[f"{key[0]}_N{key[1]}"] = {
            "phase": sel[0]["phase"],
            "lowest_se2_cpu_consistent": best["estimator"] if best else None,
            "smallest_abs_error": smallest_err["estimator"],
            "ti_minus_stepping_stone_per_n": next((a["per_n"] - b["per_n"] for a in sel if a["estimator"] == "ti"
                                                   for b in sel if b["estimator"] == "stepping_stone"), None),
            "meets_target": sorted(r["estimator"] for r in sel if r.get("meets_target")),
        }
    return out


def format_table(rows: list[dict]) -> str:
    head = (f"{'spec':5s} {'phase':5s} {'N':>4s} {'estimator':15s} {'(1/N)logY':>10s} {'SE/N':>9s} {'theory/N':>9s} "
            f"{'|err|/N':>9s} {'wall s':>8s} {'CPU s':>8s} {'SE²·CPU':>9s} {'CPU→.002':>9s} target")
    lines = [head, "-" * len(head)]
    for r in rows:
        tgt = "" if "meets_target" not in r else ("yes" if r["meets_target"] else "no")
        lines.append(f"{r['spec']:5s} {r['phase']:5s} {r['N']:4d} {r['estimator']:15s} {r['per_n']:10.5f} {r['se_per_n']:9.2e} "
                     f"{r['theory_per_n']:9.5f} {r['abs_error_per_n']:9.2e} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} "
                     f"{r['se2_cpu']:9.2e} {r['cpu_to_target_s']:9.1f} {tgt}")
    lines.append("(TI/stepping stone share one ladder and ELBO/importance/IWAE one SVI fit: each row carries its group's "
                 "full cost; ELBO/IWAE are lower bounds; theory = THEORY.md §5 at the data spectrum)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    thread_env = pin_threads(args.threads, jax_platforms=os.environ.get("JAX_PLATFORMS", "cpu"))
    import numpy as np  # noqa: F401  (after pinning threads)

    from bayes_sbm.io import run_metadata, write_json_atomic
    from bayes_sbm.runs import problem_from_spec
    from bayes_sbm.specs import load_spec

    t_start = time.perf_counter()
    ladder = ladder_settings(args)
    settings = {
        "quick": bool(args.quick), "threads": args.threads,
        "ladder": {name: getattr(ladder, name) for name in LADDER_OPTIONS.values()},
        "svi_steps": args.svi_steps, "svi_draws": args.svi_draws, "svi_learning_rate": args.svi_learning_rate,
        "seed": args.seed,
    }
    out: Path = args.out
    rows: list[dict] = []
    if args.resume and out.exists():
        import json

        old = json.loads(out.read_text())
        if all(old.get("settings", {}).get(k) == settings[k] for k in SIGNATURE_KEYS):
            rows = list(old.get("rows", []))
        else:
            print(f"[resume] {out}: settings differ, starting afresh", flush=True)

    def payload(complete: bool) -> dict:
        return {
            "benchmark": "bench_evidence", "quick": bool(args.quick), "threads": args.threads, "thread_env": thread_env,
            "meta": run_metadata(seed=args.seed, specs=args.specs, sizes=args.sizes),
            "settings": settings, "targets": TARGETS, "rows": rows, "summary": summary(rows),
            "complete": complete, "wall_s": time.perf_counter() - t_start,
        }

    order = {e: i for i, e in enumerate(ESTIMATORS)}
    spec_order = {s: i for i, s in enumerate(args.specs)}

    def sort_key(r):
        return (spec_order.get(r["spec"], 99), r["spec"], r["N"], order.get(r["estimator"], 99))

    for name in args.specs:
        base_spec = load_spec(args.models / f"{name}.toml")
        for N in args.sizes:
            spec = base_spec.with_overrides({"model.N": int(N)})
            problem = problem_from_spec(spec)
            c, g, e = problem.frame.c, problem.gamma, problem.eta
            at_c, at_limit = theory_pair(c, g, e)
            base = {"spec": name, "N": int(N), "gamma": g, "eta": e, "c": c.tolist(), "phase": at_c.phase,
                    "phase_limit": at_limit.phase, "theory_per_n": at_c.log_evidence_per_n,
                    "theory_limit_per_n": at_limit.log_evidence_per_n}
            for group in args.estimators:
                if all(any(r["spec"] == name and r["N"] == N and r["estimator"] == est for r in rows) for est in GROUPS[group]):
                    print(f"[skip] {name} N={N} {group}: rows already in {out}", flush=True)
                    continue
                new = run_group(group, spec, problem, args, ladder, base)
                rows = [r for r in rows if not (r["spec"] == name and r["N"] == N and r["estimator"] in GROUPS[group])] + new
                rows.sort(key=sort_key)
                write_json_atomic(out, payload(False))
                for r in new:
                    print(f"[{group}] {name} N={N} {r['estimator']:15s} {r['per_n']:+.5f} ± {r['se_per_n']:.5f} "
                          f"(theory {r['theory_per_n']:+.5f}) {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU", flush=True)
    rows.sort(key=sort_key)
    write_json_atomic(out, payload(True))
    print()
    print(format_table(rows))
    print(f"\nwrote {out} ({time.perf_counter() - t_start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
