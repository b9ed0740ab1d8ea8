"""Smoke test: ``benchmarks/bench_partition.py --quick`` runs and writes the documented JSON.

The benchmark's ``main`` runs in this process (no subprocess, no wall-clock timeout).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_script_main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_partition.py"
#: THEORY §2 / library claim: log Z to ~1e-12 absolute; the quick run's Kummer check must meet it.
KUMMER_ATOL = 1e-11


def _run(*args: str) -> str:
    return run_script_main(SCRIPT, *args)


@pytest.mark.slow
def test_bench_partition_quick(tmp_path):
    out = tmp_path / "x.json"
    stdout = _run("--quick", "--out", str(out))
    assert "rest/eigh" in stdout
    result = json.loads(out.read_text())
    for key in ("benchmark", "quick", "threads", "thread_env", "repeats", "versions", "partition", "sampling", "targets", "wall_s"):
        assert key in result, key
    assert result["quick"] is True and result["threads"] == 1
    assert result["thread_env"]["OMP_NUM_THREADS"] == "1"
    assert "intra_op_parallelism_threads=1" in result["thread_env"]["XLA_FLAGS"]
    assert {"jax", "numpyro", "numpy", "python"} <= set(result["versions"])
    assert result["partition"] and result["sampling"]
    for row in result["partition"]:
        for key in ("N", "eigh_s", "rest_s", "value_and_grad_s", "rest_over_eigh", "kummer_abs_err",
                    "rank_one_saddle_minus_exact", "pm_saddle_minus_exact", "pm_gauss_saddle_minus_exact"):
            assert key in row, key
        assert row["eigh_s"] > 0 and row["rest_s"] > 0
        assert row["kummer_abs_err"] <= KUMMER_ATOL
    cases = {row["case"] for row in result["sampling"]}
    assert cases == {"paramagnetic", "condensed"}
    for row in result["sampling"]:
        for key in ("N", "draws", "sample_s", "sample_eigen_only_s", "acceptance", "condensate", "max_norm_error"):
            assert key in row, key
        assert 0 < row["acceptance"] <= 1
