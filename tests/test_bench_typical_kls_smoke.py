"""Smoke test: ``benchmarks/bench_typical_kls.py --quick`` runs in this process and writes the documented JSON.

The band route's agreement with the dense route is tested in ``tests/test_predictive.py`` (exactly, and
as a Haar average); here the benchmark's own cross-check (z of the dense mean against the band mean) is
only required to be finite: with 8 draws it is noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import run_script_main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_typical_kls.py"


@pytest.mark.slow  # like the other benchmark smoke tests; the KLs themselves are tested in test_predictive
def test_bench_typical_kls_quick(tmp_path):
    out = tmp_path / "x.json"
    stdout = run_script_main(SCRIPT, "--quick", "--out", str(out))
    assert "speed-up" in stdout
    result = json.loads(out.read_text())
    assert result["benchmark"] == "bench_typical_kls" and result["quick"] is True and result["threads"] == 1
    (row,) = result["rows"]
    assert row["N"] == 30 and row["draws"] == 8
    for key in ("band_s", "rebuild_s", "dense_kl_s", "speed_up", "forward_per_n_band", "forward_per_n_dense", "z_forward",
                "z_reverse", "sd_ratio_forward"):
        assert math.isfinite(row[key]) and (row[key] > 0 or key.startswith("z_")), key
    assert 0 < row["sd_ratio_forward"] <= 1.0  # the exact Haar average has no more spread than one rotation per draw
