"""Smoke tests of the theory studies (``analysis/phase_diagrams``, ``analysis/teacher_student_curves``).

Each study's ``main`` runs in this process with ``--quick`` into a temporary
directory (no subprocess, no wall-clock timeout); the test checks
that every promised file is there and that the CSVs hold finite numbers
where the theory defines them.
"""

from __future__ import annotations

import json

import pytest
from conftest import assert_finite as _finite
from conftest import csv_rows as _read
from conftest import run_script_main as _run

#: The one-sided first derivatives of (1/N) log Y agree across every boundary (THEORY §5 is
#: continuous and, as measured, C¹); the finite-difference noise is ~1e-8 relative.
FIRST_DERIVATIVE_REL_JUMP = 1e-5


@pytest.fixture(scope="module")
def phase_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase_diagrams")
    _run("analysis/phase_diagrams/run.py", "--quick", "--out", str(out))
    return out


@pytest.fixture(scope="module")
def ts_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher_student")
    _run("analysis/teacher_student_curves/run.py", "--quick", "--out", str(out))
    return out


FILES = [
    pytest.param("phase", "phase_diagram_K1.png", id="pd-K1.png"),
    pytest.param("phase", "phase_diagram_K2.png", id="pd-K2.png"),
    pytest.param("phase", "evidence_contours.png", id="pd-evidence.png"),
    pytest.param("phase", "phase_map_K1.csv", id="pd-K1.csv"),
    pytest.param("phase", "phase_map_K2.csv", id="pd-K2.csv"),
    pytest.param("phase", "boundary_derivatives.csv", id="pd-deriv.csv"),
    pytest.param("phase", "metadata.json", id="pd-meta"),
    pytest.param("ts", "double_descent.png", id="ts-dd.png"),
    pytest.param("ts", "temperature_tuning.png", id="ts-beta.png"),
    pytest.param("ts", "kl_vs_gamma.csv", id="ts-gamma.csv"),
    pytest.param("ts", "kl_vs_beta.csv", id="ts-beta.csv"),
    pytest.param("ts", "temperature_windows.csv", id="ts-windows.csv"),
    pytest.param("ts", "metadata.json", id="ts-meta"),
]


@pytest.mark.parametrize(("study", "name"), FILES)
def test_study_files_exist(study, name, request):
    out = request.getfixturevalue("phase_out" if study == "phase" else "ts_out")
    path = out / name
    assert path.is_file() and path.stat().st_size > 0
    if name.endswith(".png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if name.endswith(".json"):
        meta = json.loads(path.read_text())
        assert meta["quick"] is True and "numpy" in meta["versions"] and meta["parameters"]
    # atomic writes leave no temporary files behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_phase_maps_are_finite_and_cover_all_k1_phases(phase_out):
    for case in ("K1", "K2"):
        rows = _read(phase_out / f"phase_map_{case}.csv")
        assert rows
        _finite(rows, ["gamma", "eta", "mu", "M", "log_evidence"])
    phases = {r["phase"] for r in _read(phase_out / "phase_map_K1.csv")}
    assert phases == {"PMo", "PMe", "FMo", "FMe", "SG"}


def test_boundary_derivatives_finite_and_continuous(phase_out):
    rows = _read(phase_out / "boundary_derivatives.csv")
    assert len(rows) >= 10
    cols = [
        "gamma_b", "eta_b", "logY_b", "logY_jump_pm1e-7",
        "dlogY_dgamma_below", "dlogY_dgamma_above", "dlogY_deta_below", "dlogY_deta_above",
        "d2logY_path_below", "d2logY_path_above",
    ]
    _finite(rows, cols)
    assert {r["case"] for r in rows} == {"K1", "K2"}
    for r in rows:
        assert r["region_below"] != r["region_above"]
        assert float(r["max_rel_jump_first"]) < FIRST_DERIVATIVE_REL_JUMP


def test_teacher_student_csvs(ts_out):
    rows = _read(ts_out / "kl_vs_gamma.csv")
    etas = {float(r["eta"]) for r in rows}
    assert {0.5, 1.0, 2.0, 5.0} <= etas
    _finite(rows, ["gamma", "fwd_typ", "rev_typ", "fwd_pp", "rev_pp"])
    beta_rows = _read(ts_out / "kl_vs_beta.csv")
    _finite(beta_rows, ["beta", "forward_kl", "c_eff", "mu_tilde", "g_tilde"])
    assert {r["sampling_phase"] for r in beta_rows} == {"sPM", "sFM", "sSG"}
    windows = _read(ts_out / "temperature_windows.csv")
    assert [float(w["gamma"]) for w in windows] == [1.7, 2.0, 3.0]
    for w in windows:
        _finite([w], ["beta_c", "beta_edge", "beta_min", "kl_min", "kl_beta1"])
        assert float(w["beta_c"]) < float(w["beta_min"]) < float(w["beta_edge"])
        assert float(w["kl_min"]) < float(w["kl_beta1"])
