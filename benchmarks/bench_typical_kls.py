#!/usr/bin/env python
"""Benchmark of the exact typical KLs of band posterior draws (THEORY.md §6, §8): band route vs dense route.

For N ∈ {100, 300, 1000} (m = 2: K = 2 data), S band draws (GOE band of
precision 1 with a spike of 3 on T[0, 0], a condensed student), a random frame
Q and a rank-one teacher ω = 2.5 in a random direction, measures side by side
in one process, single-threaded by default (threads pinned *before* JAX is
imported):

* **band**: :func:`bayes_sbm.predictive.typical_kls_band` (one reverse-mode
  band log Z per draw, exact Haar average; no N × N matrix);
* **dense**: the reconstruction ``W = Q diag(I, H) T diag(I, H)ᵀ Qᵀ`` with a
  fresh Haar H per draw (:func:`bayes_sbm.inference.coupling_draws`'s
  construction) plus :func:`bayes_sbm.predictive.typical_kls` (one ``eigh``
  per draw); reported as rebuild and KL seconds.

Both give the posterior typical KLs; the band values are the Haar averages of
the dense ones, so the table also reports z = (dense mean − band mean)/SE over
the draws (pure Haar noise: |z| ≲ 3) and the ratio of per-draw standard
deviations (what the exact average saves).  Timings are minima over repeats
after a warm-up; wall seconds.  Prints a table and writes JSON atomically.

Usage: ``python benchmarks/bench_typical_kls.py [--quick] [--out PATH] [--threads T] [--repeats R]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: analysis._common

from analysis._common import pin_threads  # noqa: E402  (standard library only: threads are pinned before JAX)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_typical_kls.json"
FULL_NS = (100, 300, 1000)
QUICK_NS = (30,)
#: Band draws per case (the dense route costs S eigh of N × N).
FULL_DRAWS = 64
QUICK_DRAWS = 8
BANDWIDTH = 2
PRECISION = 1.0
SPIKE = 3.0
OMEGA = 2.5
HEADER = (f"{'N':>6s} {'S':>4s} {'band s':>9s} {'rebuild s':>10s} {'dense KL s':>11s} {'speed-up':>9s} "
          f"{'fwd/N band':>11s} {'z fwd':>6s} {'z rev':>6s} {'sd ratio fwd':>12s}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (N = 30, 8 draws, 1 repeat)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output path (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for BLAS/XLA (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3; 1 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def min_time(fn, repeats: int):
    """(result of the warm-up call, minimum wall seconds over ``repeats`` further calls)."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def bench_case(n: int, num: int, repeats: int, seed: int) -> dict:
    import jax
    import numpy as np

    from bayes_sbm import band, inference, predictive, teacher

    rng = np.random.default_rng(seed + n)
    lower = np.asarray(band.sample_goe_band(jax.random.key(seed + n), n, BANDWIDTH, PRECISION, sample_shape=(num,)).lower).copy()
    lower[:, 0, 0] += SPIKE
    T = band.Band(lower)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    Wt = np.asarray(teacher.planted_teacher(jax.random.key(seed + 1), n, OMEGA).W)

    def rebuild():
        H = inference._haar(jax.random.key(seed + 2), num, n - BANDWIDTH)
        return Q @ inference._rotate_band(T, H) @ Q.T

    band_kl, t_band = min_time(lambda: predictive.typical_kls_band(T, Q, Wt), repeats)
    W, t_rebuild = min_time(rebuild, repeats)
    dense_kl, t_dense = min_time(lambda: predictive.typical_kls(W, Wt), repeats)
    z = {d: float((getattr(dense_kl, f"{d}_mean") - getattr(band_kl, f"{d}_mean"))
                  / (np.std(getattr(dense_kl, d) - getattr(band_kl, d), ddof=1) / np.sqrt(num)))
         for d in ("forward", "reverse")}
    sd = {d: float(np.std(getattr(band_kl, d), ddof=1) / np.std(getattr(dense_kl, d), ddof=1)) for d in ("forward", "reverse")}
    return {"N": n, "draws": num, "m": BANDWIDTH, "band_s": t_band, "rebuild_s": t_rebuild, "dense_kl_s": t_dense,
            "speed_up": (t_rebuild + t_dense) / t_band, "band_ms_per_draw": 1e3 * t_band / num,
            "dense_ms_per_draw": 1e3 * (t_rebuild + t_dense) / num,
            "forward_per_n_band": band_kl.forward_per_n, "reverse_per_n_band": band_kl.reverse_per_n,
            "forward_per_n_dense": dense_kl.forward_per_n, "reverse_per_n_dense": dense_kl.reverse_per_n,
            "z_forward": z["forward"], "z_reverse": z["reverse"],
            "sd_ratio_forward": sd["forward"], "sd_ratio_reverse": sd["reverse"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    env = pin_threads(args.threads)
    from bayes_sbm import io

    repeats = args.repeats or (1 if args.quick else 3)
    ns, num = (QUICK_NS, QUICK_DRAWS) if args.quick else (FULL_NS, FULL_DRAWS)
    print(f"typical KLs of band draws (THEORY §6, §8), {args.threads} thread(s), min of {repeats} repeats, "
          f"m = {BANDWIDTH}, spike {SPIKE}, teacher omega = {OMEGA}")
    print(HEADER)
    rows = []
    for n in ns:
        r = bench_case(n, num, repeats, args.seed)
        rows.append(r)
        print(f"{r['N']:6d} {r['draws']:4d} {r['band_s']:9.3f} {r['rebuild_s']:10.3f} {r['dense_kl_s']:11.3f} "
              f"{r['speed_up']:9.1f} {r['forward_per_n_band']:11.5f} {r['z_forward']:+6.2f} {r['z_reverse']:+6.2f} "
              f"{r['sd_ratio_forward']:12.3f}", flush=True)
    result = {
        "benchmark": "bench_typical_kls",
        "quick": args.quick,
        "threads": args.threads,
        "thread_env": env,
        "repeats": repeats,
        "load_average": os.getloadavg(),
        **io.run_metadata(seed=args.seed),
        "case": {"m": BANDWIDTH, "precision": PRECISION, "spike": SPIKE, "omega": OMEGA},
        "rows": rows,
    }
    out = io.write_json_atomic(args.out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
