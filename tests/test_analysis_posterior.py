"""Smoke tests of the posterior studies (``analysis/posterior_vs_theory``, ``analysis/tempered_posteriors``).

Each study's ``main`` runs in this process with ``--quick`` into a temporary
directory (posterior_vs_theory: a sweep of 4 band fits at N = 60, 80 with
60 + 60 draws on one in-process Dask worker; tempered_posteriors: NUTS fits at
N ≤ 16; about a minute each, so these are marked slow); the tests check that
every promised file is there, that the CSVs have the documented columns and
finite posterior means, that each run folder can be read back, and that a
rerun skips what is finished. The ``--help`` checks are fast and stay in the
default suite.
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
    "spec", "phase", "N", "seed", "observable", "mean", "mcse", "theory_data_c", "diff", "theory_limit", "diff_limit",
    "r_hat", "min_ess", "divergences", "fit_s",
)
POSTERIOR_OBSERVABLES = {"lam_1", "u_1", "M", "signal_1", "log_z_per_n", "Q_1", "M_4", "M_8", "u_4", "u_8"}
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


@pytest.mark.parametrize("script, flags", [
    (POSTERIOR, ("--out", "--quick", "--sizes", "--specs", "--seeds", "--scheduler", "--workers", "--analyse-only")),
    (TEMPERED, ("--out", "--quick", "--sizes", "--etas", "--runs", "--scheduler", "--workers", "--analyse-only", "--kl-points")),
])
def test_study_help(script, flags):
    stdout = _run(script, "--help")
    for flag in flags:
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
    # quick: specs fmo, fme at N = 60, 80 (band); ten observables each
    assert {(r["spec"], int(r["N"])) for r in rows} == {("fmo", 60), ("fmo", 80), ("fme", 60), ("fme", 80)}
    assert {r["observable"] for r in rows} == POSTERIOR_OBSERVABLES and len(rows) == 40
    _finite(rows, ["mean", "mcse", "theory_data_c", "diff", "theory_limit", "diff_limit", "min_ess", "fit_s"])
    assert {r["phase"] for r in rows if r["spec"] == "fmo"} == {"FMo"}
    assert {r["phase"] for r in rows if r["spec"] == "fme"} == {"FMe"}
    for r in rows:
        assert int(r["divergences"]) >= 0 and float(r["mcse"]) > 0
        assert abs(float(r["diff"]) - (float(r["mean"]) - float(r["theory_data_c"]))) < DIFF_ATOL
    for name in ("diff_vs_n.png", "means_vs_n.png", "edge_condensate.png"):
        _png(out / name)
    _, fss = _read(out / "finite_size.csv")
    assert fss and all(int(f["num_sizes"]) == 2 and f["a"] == "nan" for f in fss)  # two sizes: no law is fitted
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["settings"]["quick"] is True and "numpy" in meta["versions"] and not meta["failed"]
    # run folders of the sweep, readable by load_run / `bayes-sbm diagnose`, with the spec actually fitted
    from bayes_sbm.runs import load_run

    for spec in ("fmo", "fme"):
        for N in (60, 80):
            dt, m = load_run(out / "runs" / f"spec={spec}__model.N={N}__data.seed=0" / "run")
            assert m["spec"]["model"]["N"] == N and m["spec"]["model"]["parametrization"] == "band" and "posterior" in dt.children
    _no_temporaries(out)


@pytest.mark.slow
def test_posterior_vs_theory_rerun_skips_finished_points(posterior_out):
    before = (posterior_out / "posterior_vs_theory.csv").read_text()
    stdout = _run(POSTERIOR, "--quick", "--out", str(posterior_out))
    assert "[1/4]" not in stdout  # no point was run again
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
    for r in rows:  # the reliability flag of the Monte Carlo predictive KLs: both weight ESS at least MIN_WEIGHT_ESS
        if r["quantity"] in ("fwd_pp", "rev_pp"):
            assert r["kl_reliable"] in ("True", "False")
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
    for eta in ("1.0", "3.0"):  # the sweep's point folders, and the KL report of each
        name = f"model.N=10__model.eta={eta}__model.gamma=0.5"
        assert (out / "runs" / name / "run" / "inference.nc").is_file() and (out / "kls" / f"{name}.json").is_file()
    _no_temporaries(out)
