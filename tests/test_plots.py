"""Diagnostic and comparison plots (bayes_sbm.plots) and the ``diagnose`` / ``compare`` CLI.

Runs are the synthetic ones of ``test_diagnostics.py`` (Gaussian draws around
the THEORY.md §4 values, no sampler), given the ArviZ-conformant layout of
``bayes_sbm.runs.to_datatree`` (integer coordinates on every dim, ``rank`` and
``mode`` from 1).  The tests inspect the figures themselves
(``plots._last_figures``): labels, facets, legends, THEORY reference lines,
chain ticks, and which plots an SVI run gets.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bayes_sbm import cli, diagnostics, plots, theory

# The synthetic-run builders live in test_diagnostics.py; load them by path so
# this works with any pytest import mode.
_spec = importlib.util.spec_from_file_location("_sbm_synthetic_runs", Path(__file__).with_name("test_diagnostics.py"))
_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synthetic)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ONE_BASED = ("rank", "mode")
#: Symbols of the scalar components of diagnostics.SPECTRAL for the synthetic runs (r = 2 modes).
SYMBOLS = ["λ₁", "λ₂", "λ₃", "u₁", "u₂", "M", "e₁ᵀWe₁", "e₂ᵀWe₂", "μ", "N⁻¹ log Z"]
#: (symbol, variable, flat index) of those components.
COMPONENTS = list(zip(SYMBOLS, ["lam_top"] * 3 + ["u"] * 2 + ["M", "signal", "signal", "mu", "log_z_per_n"], [0, 1, 2, 0, 1, 0, 0, 1, 0, 0]))
NUTS_FILES = ["trace.png", "rank.png", "energy.png", "ess.png", "rhat.png", "observables.png"]
SVI_FILES = ["trace.png", "ess.png", "observables.png", "elbo.png"]


def conformant(dt):
    """``dt`` with integer coordinates on every dim (``rank``/``mode`` from 1), as runs.to_datatree writes it."""
    for name, node in list(dt.children.items()):
        ds = node.to_dataset()
        missing = {}
        for d in ds.dims:
            if d not in ds.coords:
                start = 1 if d in ONE_BASED else 0
                missing[d] = np.arange(start, start + ds.sizes[d])
        if missing:
            dt[name] = ds.assign_coords(missing)
    return dt


def synthetic_tree(**kwargs):
    return conformant(_synthetic.synthetic_datatree(**kwargs))


def make_run(folder: Path, elbo=None, **kwargs) -> Path:
    """A run folder (``inference.nc`` in the conformant layout, ``meta.json``, optional ``elbo.npy``)."""
    _synthetic.make_run(folder, **kwargs)
    synthetic_tree(**kwargs).to_netcdf(folder / "inference.nc", engine="h5netcdf")
    if elbo is not None:
        np.save(folder / "elbo.npy", elbo)
    return folder


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 5000 and data[:8] == PNG_MAGIC, path


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.axison and ax.get_visible()]


def dashed_lines_at(ax, value: float, axis: str = "x") -> list:
    """Dashed Line2D objects of ``ax`` lying at ``value`` (vertical for ``axis="x"``, horizontal for "y")."""
    found = []
    for line in ax.get_lines():
        if line.get_linestyle() != "--":
            continue
        data = np.asarray(line.get_xdata() if axis == "x" else line.get_ydata(), dtype=float)
        if data.size and np.allclose(data, value, rtol=0, atol=1e-9):
            found.append(line)
    return found


def legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def by_xlabel(fig) -> dict[str, list]:
    out: dict[str, list] = {}
    for ax in visible_axes(fig):
        out.setdefault(ax.get_xlabel(), []).append(ax)
    return out


def elbo_trace(n=600):
    steps = np.arange(n)
    return -120.0 + 25.0 * (1 - np.exp(-steps / 80.0)) + np.random.default_rng(3).normal(0.0, 0.5, n)


def run_cli(argv) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(argv)
    return rc, buf.getvalue()


# --------------------------------------------------------------------------
# one run of each kind through the CLI (the expensive part, shared)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three run folders: NUTS in FMo (γ = 0.5), NUTS in PMo (γ = 2), SVI in FMo with elbo.npy."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "fm": make_run(root / "fm"),
        "pm": make_run(root / "pm", seed=1, gamma=2.0),
        "svi": make_run(root / "svi", elbo=elbo_trace(), seed=2, chains=1, draws=300, nuts=False),
    }


@pytest.fixture(scope="module")
def nuts_diag(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("diag") / "fm"
    rc, text = run_cli(["diagnose", str(runs["fm"]), "--out", str(out)])
    assert rc == 0
    return {"out": out, "text": text, "figs": dict(plots._last_figures), "theory": theory.observable_reference([1.6, 0.4], 0.5, 3.0).as_dict()}


@pytest.fixture(scope="module")
def svi_diag(runs):
    rc, text = run_cli(["diagnose", str(runs["svi"])])  # default out RUN/diagnostics: RUN/elbo.npy is found
    assert rc == 0
    return {"out": runs["svi"] / "diagnostics", "text": text, "figs": dict(plots._last_figures)}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    dts = {
        "a": synthetic_tree(),
        "b (PM)": synthetic_tree(seed=1, gamma=2.0),
        "svi": synthetic_tree(chains=1, draws=150, nuts=False),
    }
    th = {run: diagnostics.theory_from_datatree(dt) for run, dt in dts.items()}
    out = tmp_path_factory.mktemp("cmp")
    written = plots.compare_plots(dts, out)
    return {"written": written, "figs": dict(plots._last_figures), "theory": th, "runs": list(dts)}


# --------------------------------------------------------------------------
# single-run diagnostics
# --------------------------------------------------------------------------
def test_nuts_writes_every_plot(nuts_diag):
    out = nuts_diag["out"]
    for name in NUTS_FILES:
        assert_png(out / name)
    assert sorted(nuts_diag["figs"]) == sorted(NUTS_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(NUTS_FILES + ["summary.csv"])  # no temp files


@pytest.mark.parametrize("kind", ["nuts", "svi", "compare"])
def test_every_axis_is_labelled(nuts_diag, svi_diag, compared, kind):
    figs = {"nuts": nuts_diag, "svi": svi_diag, "compare": compared}[kind]["figs"]
    for name, fig in figs.items():
        axes = visible_axes(fig)
        assert axes, name
        for ax in axes:
            assert ax.get_xlabel().strip(), f"{name}: an axis without x label ({ax.get_title()!r})"
            assert ax.get_ylabel().strip(), f"{name}: an axis without y label ({ax.get_xlabel()!r})"


def test_trace_has_one_facet_per_component(nuts_diag):
    fig = nuts_diag["figs"]["trace.png"]
    axes = visible_axes(fig)
    assert len(axes) == 2 * len(SYMBOLS)  # density and trace per component
    dist = [ax for ax in axes if ax.get_ylabel() == "density"]
    assert [ax.get_xlabel() for ax in dist] == SYMBOLS
    trace = [ax for ax in axes if ax.get_xlabel() == "draw"]
    assert [ax.get_ylabel() for ax in trace] == SYMBOLS
    # u₁ ≈ 0.87 and u₂ ≈ 0 are on axes of their own scale
    u1 = next(ax for ax in trace if ax.get_ylabel() == "u₁")
    u2 = next(ax for ax in trace if ax.get_ylabel() == "u₂")
    assert u1.get_ylim()[0] > 0.5 and u2.get_ylim()[1] < 0.5
    assert legend_texts(fig) == ["0", "1"]  # one entry per chain


def test_theory_lines_on_trace_and_observables(nuts_diag):
    th = nuts_diag["theory"]
    axes = visible_axes(nuts_diag["figs"]["trace.png"])
    dist = {ax.get_xlabel(): ax for ax in axes if ax.get_ylabel() == "density"}
    trace = {ax.get_ylabel(): ax for ax in axes if ax.get_xlabel() == "draw"}
    for symbol, name, index in COMPONENTS:
        value = float(np.ravel(th[name])[index])
        assert math.isfinite(value)
        assert dashed_lines_at(dist[symbol], value, "x"), symbol
        assert dashed_lines_at(trace[symbol], value, "y"), symbol
    obs = by_xlabel(nuts_diag["figs"]["observables.png"])
    assert sorted(obs) == sorted(label for label, _, _ in plots.OBSERVABLES)
    for label, name, index in plots.OBSERVABLES:
        value = float(np.ravel(th[name])[0 if index is None else index])
        (ax,) = obs[label]
        assert dashed_lines_at(ax, value, "x"), label


def test_rank_ess_rhat_per_component(nuts_diag):
    figs = nuts_diag["figs"]
    rank = visible_axes(figs["rank.png"])
    assert [ax.get_title() for ax in rank] == SYMBOLS
    assert legend_texts(figs["rank.png"]) == ["0", "1"]
    assert [ax.get_title() for ax in visible_axes(figs["ess.png"])] == SYMBOLS
    (rhat,) = visible_axes(figs["rhat.png"])
    assert [t.get_text() for t in rhat.get_yticklabels()] == SYMBOLS


def test_energy_has_integer_chain_ticks(nuts_diag):
    fig = nuts_diag["figs"]["energy.png"]
    (bfmi,) = by_xlabel(fig)["BFMI"]
    assert bfmi.get_ylabel() == "chain"
    np.testing.assert_array_equal(bfmi.get_yticks(), [0, 1])
    assert [t.get_text() for t in bfmi.get_yticklabels()] == ["0", "1"]


def test_cli_diagnose_prints_and_writes_summary(nuts_diag):
    text = nuts_diag["text"]
    assert "phase FMo" in text and "theory" in text and "diff" in text
    assert "BFMI per chain" in text and "divergences" in text and "max R-hat" in text
    with open(nuts_diag["out"] / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["variable"].startswith("lam_top[")
    th = nuts_diag["theory"]
    assert float(rows[0]["theory"]) == th["lam_top"][0]
    assert float(rows[0]["diff"]) == pytest.approx(float(rows[0]["mean"]) - th["lam_top"][0], abs=1e-15)


def test_svi_has_no_rank_rhat_energy_and_has_elbo(svi_diag, runs):
    out = svi_diag["out"]
    assert sorted(svi_diag["figs"]) == sorted(SVI_FILES)
    for name in SVI_FILES:
        assert_png(out / name)
    for name in ("rank.png", "rhat.png", "energy.png"):
        assert not (out / name).exists(), name
    assert "svi" in svi_diag["text"] and "R-hat = n/a" in svi_diag["text"]
    assert (out / "summary.csv").is_file()
    # the ELBO trace of RUN/elbo.npy, on labelled axes
    elbo = np.load(runs["svi"] / "elbo.npy")
    axes = visible_axes(svi_diag["figs"]["elbo.png"])
    assert axes and all(ax.get_ylabel() == "ELBO" for ax in axes)
    assert any(np.array_equal(line.get_ydata(), elbo) for line in axes[0].get_lines())
    # one pseudo-chain: a facet per component, no chain legend
    trace = visible_axes(svi_diag["figs"]["trace.png"])
    assert len(trace) == 2 * len(SYMBOLS) and legend_texts(svi_diag["figs"]["trace.png"]) == []


def test_elbo_argument_and_no_theory(tmp_path):
    dt = synthetic_tree(chains=1, draws=120, nuts=False)
    elbo = elbo_trace(200)
    written = plots.diagnostic_plots(dt, tmp_path / "d", var_names=["M"], theory={}, elbo=elbo)
    assert [p.name for p in written] == ["trace.png", "ess.png", "observables.png", "elbo.png"]
    figs = plots._last_figures
    assert len(visible_axes(figs["trace.png"])) == 2
    # no theory: no dashed lines anywhere on the trace
    assert not any(line.get_linestyle() == "--" for ax in figs["trace.png"].axes for line in ax.get_lines())
    (ax_all, _) = visible_axes(figs["elbo.png"])
    assert any(np.array_equal(line.get_ydata(), elbo) for line in ax_all.get_lines())


def test_tree_without_coordinates_is_refused(tmp_path):
    bare = _synthetic.synthetic_datatree()  # rank/mode without coordinates
    if "rank" in bare["posterior"].coords:
        bare["posterior"] = bare["posterior"].to_dataset().drop_vars(["rank", "mode"])
    with pytest.raises(ValueError, match=r"conformant layout"):
        plots.diagnostic_plots(bare, tmp_path)


# --------------------------------------------------------------------------
# comparison across runs
# --------------------------------------------------------------------------
def test_compare_writes_forest_and_density(compared):
    assert [p.name for p in compared["written"]] == ["forest.png", "density.png"]
    for p in compared["written"]:
        assert_png(p)


def test_forest_has_one_axis_per_observable(compared):
    fig = compared["figs"]["forest.png"]
    runs = compared["runs"]
    panels = by_xlabel(fig)
    assert sorted(panels) == sorted(label for label, _, _ in plots.COMPARED)
    assert all(len(axes) == 1 for axes in panels.values())
    lam, u1, m = panels["λ₁"][0], panels["u₁"][0], panels["M"][0]
    assert len({lam.get_xlim(), u1.get_xlim(), m.get_xlim()}) == 3  # independent x scales
    assert u1.get_xlim()[1] < 1.0 < lam.get_xlim()[1]
    for ax in (lam, u1, m):
        assert [t.get_text() for t in ax.get_yticklabels()] == runs
    assert legend_texts(fig) == runs
    for label, name, index in plots.COMPARED:
        ax = panels[label][0]
        for run in runs:
            value = float(np.ravel(compared["theory"][run][name])[0 if index is None else index])
            assert dashed_lines_at(ax, value, "x"), (label, run)


def test_density_has_theory_lines(compared):
    fig = compared["figs"]["density.png"]
    panels = by_xlabel(fig)
    assert sorted(panels) == sorted(label for label, _, _ in plots.COMPARED)
    for label, name, index in plots.COMPARED:
        (ax,) = panels[label]
        assert ax.get_ylabel() == "posterior density"
        for run in compared["runs"]:
            value = float(np.ravel(compared["theory"][run][name])[0 if index is None else index])
            assert dashed_lines_at(ax, value, "x"), (label, run)
    assert legend_texts(fig) == compared["runs"]


def test_plots_never_leave_figures_open(tmp_path):
    plt.close("all")
    plots.compare_plots({"a": synthetic_tree()}, tmp_path)
    assert plt.get_fignums() == []


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def test_cli_compare(runs, tmp_path):
    out = tmp_path / "cmp"
    rc, text = run_cli(["compare", str(runs["fm"]), str(runs["pm"]), str(runs["svi"]), "--out", str(out)])
    assert rc == 0
    lines = text.splitlines()
    assert any("lambda_1" in line for line in lines)
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
