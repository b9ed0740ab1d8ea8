"""Posterior summaries against THEORY.md §4 and sampler diagnostics (bayes_sbm.diagnostics).

The runs here are synthetic: Gaussian draws around the large-N values for
c = (1.6, 0.4), γ = 0.5, η = 3 (phase FMo) in the DataTree layout that
``bayes_sbm.runs.to_datatree`` writes, so the tests need no sampler.
:func:`make_run` and :func:`synthetic_datatree` are also used by
``test_plots.py``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from bayes_sbm import diagnostics, theory

C = (1.6, 0.4)
GAMMA, ETA, BETA = 0.5, 3.0, 1.0
N, K = 20, 2
CHAINS, DRAWS = 2, 100
#: Posterior sd of each synthetic observable.
SD = {"lam_top": 0.05, "u": 0.02, "M": 0.02, "signal": 0.05, "mu": 0.05, "log_z_per_n": 0.01}


def _reference(c, gamma, eta):
    """The run theory reference as stored in meta.json (:func:`bayes_sbm.theory.observable_reference`)."""
    return theory.observable_reference(c, gamma, eta).as_dict()


def synthetic_datatree(
    seed: int = 0,
    c=C,
    gamma: float = GAMMA,
    eta: float = ETA,
    chains: int = CHAINS,
    draws: int = DRAWS,
    nuts: bool = True,
    shift: dict | None = None,
):
    """A run DataTree with Gaussian draws centred on the THEORY values.

    ``shift`` maps a posterior variable to an offset added to chain 1 only
    (to make chains disagree).
    """
    rng = np.random.default_rng(seed)
    th = _reference(c, gamma, eta)
    post = {}
    for name, sd in SD.items():
        centre = np.asarray(th[name], dtype=float)
        post[name] = centre + sd * rng.standard_normal((chains, draws) + centre.shape)
    for name, offset in (shift or {}).items():
        post[name][1] += offset
    groups = {
        "posterior": post,
        "log_likelihood": {"x": -1.0 + 0.1 * rng.standard_normal((chains, draws, K))},
        "observed_data": {"x": rng.standard_normal((K, N))},
        "posterior_predictive": {"x": rng.standard_normal((chains, draws, K, N))},
        "constant_data": {"c": np.sort(np.asarray(c, dtype=float))[::-1], "gamma": np.float64(gamma), "eta": np.float64(eta), "beta": np.float64(BETA)},
    }
    if nuts:
        groups["sample_stats"] = {
            "diverging": rng.random((chains, draws)) < 0.03,
            "energy": 50.0 + rng.standard_normal((chains, draws)),
            "lp": -50.0 + rng.standard_normal((chains, draws)),
            "n_steps": np.full((chains, draws), 7),
            "acceptance_rate": rng.uniform(0.7, 1.0, (chains, draws)),
            "step_size": np.full((chains, draws), 0.3),
            "tree_depth": np.full((chains, draws), 3),
        }
    dt = az.from_dict(
        groups,
        dims={"lam_top": ["rank"], "u": ["mode"], "signal": ["mode"], "c": ["mode"]},
    )
    # like runs.to_datatree: no coordinates on the rank/mode dims (ArviZ's
    # plot_rank needs them; bayes_sbm.plots adds them)
    for group in ("posterior", "constant_data"):
        ds = dt[group].to_dataset()
        dt[group] = ds.drop_vars([d for d in ("rank", "mode") if d in ds.coords])
    # observed_data/log_likelihood/predictive dims of the run layout
    for group, dims in (("log_likelihood", ["point"]), ("observed_data", ["point", "dim"]), ("posterior_predictive", ["point", "dim"])):
        ds = dt[group].to_dataset()
        old = [d for d in ds["x"].dims if d not in ("chain", "draw")]
        dt[group] = ds.rename({o: n for o, n in zip(old, dims)})
    dt.attrs.update({"N": N, "K": K, "method": "nuts" if nuts else "svi"})
    return dt


def make_run(folder: Path, **kwargs) -> Path:
    """Write a synthetic run folder (inference.nc + meta.json); returns it."""
    nuts = kwargs.get("nuts", True)
    dt = synthetic_datatree(**kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    dt.to_netcdf(folder / "inference.nc", engine="h5netcdf")
    c = kwargs.get("c", C)
    meta = {
        "spec": {
            "model": {"N": N, "gamma": kwargs.get("gamma", GAMMA), "eta": kwargs.get("eta", ETA), "beta": BETA},
            "data": {"source": "teacher", "K": K},
            "inference": {"method": "nuts" if nuts else "svi"},
        },
        "seed": kwargs.get("seed", 0),
        "versions": {},
        "c": sorted(c, reverse=True),
        "timing": {"fit_s": 1.5, "wall_s": 2.0},
    }
    if nuts:
        meta["latent_summary"] = {"dim": 210, "min_ess_bulk": 150.0, "min_ess_tail": 120.0, "max_r_hat": 1.004}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def dt():
    return synthetic_datatree()


# --------------------------------------------------------------------------
# theory_reference
# --------------------------------------------------------------------------
def test_theory_reference_pm_closed_forms():
    # PMo: kappa = 6, a = (4.8, 1.2): mode 1 is an outlier (a_1 > sqrt 6), mode 2 is not.
    c, gamma, eta = np.array([1.6, 0.4]), 2.0, 3.0
    kappa = gamma * eta
    a = eta * c
    edge = 2.0 / math.sqrt(kappa)
    th = _reference(c, gamma, eta)
    assert th["phase"] == "PMo"
    np.testing.assert_allclose(th["lam_top"], [1 / a[0] + a[0] / kappa, edge, edge], rtol=1e-13)
    np.testing.assert_allclose(th["u"], [1 - kappa / a[0] ** 2, 0.0], rtol=1e-13, atol=1e-15)
    assert th["M"] == 0.0
    assert th["mu"] == pytest.approx(1 + 1 / kappa, rel=1e-13)
    assert th["log_z_per_n"] == pytest.approx(1 / (4 * kappa), rel=1e-12)
    np.testing.assert_allclose(th["signal"], c / gamma, rtol=1e-13)
    # input order does not matter (results follow descending c)
    th2 = _reference(c[::-1], gamma, eta)
    np.testing.assert_allclose(th2["lam_top"], th["lam_top"], rtol=0)


def test_theory_reference_fmo_by_hand():
    # FMo with d = 1 (THEORY.md §4 step 2): t = b − a_1, g = (t + sqrt(t² + 4bκ))/(2b).
    c, gamma, eta = np.array([1.6, 0.4]), GAMMA, ETA
    kappa, a, b = gamma * eta, eta * c, eta * c.sum()
    t = b - a[0]
    g = (t + math.sqrt(t * t + 4 * b * kappa)) / (2 * b)
    mu = 1 / g + g / kappa
    th = _reference(c, gamma, eta)
    assert th["phase"] == "FMo" and th["d"] == 1
    assert th["M"] == pytest.approx(1 - g, rel=1e-13)
    assert th["mu"] == pytest.approx(mu, rel=1e-13)
    np.testing.assert_allclose(th["lam_top"], [mu, 2 / math.sqrt(kappa), 2 / math.sqrt(kappa)], rtol=1e-13)
    np.testing.assert_allclose(th["u"], [1 - g / a[0], 0.0], rtol=1e-13, atol=1e-15)
    # signal_1 = (ξ_1 − 1)/a_1 with ξ_1 = a_1 μ; mode 2 is not an outlier: c_2/γ
    np.testing.assert_allclose(th["signal"], [mu - 1 / a[0], c[1] / gamma], rtol=1e-12)
    # (1/N) log Z = ½(S(μ) − 1), S = μ − g²/(2κ) + log g
    assert th["log_z_per_n"] == pytest.approx(0.5 * (mu - g * g / (2 * kappa) + math.log(g) - 1), rel=1e-12)


def test_theory_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="gamma"):
        _reference([1.6, 0.4], -1.0, 3.0)


# --------------------------------------------------------------------------
# summary_table
# --------------------------------------------------------------------------
def test_summary_table_columns_means_and_theory(dt):
    table = diagnostics.summary_table(dt)
    assert table.columns == ("variable", "mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat", "theory", "diff")
    assert table.labels == [
        "lam_top[0]", "lam_top[1]", "lam_top[2]", "u[0]", "u[1]", "M", "signal[0]", "signal[1]", "mu", "log_z_per_n",
    ]
    post = dt["posterior"]
    expected_mean = np.concatenate([np.mean(post[v].values, axis=(0, 1)).ravel() for v in diagnostics.SPECTRAL])
    np.testing.assert_allclose(table.column("mean"), expected_mean, rtol=1e-12)
    expected_sd = np.concatenate([np.std(post[v].values, axis=(0, 1), ddof=1).ravel() for v in diagnostics.SPECTRAL])
    np.testing.assert_allclose(table.column("sd"), expected_sd, rtol=1e-6)
    th = _reference(C, GAMMA, ETA)
    expected_theory = np.concatenate([np.ravel(th[v]) for v in diagnostics.SPECTRAL])
    np.testing.assert_allclose(table.column("theory"), expected_theory, rtol=0)
    np.testing.assert_allclose(table.column("diff"), table.column("mean") - table.column("theory"), rtol=0, atol=0)
    for col in ("mcse_mean", "ess_bulk", "ess_tail", "r_hat"):
        assert np.all(np.isfinite(table.column(col))), col
    assert np.all(table.column("r_hat") < 1.1)
    # draws centred on the theory: every mean within 5 MCSE of it
    assert np.all(np.abs(table.column("diff")) < 5 * table.column("mcse_mean"))


def test_summary_table_subset_and_missing_theory(dt):
    table = diagnostics.summary_table(dt, var_names=["M", "mu", "not_there"], theory={})
    assert table.labels == ["M", "mu"]
    assert np.all(np.isnan(table.column("theory"))) and np.all(np.isnan(table.column("diff")))
    with pytest.raises(ValueError, match="posterior"):
        diagnostics.summary_table(dt, var_names=["nothing"])


def test_theory_nan_for_ranks_beyond_r_plus_one():
    dt = synthetic_datatree()
    post = dt["posterior"].to_dataset()
    extra = np.concatenate([post["lam_top"].values, post["lam_top"].values[..., -1:] - 0.1], axis=-1)
    post = post.drop_vars("lam_top").assign(lam_top=(("chain", "draw", "rank"), extra))
    dt["posterior"] = post
    table = diagnostics.summary_table(dt, var_names=["lam_top"])
    assert table.labels == [f"lam_top[{i}]" for i in range(4)]
    assert np.isnan(table.row("lam_top[3]")["theory"]) and np.isnan(table.row("lam_top[3]")["diff"])


def test_rhat_flags_disagreeing_chains():
    bad = synthetic_datatree(shift={"M": 0.2})  # chain 1 ten posterior sds away
    table = diagnostics.summary_table(bad)
    assert table.row("M")["r_hat"] > 1.1
    report = diagnostics.sampling_report(bad, table=table)
    assert report["max_r_hat"] > 1.1 and report["argmax_r_hat"] == "M"
    assert any("R-hat" in w and "M (" in w for w in report["warnings"])


def test_write_summary_csv_round_trip(dt, tmp_path):
    table = diagnostics.summary_table(dt)
    path = diagnostics.write_summary_csv(table, tmp_path / "sub" / "summary.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == table.columns
    assert [r[0] for r in rows[1:]] == table.labels
    got = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    want = np.array([[r[c] for c in table.columns[1:]] for r in table.rows], dtype=float)
    np.testing.assert_array_equal(got, want)
    assert not [p for p in path.parent.iterdir() if p.name != "summary.csv"]  # no temp files left
    text = diagnostics.format_table(table)
    assert text.splitlines()[0].split() == list(table.columns)


# --------------------------------------------------------------------------
# sampling_report
# --------------------------------------------------------------------------
def test_sampling_report_nuts(dt):
    meta = {"latent_summary": {"min_ess_bulk": 150.0, "max_r_hat": 1.2}, "timing": {"fit_s": 1.0}}
    report = diagnostics.sampling_report(dt, meta=meta)
    assert report["method"] == "nuts" and report["chains"] == CHAINS and report["draws"] == DRAWS
    assert report["divergences"] == int(dt["sample_stats"]["diverging"].values.sum()) > 0
    assert report["divergence_rate"] == pytest.approx(report["divergences"] / (CHAINS * DRAWS))
    np.testing.assert_allclose(report["bfmi"], az.bfmi(dt)["energy"].values)
    assert len(report["bfmi"]) == CHAINS and report["min_bfmi"] == min(report["bfmi"])
    assert report["max_tree_depth"] == 3 and report["step_size"] == [0.3, 0.3]
    assert 0.7 <= report["mean_acceptance"] <= 1.0
    assert math.isfinite(report["min_ess_bulk"]) and math.isfinite(report["max_r_hat"])
    assert report["latent_summary"]["max_r_hat"] == 1.2
    assert any("divergent" in w for w in report["warnings"])
    assert any("latent" in w for w in report["warnings"])
    text = diagnostics.format_report(report)
    assert "BFMI per chain" in text and "divergences" in text


def test_sampling_report_svi():
    svi = synthetic_datatree(chains=1, draws=300, nuts=False)
    report = diagnostics.sampling_report(svi)
    assert report["method"] == "svi" and report["chains"] == 1
    assert math.isnan(report["max_r_hat"]) and "divergences" not in report and "bfmi" not in report
    assert report["min_ess_bulk"] > 0
    assert "R-hat = n/a" in diagnostics.format_report(report)


# --------------------------------------------------------------------------
# comparison_table, run_parameters
# --------------------------------------------------------------------------
def test_comparison_table(dt):
    other = synthetic_datatree(seed=1, gamma=2.0, chains=1, draws=150, nuts=False)
    table = diagnostics.comparison_table({"fm": dt, "pm": other})
    assert table.labels == ["fm", "pm"]
    fm, pm = table.rows
    assert (fm["phase"], pm["phase"]) == ("FMo", "PMo")
    assert (fm["method"], pm["method"]) == ("nuts", "svi")
    assert fm["N"] == N and fm["gamma"] == GAMMA and pm["gamma"] == 2.0
    lam = dt["posterior"]["lam_top"].values[..., 0]
    assert fm["lam_1_mean"] == pytest.approx(lam.mean(), rel=1e-12)
    assert fm["lam_1_sd"] == pytest.approx(lam.std(ddof=1), rel=1e-12)
    assert fm["M_theory"] == pytest.approx(_reference(C, GAMMA, ETA)["M"])
    assert pm["M_theory"] == 0.0
    assert fm["u_1_diff"] == pytest.approx(fm["u_1_mean"] - fm["u_1_theory"])


def test_run_parameters_fallback_to_meta(dt):
    c, gamma, eta = diagnostics.run_parameters(dt)
    np.testing.assert_array_equal(c, C)
    assert (gamma, eta) == (GAMMA, ETA)
    bare = dt.copy()
    del bare["constant_data"]
    meta = {"c": [1.6, 0.4], "spec": {"model": {"gamma": 0.5, "eta": 3.0}}}
    c2, gamma2, eta2 = diagnostics.run_parameters(bare, meta)
    np.testing.assert_array_equal(c2, C)
    assert (gamma2, eta2) == (GAMMA, ETA)
    with pytest.raises(ValueError, match="gamma"):
        diagnostics.run_parameters(bare)
    assert diagnostics.theory_from_datatree(bare) is None


def test_make_run_round_trip(tmp_path):
    run = make_run(tmp_path / "run")
    loaded = az.from_netcdf(run / "inference.nc")
    assert set(loaded.children) >= {"posterior", "sample_stats", "log_likelihood", "observed_data", "posterior_predictive", "constant_data"}
    assert loaded["sample_stats"]["diverging"].dtype == bool
    assert loaded["posterior_predictive"]["x"].dims == ("chain", "draw", "point", "dim")
    t1 = diagnostics.summary_table(loaded)
    t2 = diagnostics.summary_table(synthetic_datatree())
    np.testing.assert_array_equal(t1.column("mean"), t2.column("mean"))
