#!/usr/bin/env python
"""Benchmark of the exact partition function and the exact sampler (THEORY.md §2).

Measures, single-threaded by default (threads pinned *before* JAX is imported):

* log Z + gradient for N ∈ {100, 300, 1000, 3000}: ``jnp.linalg.eigh`` (jitted),
  the rest (``sphere.log_partition_and_gradient`` on the eigenvalues, jitted),
  and the full ``jax.value_and_grad(sphere.log_partition_matrix)`` (jitted);
  target: rest/eigh ≤ 0.5 at N = 1000;
* 10⁴ exact draws at N ∈ {100, 1000, 5000} in a paramagnetic spectrum (GOE,
  semicircle edge 1) and a condensed one (same bulk, top eigenvalue 3):
  ``sphere.sample_eigen`` with the old ACG-only sampler (``method="acg"``) and the
  new default (``method="auto"``: condensed-mode split or ACG, whichever has the
  larger predicted acceptance) side by side, as seconds and draws/s (wall and
  process CPU time, so contention from other processes shows), with predicted
  and measured acceptance rates; plus ``SphericalBoltzmann(W).sample`` (jitted,
  one ``eigh`` included) for N ≤ 1000; targets: eigen-only ≤ 1 s and
  ``SphericalBoltzmann.sample`` ≤ 2 s at N = 1000, both spectra;
* accuracy: |log Z − log ₁F₁(½; N/2; Nℓ/2)| for the rank-one spectrum ℓ = 3
  (mpmath, 30 digits), and |saddle − exact| (plain and Gaussian-corrected)
  for that spectrum and the paramagnetic GOE one.

Timings are medians over repeats after a jit warm-up (the samplers are compiled
ahead of time instead, so a slow old-sampler cell is not run an extra time), with
``block_until_ready``.
Prints a table and writes JSON atomically (``bayes_sbm.io.write_json_atomic``).

Usage: ``python benchmarks/bench_partition.py [--quick] [--out PATH] [--threads T]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: analysis._common

from analysis._common import pin_threads  # noqa: E402  (standard library only: threads are pinned before JAX)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_partition.json"
FULL_NS = (100, 300, 1000, 3000)
FULL_SAMPLE_NS = (100, 1000, 5000)
#: Largest N for the matrix-level SphericalBoltzmann.sample timing (above it an O(N³) eigh dominates; spectra
#: then come from the Dumitriu–Edelman tridiagonal GOE model, which has the same eigenvalue law).
FULL_MATRIX_MAX_N = 1000
#: Stop repeating a sampler timing once its runs have taken this long (at least one timed run).
SAMPLER_TIME_BUDGET_S = 30.0
QUICK_NS = (20, 60)
QUICK_SAMPLE_NS = (20,)
RANK_ONE_ELL = 3.0
CONDENSED_TOP = 3.0
#: Targets from the project brief.
TARGET_RATIO_N = 1000
TARGET_RATIO = 0.5
TARGET_SAMPLE_SECONDS = 2.0
TARGET_EIGEN_SAMPLE_SECONDS = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (small N, few repeats, 500 draws)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output path (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for BLAS/XLA (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats (default 7; 2 with --quick)")
    p.add_argument("--draws", type=int, default=None, help="samples per sampling benchmark (default 10000; 500 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def median_time(fn, *args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` (blocked) after one warm-up call (compilation)."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def goe_matrix(rng, n: int, edge: float = 1.0):
    """Dense GOE matrix with semicircle edge ``edge`` (off-diagonal variance edge²/(4N))."""
    import numpy as np

    a = rng.standard_normal((n, n))
    return (a + a.T) * (edge / (2.0 * np.sqrt(2.0 * n)))


def kummer_log(n: int, ell: float) -> float:
    import mpmath

    mpmath.mp.dps = 30
    return float(mpmath.log(mpmath.hyp1f1(0.5, n / 2, n * ell / 2)))


def bench_partition(ns, repeats, rng):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bayes_sbm import sphere

    eigh = jax.jit(jnp.linalg.eigh)
    rest = jax.jit(sphere.log_partition_and_gradient)
    full = jax.jit(jax.value_and_grad(sphere.log_partition_matrix))
    exact = jax.jit(sphere.log_partition)
    saddle = jax.jit(sphere.log_partition_saddle, static_argnames="gaussian_correction")
    rows = []
    for n in ns:
        W = jnp.asarray(goe_matrix(rng, n))
        lam = eigh(W)[0]
        t_eigh = median_time(eigh, W, repeats=repeats)
        t_rest = median_time(rest, lam, repeats=repeats)
        t_full = median_time(full, W, repeats=repeats)

        rank_one = np.zeros(n)
        rank_one[-1] = RANK_ONE_ELL
        lz_r1 = float(exact(rank_one))
        lz_pm = float(exact(lam))
        rows.append(
            {
                "N": n,
                "eigh_s": t_eigh,
                "rest_s": t_rest,
                "value_and_grad_s": t_full,
                "rest_over_eigh": t_rest / t_eigh,
                "rank_one_ell": RANK_ONE_ELL,
                "rank_one_log_z": lz_r1,
                "kummer_abs_err": abs(lz_r1 - kummer_log(n, RANK_ONE_ELL)),
                "rank_one_saddle_minus_exact": float(saddle(rank_one)) - lz_r1,
                "rank_one_gauss_saddle_minus_exact": float(saddle(rank_one, gaussian_correction=True)) - lz_r1,
                "pm_log_z": lz_pm,
                "pm_saddle_minus_exact": float(saddle(lam)) - lz_pm,
                "pm_gauss_saddle_minus_exact": float(saddle(lam, gaussian_correction=True)) - lz_pm,
            }
        )
        print(f"  partition N={n}: done", file=sys.stderr, flush=True)
    return rows


def compiled_times(fn, *args, repeats: int, budget_s: float = SAMPLER_TIME_BUDGET_S):
    """``(median wall s, median process CPU s, last output)`` of a jitted ``fn(*args)`` compiled ahead of
    time (no warm-up run); repeats stop once ``budget_s`` is spent (at least one timed run)."""
    import jax

    compiled = fn.lower(*args).compile()
    walls, cpus = [], []
    while len(walls) < max(1, repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(*args))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if sum(walls) > budget_s:
            break
    return statistics.median(walls), statistics.median(cpus), out


def goe_spectrum(rng, n: int, edge: float = 1.0):
    """Ascending GOE eigenvalues (edge ``edge``) from the Dumitriu–Edelman tridiagonal model, O(N²)."""
    import numpy as np
    from scipy.linalg import eigvalsh_tridiagonal

    diag = rng.normal(0.0, np.sqrt(2.0), size=n)
    off = np.sqrt(rng.chisquare(np.arange(n - 1, 0, -1)))
    return eigvalsh_tridiagonal(diag, off) * (edge / (2.0 * np.sqrt(n)))


def bench_sampling(ns, draws, repeats, rng):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bayes_sbm import sphere
    from bayes_sbm.distribution import SphericalBoltzmann

    full = jax.jit(lambda key, W: SphericalBoltzmann(W).sample(key, (draws,)))
    # sample_eigen's compiled body (its host-side checks are no-ops under jit), plus the loop's counters,
    # so the timed run's own output gives the measured acceptance (no extra run of a slow cell)
    with_info = jax.jit(sphere._sample_eigen_impl, static_argnums=(2, 3, 4))
    acceptance = jax.jit(sphere.sampler_acceptance, static_argnums=1)
    rows = []
    for n in ns:
        matrix = n <= FULL_MATRIX_MAX_N
        if matrix:
            lam, V = np.linalg.eigh(goe_matrix(rng, n))
        else:
            lam, V = goe_spectrum(rng, n), None
        condensed = lam.copy()
        condensed[-1] = CONDENSED_TOP
        batch = sphere._proposal_batch(n)
        for case, spectrum in (("paramagnetic", lam), ("condensed", condensed)):
            key = jax.random.PRNGKey(n)
            spec = jnp.asarray(spectrum)
            row = {"N": n, "case": case, "top_eigenvalue": float(spectrum[-1]), "draws": draws}
            for method in ("acg", "auto"):
                timed = jax.jit(lambda key, lam, method=method: with_info(key, lam, draws, batch, method))
                wall, cpu, (y, info) = compiled_times(timed, key, spec, repeats=repeats)
                y = np.asarray(sphere.check_draws(y, f"N={n} {case} {method}"))
                row[f"{method}_eigen_s"] = wall
                row[f"{method}_eigen_cpu_s"] = cpu
                row[f"{method}_draws_per_s"] = draws / wall
                row[f"{method}_measured_acceptance"] = int(info.accepted) / int(info.proposals)
                row[f"{method}_split_used"] = bool(info.split)
                row[f"{method}_max_norm_error"] = float(np.max(np.abs(np.sum(y * y, axis=1) / n - 1.0)))
                print(f"  sampling N={n} {case} {method}: {wall:.3f} s", file=sys.stderr, flush=True)
            row["predicted_acceptance_acg"] = float(acceptance(spec, "acg"))
            row["predicted_acceptance_split"] = float(acceptance(spec, "split"))
            row["speedup"] = row["acg_eigen_s"] / row["auto_eigen_s"]
            if matrix:
                W = jnp.asarray(0.5 * ((V * spectrum) @ V.T + ((V * spectrum) @ V.T).T))
                t_full = median_time(full, key, W, repeats=repeats)
                x = np.asarray(full(key, W))
                max_norm = float(np.max(np.abs(np.sum(x * x, axis=1) / n - 1.0)))
            else:
                t_full, max_norm = None, row["auto_max_norm_error"]
            row.update(
                {
                    # kept field names (the sampler used by default, i.e. the new one)
                    "sample_s": t_full,
                    "sample_eigen_only_s": row["auto_eigen_s"],
                    "per_draw_ms": 1e3 * row["auto_eigen_s"] / draws,
                    "acceptance": max(row["predicted_acceptance_acg"], row["predicted_acceptance_split"]),
                    "condensate": float(2 * sphere.partition_gradient(spec)[-1] / n),
                    "max_norm_error": max_norm,
                }
            )
            rows.append(row)
    return rows


def _fmt(value, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_tables(result) -> str:
    lines = ["log Z + gradient (median seconds; accuracy in absolute log Z)"]
    head = f"{'N':>6} {'eigh':>9} {'rest':>9} {'v&g full':>9} {'rest/eigh':>9} {'|lz-1F1|':>9} {'r1 sad':>8} {'r1 gsad':>8} {'pm sad':>8} {'pm gsad':>9}"
    lines += [head, "-" * len(head)]
    for r in result["partition"]:
        lines.append(
            f"{r['N']:>6} {r['eigh_s']:>9.2e} {r['rest_s']:>9.2e} {r['value_and_grad_s']:>9.2e} {r['rest_over_eigh']:>9.3f}"
            f" {r['kummer_abs_err']:>9.1e} {r['rank_one_saddle_minus_exact']:>8.4f} {r['rank_one_gauss_saddle_minus_exact']:>8.4f}"
            f" {r['pm_saddle_minus_exact']:>8.4f} {r['pm_gauss_saddle_minus_exact']:>9.2e}"
        )
    draws = result["sampling"][0]["draws"] if result["sampling"] else 0
    lines += ["", f"exact sampling, sample_eigen ({draws} draws): old ACG-only vs new default (auto); median wall s, CPU s, draws/s"]
    head = (
        f"{'N':>6} {'case':>13} {'acg s':>8} {'acg cpu':>8} {'acg d/s':>9} {'new s':>8} {'new cpu':>8} {'new d/s':>9}"
        f" {'speedup':>7} {'used':>5} {'acc acg':>7} {'acc split':>9} {'acc meas':>8} {'M':>6} {'SB.sample':>9} {'max||y|^2/N-1|':>14}"
    )
    lines += [head, "-" * len(head)]
    for r in result["sampling"]:
        lines.append(
            f"{r['N']:>6} {r['case']:>13} {r['acg_eigen_s']:>8.3f} {r['acg_eigen_cpu_s']:>8.3f} {r['acg_draws_per_s']:>9.0f}"
            f" {r['auto_eigen_s']:>8.3f} {r['auto_eigen_cpu_s']:>8.3f} {r['auto_draws_per_s']:>9.0f} {r['speedup']:>7.1f}"
            f" {'split' if r['auto_split_used'] else 'acg':>5} {r['predicted_acceptance_acg']:>7.4f}"
            f" {r['predicted_acceptance_split']:>9.4f} {r['auto_measured_acceptance']:>8.4f} {r['condensate']:>6.3f}"
            f" {_fmt(r['sample_s'], '.3f', 9)} {r['max_norm_error']:>14.1e}"
        )
    lines += ["", "targets:"]
    for name, t in result["targets"].items():
        lines.append(f"  {name}: value {t['value']}, target {t['target']}, met: {t['met']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    env = pin_threads(args.threads)

    import numpy as np

    from bayes_sbm.io import package_versions, write_json_atomic

    repeats = args.repeats or (2 if args.quick else 7)
    draws = args.draws or (500 if args.quick else 10_000)
    ns = QUICK_NS if args.quick else FULL_NS
    sample_ns = QUICK_SAMPLE_NS if args.quick else FULL_SAMPLE_NS
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    partition = bench_partition(ns, repeats, rng)
    sampling = bench_sampling(sample_ns, draws, max(1, min(repeats, 3)), rng)

    targets = {}
    ratio_rows = [r for r in partition if r["N"] == TARGET_RATIO_N]
    if ratio_rows:
        v = ratio_rows[0]["rest_over_eigh"]
        targets["rest_over_eigh_at_N1000"] = {"value": round(v, 4), "target": f"<= {TARGET_RATIO}", "met": v <= TARGET_RATIO}
    for r in sampling:
        if r["N"] == 1000:
            v = r["sample_s"]
            targets[f"sample_{r['case']}_N1000_s"] = {"value": round(v, 4), "target": f"<= {TARGET_SAMPLE_SECONDS}", "met": v <= TARGET_SAMPLE_SECONDS}
            v = r["auto_eigen_s"]
            targets[f"sample_eigen_{r['case']}_N1000_s"] = {
                "value": round(v, 4), "target": f"<= {TARGET_EIGEN_SAMPLE_SECONDS}", "met": v <= TARGET_EIGEN_SAMPLE_SECONDS,
            }

    result = {
        "benchmark": "bench_partition",
        "quick": args.quick,
        "threads": args.threads,
        "thread_env": env,
        "repeats": repeats,
        "seed": args.seed,
        "versions": package_versions(),
        "argv": list(sys.argv),
        "partition": partition,
        "sampling": sampling,
        "targets": targets,
        "wall_s": time.perf_counter() - t0,
    }
    print(format_tables(result))
    out = write_json_atomic(args.out, result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
