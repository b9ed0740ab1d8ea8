"""Tests of ``analysis/_common.py``: the glue between the study scripts and the library.

The central one pins the single key derivation (``bayes_sbm.settings.derive_keys``):
a study's in-memory NUTS fit and ``bayes-sbm fit`` of the same spec give the
same draws, bit for bit.  Tiny settings (N = 6, one chain of 50 + 50 draws):
a few seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from analysis import _common  # noqa: E402

#: The tiny spec: ``models/fmo.toml`` at N = 6, one chain of 50 + 50 draws, non-default seeds.
TINY = {
    "name": "tiny", "description": "key-derivation check: study path vs bayes-sbm fit", "model.N": 6, "data.seed": 4,
    "inference.num_warmup": 50, "inference.num_samples": 50, "inference.num_chains": 1, "inference.seed": 7,
}


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    from bayes_sbm.specs import load_spec

    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(load_spec(ROOT / "models" / "fmo.toml").with_overrides(TINY).to_toml())
    return path


@pytest.fixture(scope="module")
def cli_run(spec_path, tmp_path_factory) -> Path:
    """The run folder of ``bayes-sbm fit SPEC --out RUN --quiet``."""
    from bayes_sbm import cli

    run = tmp_path_factory.mktemp("cli") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["fit", str(spec_path), "--out", str(run), "--quiet"]) == 0
    return run


def test_study_fit_and_cli_fit_give_identical_draws(spec_path, cli_run):
    from bayes_sbm.runs import load_run
    from bayes_sbm.specs import load_spec

    spec = load_spec(spec_path)
    fit = _common.teacher_student_fit(spec, spec.model.N, spec.model.gamma, spec.model.eta, {})
    assert fit.spec.to_dict() == spec.to_dict()
    dt, meta = load_run(cli_run)
    group = next(g for g in ("unconstrained_posterior", "posterior") if g in dt.children and "z" in dt[g].data_vars)
    z = np.asarray(dt[group]["z"].values)  # the latent draws (runs.to_datatree keeps them apart from the observables)
    assert z.shape == fit.latent.shape == (1, 50, spec.model.N * (spec.model.N + 1) // 2)
    assert np.array_equal(z, np.asarray(fit.latent))  # bitwise: same data, same key, same settings
    assert np.array_equal(np.asarray(dt["observed_data"]["x"].values), fit.problem.data)
    assert meta["divergences"] == _common.nuts_facts(fit.result, fit.latent)["divergences"]


@pytest.mark.slow
def test_fit_or_reuse(spec_path, cli_run, tmp_path):
    from bayes_sbm.specs import load_spec

    spec = load_spec(spec_path)
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(cli_run, run)
    dt, meta, reused = _common.fit_or_reuse(spec, run, resume=True)  # the same spec: the run is reused
    assert reused and meta["spec"] == json.loads(json.dumps(spec.to_dict()))
    other = spec.with_overrides({"inference.seed": 8, "inference.num_warmup": 20, "inference.num_samples": 20})
    dt, meta, reused = _common.fit_or_reuse(other, run, resume=True)  # another spec: refitted in place
    assert not reused and meta["spec"]["inference"]["seed"] == 8 and dt["posterior"].sizes["draw"] == 20
    assert load_spec(run / "spec.toml").to_dict() == other.to_dict()  # the spec actually fitted
    assert sorted(p.name for p in run.parent.iterdir()) == ["tiny"]  # no staging folder or lock left


def test_pin_threads(monkeypatch):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES",
                "JAX_PLATFORMS", "MPLBACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = _common.pin_threads(host_devices=2)  # a study: defaults, values already set kept
    assert env == {"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "JAX_NUM_CPU_DEVICES": "2"}
    assert os.environ["MPLBACKEND"] == "Agg" and "XLA_FLAGS" not in os.environ

    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1 --xla_cpu_multi_thread_eigen=true")
    env = _common.pin_threads(1, jax_platforms="cpu")  # a benchmark: exactly one thread everywhere
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1" and env["JAX_PLATFORMS"] == "cpu"
    assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    assert os.environ["XLA_FLAGS"] == env["XLA_FLAGS"]


def test_csv_round_trip(tmp_path):
    path = tmp_path / "rows.csv"
    rows = [{"name": "a", "N": 10, "x": 0.1, "y": np.float64(1 / 3), "z": None}, {"name": "b", "N": 12, "x": float("nan")}]
    _common.write_csv(path, ("name", "N", "x", "y", "z"), rows, none="nan")
    back = _common.read_csv(path, strings=("name",), ints=("N",))
    assert back[0] == {"name": "a", "N": 10, "x": 0.1, "y": 1 / 3, "z": pytest.approx(float("nan"), nan_ok=True)}
    assert back[1]["name"] == "b" and np.isnan(back[1]["x"]) and np.isnan(back[1]["y"])
    _common.write_csv(path, ("a", "b"), [[0.1, "s"]], float_format=lambda v: f"{v:.17g}")  # list rows
    assert path.read_text() == "a,b\n0.10000000000000001,s\n"
    kept, done = _common.complete_groups([{"k": 1}, {"k": 1}, {"k": 2}], lambda r: r["k"], 2)
    assert kept == [{"k": 1}, {"k": 1}] and done == {1}


def test_finish_study_writes_table_and_metadata(tmp_path, capsys):
    out = tmp_path / "study"
    (out / "sub").mkdir(parents=True)
    meta = _common.finish_study(out, "demo", 0.0, files=["rows.csv"], table="| a |\n", figures=[out / "sub" / "f.png"],
                                seed=3, checks="nothing", quick=True, settings={"x": 1}, extra=[1, 2])
    assert (out / "table.md").read_text() == "| a |\n"
    written = json.loads((out / "metadata.json").read_text())
    assert written == json.loads(json.dumps(meta))
    assert list(written)[:8] == ["seed", "versions", "argv", "study", "checks", "quick", "settings", "extra"]
    assert written["outputs"] == ["rows.csv", "table.md", "sub/f.png"] and written["seed"] == 3
    assert "numpy" in written["versions"] and written["wall_s"] > 0
    assert "wrote rows.csv, table.md, sub/f.png and metadata.json" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_theory_pair_matches_the_library():
    from bayes_sbm import theory

    c = (1.7, 0.35)
    at_c, at_limit = _common.theory_pair(c, 0.5, 3.0)
    assert at_c.phase == theory.posterior_saddle(c, 0.5, 3.0).phase
    assert at_c.log_evidence_per_n == theory.log_evidence(c, 0.5, 3.0)
    assert at_limit.log_evidence_per_n == theory.log_evidence(_common.C_LIMIT, 0.5, 3.0)
    assert _common.component(at_c.lam_top, 0) == at_c.lam_top[0] and np.isnan(_common.component(None, 0))


def test_ladder_settings_options_quick_and_defaults():
    from argparse import Namespace

    from bayes_sbm.settings import LadderSettings

    unset = dict.fromkeys(_common.LADDER_OPTIONS)
    assert _common.ladder_settings(Namespace(quick=False, **unset)) == LadderSettings(progress_bar=False)
    quick = _common.ladder_settings(Namespace(quick=True, **unset | {"rungs": 6, "samples": 30}))
    assert (quick.num_rungs, quick.max_rungs, quick.num_samples) == (6, 6, 30)  # max_rungs raised to num_rungs
    assert quick.prior_draws == _common.QUICK_LADDER["prior_draws"] and quick.progress_bar is False


# ---------------------------------------------------------------------------
# finite-size scaling (the large-N studies)
# ---------------------------------------------------------------------------
#: A noiseless law is recovered to rounding of a 2×2 least-squares solve.
EXACT_FIT_ATOL = 1e-10
#: Noisy data: the fitted limit lies within this many of its own SEs of the truth (a 4-sigma bound: fails with p ~ 6e-5).
FIT_Z = 4.0
SIZES = np.array([100.0, 200.0, 400.0, 1000.0, 2000.0])


@pytest.mark.parametrize("law, p", list(_common.FINITE_SIZE_LAWS.items()))
def test_fit_recovers_a_noiseless_law(law, p):
    d = 0.3 - 2.0 * SIZES ** (-p)
    f = _common.fit_finite_size_law(SIZES, d, np.full(SIZES.size, 1e-3), p)
    assert f["a"] == pytest.approx(0.3, abs=EXACT_FIT_ATOL) and f["b"] == pytest.approx(-2.0, abs=EXACT_FIT_ATOL)
    assert f["chi2_dof"] < EXACT_FIT_ATOL and f["num_sizes"] == 5
    best = [r for r in _common.extrapolations(SIZES, d, np.full(SIZES.size, 1e-3)) if r["best"]]
    assert [r["law"] for r in best] == [law]  # the generating law fits best


def test_fit_matches_weighted_polyfit_and_its_se_covers_the_truth():
    rng = np.random.default_rng(3)
    se = np.array([0.004, 0.003, 0.002, 0.002, 0.001])
    hits = []
    for _ in range(200):
        d = 0.1 + 1.5 / SIZES + rng.normal(0.0, se)
        f = _common.fit_finite_size_law(SIZES, d, se, 1.0)
        # an independent weighted least squares: numpy.polyfit on x = 1/N with weights 1/se
        slope, intercept = np.polyfit(1.0 / SIZES, d, 1, w=1.0 / se)
        assert f["a"] == pytest.approx(intercept, abs=EXACT_FIT_ATOL) and f["b"] == pytest.approx(slope, abs=EXACT_FIT_ATOL)
        hits.append(abs(f["a"] - 0.1) < FIT_Z * f["se_a"])
    assert all(hits)


def test_fit_inflates_the_se_by_the_excess_scatter_and_needs_three_sizes():
    d = np.array([0.0, 1.0, 0.0, 1.0, 0.0])  # scatter 100x the stated SEs
    tight = _common.fit_finite_size_law(SIZES, d, np.full(5, 0.01), 1.0)
    assert tight["chi2_dof"] > 100
    cov = np.linalg.inv(np.stack([np.ones(5), 1.0 / SIZES], 1).T @ np.stack([np.ones(5), 1.0 / SIZES], 1) / 0.01**2)
    assert tight["se_a"] == pytest.approx(np.sqrt(cov[0, 0] * tight["chi2_dof"]), rel=1e-9)
    two = _common.fit_finite_size_law(SIZES[:2], d[:2], np.full(2, 0.01), 1.0)
    assert np.isnan(two["a"]) and two["num_sizes"] == 2


def test_size_points_average_seeds_and_take_the_larger_se():
    rows = [{"N": 100, "diff": 0.1, "mcse": 0.01}, {"N": 100, "diff": 0.3, "mcse": 0.01}, {"N": 200, "diff": 0.05, "mcse": 0.02},
            {"N": 200, "diff": float("nan"), "mcse": 0.02}]
    N, d, se = _common.size_points(rows, lambda r: True)
    assert list(N) == [100, 200] and d == pytest.approx([0.2, 0.05])
    assert se[0] == pytest.approx(np.std([0.1, 0.3], ddof=1) / np.sqrt(2))  # seed spread 0.1 > MCSE 0.007
    assert se[1] == pytest.approx(0.02)  # one finite row: its own MCSE


def test_sweep_from_file_narrows_the_grid(tmp_path):
    path = ROOT / "models" / "sweeps" / "posterior_vs_theory.toml"
    sw = _common.sweep_from_file(path, tmp_path / "runs", specs=["fme", "sg"], grid={"model.N": [100, 200], "data.seed": None},
                                 fixed={"inference.num_samples": 10})
    assert sw.grid["spec"] == ("fme", "sg") and sw.grid["model.N"] == (100, 200) and sw.grid["data.seed"] == (0,)
    assert all(p.spec.inference.num_samples == 10 and p.spec.model.parametrization == "band" for p in sw.points)
    assert sw.points[0].folder == (tmp_path / "runs" / "spec=fme__model.N=100__data.seed=0").resolve()


#: Laws with a log factor, as the evidence study adds one (log N/N: the Gaussian fluctuation of a condensed mode).
LOG_LAWS = _common.FINITE_SIZE_LAWS | {"log N/N": (1.0, "log")}


def test_a_log_law_is_fitted_exactly_and_ranked_just_below_its_power():
    d = -0.1 + 3.0 * np.log(SIZES) / SIZES
    f = _common.fit_finite_size_law(SIZES, d, np.full(SIZES.size, 1e-3), (1.0, "log"))
    assert f["a"] == pytest.approx(-0.1, abs=EXACT_FIT_ATOL) and f["b"] == pytest.approx(3.0, abs=EXACT_FIT_ATOL)
    fits = {r["law"]: r for r in _common.extrapolations(SIZES, d, np.full(SIZES.size, 1e-3), LOG_LAWS)}
    assert fits["log N/N"]["best"] and fits["log N/N"]["p"] == 1.0 and not fits["1/N"]["accepted"]
    # when both fit (a law with no correction at all), 1/N — the faster decay — is preferred
    flat = {r["law"]: r for r in _common.extrapolations(SIZES, np.full(SIZES.size, 0.2), np.full(SIZES.size, 1e-3), LOG_LAWS)}
    assert flat["1/N"]["best"] and flat["log N/N"]["accepted"]


def test_accepted_means_chi2_below_its_one_percent_point():
    from scipy.stats import chi2

    rng = np.random.default_rng(11)
    se = np.full(SIZES.size, 1e-3)
    for _ in range(20):
        d = 0.1 + 0.4 * SIZES ** -0.5 + rng.normal(0.0, 3e-3, SIZES.size)  # noise 3x the stated SE: some laws rejected
        for f in _common.extrapolations(SIZES, d, se):
            assert f["accepted"] == (f["chi2_dof"] * (SIZES.size - 2) <= chi2.ppf(_common.LAW_ACCEPT_QUANTILE, SIZES.size - 2))


def test_the_fastest_acceptable_law_is_chosen():
    rng = np.random.default_rng(5)
    se = np.full(SIZES.size, 1e-3)
    d = 0.2 + 0.5 / SIZES + rng.normal(0.0, 1e-3, SIZES.size)  # a 1/N law: the slower ones fit too, 1/N is chosen
    fits = {f["law"]: f for f in _common.extrapolations(SIZES, d, se)}
    assert fits["1/N"]["best"] and sum(f["best"] for f in fits.values()) == 1
    # no acceptable law: the smallest chi2 (a jagged sequence)
    jagged = np.array([0.0, 0.1, 0.0, 0.1, 0.0])
    fits = {f["law"]: f for f in _common.extrapolations(SIZES, jagged, se)}
    best = [law for law, f in fits.items() if f["best"]]
    assert best == [min(fits, key=lambda law: fits[law]["chi2_dof"])]
