"""Smoke tests of the posterior studies (``analysis/posterior_vs_theory``, ``analysis/tempered_posteriors``).

Each study's ``main`` runs in this process with ``--quick`` into a temporary
directory (NUTS fits at N ≤ 16 with 100 + 100 draws; about a minute each, so
these are marked slow); the tests check that every promised file is there,
that the CSVs have the documented columns and finite posterior means, that
each run folder can be read back, and that ``--resume`` skips the rows already
written. The ``--help`` checks are fast and stay in the default suite.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import assert_finite as _finite
from conftest import run_script_main as _run

POSTERIOR = "analysis/posterior_vs_theory/run.py"
TEMPERED = "analysis/tempered_posteriors/run.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: diff is mean − theory_data_c of the same row (floats written with repr): equal up to rounding.
DIFF_ATOL = 1e-12

POSTERIOR_COLUMNS = (
    "spec", "phase", "N", "observable", "mean", "mcse", "theory_data_c", "diff", "theory_limit", "diff_limit",
    "r_hat_max", "min_ess", "divergences", "sampling_s",
)
TEMPERED_COLUMNS = (
    "eta", "N", "quantity", "value", "se", "theory_data_c", "diff", "theory_limit", "diff_limit",
    "phase", "phase_limit", "r_hat", "min_ess", "divergences", "sampling_s",
)


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    assert path.read_bytes()[:8] == PNG_MAGIC, path


def _no_temporaries(out: Path) -> None:
    # atomic writes leave no '.name.xxxx' files behind
    assert not [p for p in out.rglob(".*") if p.is_file()]


@pytest.mark.parametrize("script", [POSTERIOR, TEMPERED])
def test_study_help(script):
    stdout = _run(script, "--help")
    for flag in ("--out", "--quick", "--sizes", "--resume", "--num-warmup", "--num-samples", "--models"):
        assert flag in stdout


@pytest.fixture(scope="module")
def posterior_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("posterior_vs_theory")
    _run(POSTERIOR, "--quick", "--out", str(out))
    return out


@pytest.fixture(scope="module")
def tempered_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("tempered_posteriors")
    _run(TEMPERED, "--quick", "--out", str(out))
    return out


@pytest.mark.slow
def test_posterior_vs_theory_quick(posterior_out):
    out = posterior_out
    cols, rows = _read(out / "posterior_vs_theory.csv")
    assert list(cols[: len(POSTERIOR_COLUMNS)]) == list(POSTERIOR_COLUMNS)
    # quick: specs fmo, pmo at N = 10, 16; five observables each
    assert {(r["spec"], int(r["N"])) for r in rows} == {("fmo", 10), ("fmo", 16), ("pmo", 10), ("pmo", 16)}
    assert {r["observable"] for r in rows} == {"lam_1", "u_1", "M", "signal_1", "log_z_per_n"}
    assert len(rows) == 20
    _finite(rows, ["mean", "mcse", "theory_data_c", "diff", "theory_limit", "diff_limit", "r_hat_max", "min_ess", "sampling_s"])
    assert {r["phase"] for r in rows if r["spec"] == "fmo"} == {"FMo"}
    assert {r["phase"] for r in rows if r["spec"] == "pmo"} == {"PMo"}
    for r in rows:
        assert int(r["divergences"]) >= 0
        assert float(r["mcse"]) > 0
        assert abs(float(r["diff"]) - (float(r["mean"]) - float(r["theory_data_c"]))) < DIFF_ATOL
    for name in ("diff_vs_n.png", "means_vs_n.png"):
        _png(out / name)
    table = (out / "table.md").read_text()
    assert table.count("\n| fmo |") + table.count("\n| pmo |") == 20
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["settings"]["quick"] is True and "numpy" in meta["versions"]
    # run folders readable by load_run / `bayes-sbm diagnose`, with the spec actually fitted
    from bayes_sbm.runs import load_run
    from bayes_sbm.specs import load_spec

    for spec in ("fmo", "pmo"):
        for N in (10, 16):
            run = out / "runs" / f"{spec}_N{N}"
            dt, m = load_run(run)
            assert m["spec"]["model"]["N"] == N and "posterior" in dt.children
            assert load_spec(run / "spec.toml").model.N == N
    _no_temporaries(out)


@pytest.mark.slow
def test_posterior_vs_theory_resume_skips_done_rows(posterior_out):
    before = (posterior_out / "posterior_vs_theory.csv").read_text()
    stdout = _run(POSTERIOR, "--quick", "--resume", "--out", str(posterior_out))
    assert stdout.count("[skip]") == 4 and "[fit]" not in stdout
    assert (posterior_out / "posterior_vs_theory.csv").read_text() == before


@pytest.mark.slow
def test_tempered_posteriors_quick(tempered_out):
    out = tempered_out
    cols, rows = _read(out / "tempered.csv")
    assert set(TEMPERED_COLUMNS) <= set(cols)
    assert {float(r["eta"]) for r in rows} == {1.0, 3.0}
    assert {int(r["N"]) for r in rows} == {10}
    quantities = {"lam_1", "u_1", "M", "fwd_typ", "rev_typ", "fwd_pp", "rev_pp"}
    assert {r["quantity"] for r in rows} == quantities and len(rows) == 2 * len(quantities)
    _finite(rows, ["value", "se", "theory_limit", "diff_limit", "sampling_s"])
    obs = [r for r in rows if r["quantity"] in ("lam_1", "u_1", "M")]
    _finite(obs, ["theory_data_c", "diff", "r_hat", "min_ess"])
    # at γ = 0.5 both η = 1 and η = 3 are FMo (THEORY.md §4, c = (1.6, 0.4))
    assert {r["phase_limit"] for r in rows} == {"FMo"}
    for r in rows:
        if r["quantity"] in ("fwd_typ", "rev_typ"):
            assert float(r["value"]) > 0
    _, curves = _read(out / "theory_curves.csv")
    assert len(curves) >= 400
    assert {"SG", "FMe", "FMo"} <= {c["phase"] for c in curves}
    _finite(curves, ["eta", "lam_1", "u_1", "M", "fwd_typ", "rev_typ", "fwd_pp"])
    for name in ("observables_vs_eta.png", "kls_vs_eta.png", "compare/forest.png", "compare/density.png"):
        _png(out / name)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["settings"]["quick"] is True and meta["phase_boundaries"]
    for eta in ("1", "3"):
        run = out / "runs" / f"tempered_eta{eta}_N10"
        assert (run / "inference.nc").is_file() and (run / "predict.json").is_file()
    _no_temporaries(out)
