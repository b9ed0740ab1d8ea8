"""Smoke test: ``benchmarks/bench_nuts.py --quick`` runs and writes the documented JSON (both tests are slow).

:func:`test_bench_nuts_quick` checks the JSON in detail on two variants (the
default dense one and the band one); :func:`test_bench_nuts_quick_all_variants`
runs every variant. The benchmark's ``main`` runs in this process (no
subprocess, no wall-clock timeout).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import run_script_main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_nuts.py"
#: The variants of the detailed check (the library default and the band model).
FAST_VARIANTS = ("aligned-spectral-diag", "band-diag")
VARIANTS = {
    "aligned-spectral-diag", "aligned-eigh-diag", "aligned-spectral-dense",
    "noncentred-spectral-diag", "centred-spectral-diag", "saddle-noncentred-eigh-diag", "band-diag",
}


def _run(*args: str) -> str:
    return run_script_main(SCRIPT, *args)


@pytest.mark.slow
def test_bench_nuts_quick(tmp_path):
    """The default dense variant and the band variant side by side, every documented key checked."""
    out = tmp_path / "x.json"
    stdout = _run("--quick", "--variants", ",".join(FAST_VARIANTS), "--out", str(out))
    assert "ESS/s λ1" in stdout
    result = json.loads(out.read_text())
    for key in ("benchmark", "quick", "device", "threads", "thread_env", "versions", "settings", "problem", "targets",
                "rows", "complete", "wall_s"):
        assert key in result, key
    assert result["quick"] is True and result["complete"] is True and result["threads"] == 1
    assert result["thread_env"]["JAX_PLATFORMS"] == "cpu"
    assert "intra_op_parallelism_threads=1" in result["thread_env"]["XLA_FLAGS"]
    assert {"jax", "numpyro", "arviz", "python"} <= set(result["versions"])
    rows = result["rows"]
    assert {r["variant"] for r in rows} == set(FAST_VARIANTS)
    for row in rows:
        assert row["status"] == "ok", row
        assert row["N"] == 10 and row["chain_method"] == "sequential"
        for key in ("ess_lam1", "ess_min_latent", "ess_min_spectral", "ess_per_s_lam1", "ess_per_s_slowest",
                    "warmup_compile_s", "sample_s", "mean_leapfrog_steps"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["variant"], key, row[key])
        assert row["ess_min_latent"] <= row["ess_median_latent"]
        assert isinstance(row["divergences"], int) and row["divergences"] >= 0
        assert math.isfinite(row["rhat_max"])
        for key in ("lam1", "u1", "M"):
            assert math.isfinite(row["posterior_mean"][key]) and math.isfinite(row["theory"][key])


@pytest.mark.slow
def test_bench_nuts_quick_all_variants(tmp_path):
    out = tmp_path / "x.json"
    _run("--quick", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {r["variant"] for r in rows} == VARIANTS
    assert all(r["status"] == "ok" for r in rows)
