"""Diagnostic and comparison plots (bayes_sbm.plots) and the ``diagnose`` / ``compare`` CLI.

Runs are the synthetic ones of ``test_diagnostics.py`` (Gaussian draws around
the THEORY.md §4 values in the run-folder layout), so no sampler is needed.
"""

from __future__ import annotations

import csv
import importlib.util
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from bayes_sbm import cli, diagnostics, plots, theory

# The synthetic-run builders live in test_diagnostics.py; load them by path so
# this works with any pytest import mode.
_spec = importlib.util.spec_from_file_location("_sbm_synthetic_runs", Path(__file__).with_name("test_diagnostics.py"))
_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synthetic)
synthetic_datatree, make_run = _synthetic.synthetic_datatree, _synthetic.make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 5000 and data[:8] == PNG_MAGIC, path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three run folders: NUTS in FMo (γ = 0.5), NUTS in PMo (γ = 2), SVI in FMo."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "fm": make_run(root / "fm"),
        "pm": make_run(root / "pm", seed=1, gamma=2.0),
        "svi": make_run(root / "svi", seed=2, chains=1, draws=300, nuts=False),
    }


def test_diagnostic_plots_nuts(tmp_path):
    dt = synthetic_datatree()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no ArviZ fallback needed for the run layout
        written = plots.diagnostic_plots(dt, tmp_path / "diag")
    assert [p.name for p in written] == ["trace.png", "rank.png", "energy.png", "ess.png", "rhat.png", "observables.png"]
    for p in written:
        assert_png(p)
    assert sorted(p.name for p in (tmp_path / "diag").iterdir()) == sorted(p.name for p in written)  # no temp files


def test_diagnostic_plots_svi_has_no_energy(tmp_path):
    dt = synthetic_datatree(chains=1, draws=200, nuts=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        written = plots.diagnostic_plots(dt, tmp_path, var_names=["lam_top", "M"], theory={})
    assert [p.name for p in written] == ["trace.png", "rank.png", "ess.png", "rhat.png", "observables.png"]
    for p in written:
        assert_png(p)


def test_compare_plots_and_fallback(tmp_path, monkeypatch):
    dts = {"a": synthetic_datatree(), "b (PM)": synthetic_datatree(seed=1, gamma=2.0), "svi": synthetic_datatree(chains=1, draws=150, nuts=False)}
    written = plots.compare_plots(dts, tmp_path / "cmp")
    assert [p.name for p in written] == ["forest.png", "density.png"]
    for p in written:
        assert_png(p)

    def broken(*args, **kwargs):
        raise ValueError("simulated ArviZ failure")

    monkeypatch.setattr(az, "plot_forest", broken)
    monkeypatch.setattr(az, "plot_dist", broken)
    with pytest.warns(RuntimeWarning, match="plain matplotlib"):
        written = plots.compare_plots(dts, tmp_path / "fallback")
    for p in written:
        assert_png(p)


def test_plots_never_leave_figures_open(tmp_path):
    import matplotlib.pyplot as plt

    plt.close("all")
    plots.compare_plots({"a": synthetic_datatree()}, tmp_path)
    assert plt.get_fignums() == []


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def test_cli_diagnose(runs, tmp_path, capsys):
    out = tmp_path / "diag"
    assert cli.main(["diagnose", str(runs["fm"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "phase FMo" in text and "theory" in text and "diff" in text
    assert "BFMI per chain" in text and "divergences" in text and "max R-hat" in text
    for name in ("trace.png", "rank.png", "energy.png", "ess.png", "rhat.png", "observables.png"):
        assert_png(out / name)
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["variable"] == "lam_top[0]"
    th = theory.observable_reference([1.6, 0.4], 0.5, 3.0).as_dict()
    assert float(rows[0]["theory"]) == th["lam_top"][0]
    assert float(rows[0]["diff"]) == pytest.approx(float(rows[0]["mean"]) - th["lam_top"][0], abs=1e-15)


def test_cli_diagnose_svi_default_out(runs, capsys):
    assert cli.main(["diagnose", str(runs["svi"])]) == 0
    text = capsys.readouterr().out
    assert "svi" in text and "R-hat = n/a" in text
    assert (runs["svi"] / "diagnostics" / "summary.csv").is_file()
    assert not (runs["svi"] / "diagnostics" / "energy.png").exists()


def test_cli_compare(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(runs["fm"]), str(runs["pm"]), str(runs["svi"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "lambda_1" in lines[0]
    assert any(line.startswith("fm ") and "FMo" in line for line in lines)
    assert any(line.startswith("pm ") and "PMo" in line for line in lines)
    assert_png(out / "forest.png")
    assert_png(out / "density.png")
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["fm", "pm", "svi"]
    assert [r["phase"] for r in rows] == ["FMo", "PMo", "FMo"]
    assert float(rows[1]["M_theory"]) == 0.0
    assert np.isfinite(float(rows[2]["lam_1_sd"]))


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["diagnose", "{missing}"], "run folder not found"),
        (["diagnose", "{no_nc}"], "no inference.nc"),
        (["diagnose", "{no_meta}"], "no meta.json"),
        (["compare", "{fm}", "{missing}"], "run folder not found"),
    ],
)
def test_cli_missing_run_is_one_line_error(runs, tmp_path, capsys, argv_tail, message):
    no_nc = tmp_path / "no_nc"
    no_nc.mkdir()
    (no_nc / "meta.json").write_text("{}")
    no_meta = tmp_path / "no_meta"
    no_meta.mkdir()
    (no_meta / "inference.nc").write_bytes((runs["fm"] / "inference.nc").read_bytes())
    paths = {"missing": tmp_path / "nope", "no_nc": no_nc, "no_meta": no_meta, "fm": runs["fm"]}
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv_tail]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert err.startswith(f"bayes-sbm {argv[0]}: error:")


def test_cli_corrupt_netcdf_is_one_line_error(tmp_path, capsys):
    run = tmp_path / "bad"
    run.mkdir()
    (run / "inference.nc").write_text("not netcdf")
    (run / "meta.json").write_text("{}")
    assert cli.main(["diagnose", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inference.nc" in err
