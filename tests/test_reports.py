"""Honest numbers: every evidence or posterior number that cannot be trusted comes with a warning.

* :func:`bayes_sbm.reports.evidence_warnings` / ``format_evidence`` on
  synthetic report dicts (one per warning, and one with none);
* :func:`bayes_sbm.diagnostics.convergence_warnings` on synthetic DataTrees
  (a stuck chain, acceptance ≈ 0, a sticky chain, a variable frozen in one
  chain, stuck latent coordinates, latent R-hat, non-finite draws) and the
  same warnings printed by ``fit`` (``reports.posterior_table``) and
  ``diagnose`` (``diagnostics.sampling_report``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

from bayes_sbm import cli, diagnostics, reports

N, K = 4, 2


# ---------------------------------------------------------------------------
# evidence
# ---------------------------------------------------------------------------
def _estimate(value, se, kind="estimate", **extra):
    return {"log_evidence": value, "se": se, "per_n": value / N, "se_per_n": se / N, "kind": kind} | extra


def evidence_report(**changes) -> dict:
    """A healthy evidence report (every estimator agrees within its error); ``changes`` replace estimators."""
    est = {
        "ti": _estimate(10.0, 0.10, quadrature_correction=0.05, num_rungs=12),
        "stepping_stone": _estimate(10.05, 0.10, num_rungs=12),
        "elbo": _estimate(9.5, 0.02, kind="lower bound", num_draws=1000),
        "importance": _estimate(10.02, 0.05, ess=800.0, num_draws=1000),
        "iwae": _estimate(9.9, 0.03, kind="lower bound", group=10),
    }
    est.update(changes)
    return {"N": N, "K": K, "gamma": 0.5, "eta": 3.0, "c": [1.8, 0.2], "theory": 10.0, "theory_per_n": 2.5,
            "phase": "FMo", "estimators": est, "seconds": {}}


def test_healthy_evidence_report_has_no_warning():
    assert reports.evidence_warnings(evidence_report()) == []


EVIDENCE_CASES = [
    pytest.param({"importance": _estimate(10.0, 0.05, ess=12.0, num_draws=1000)}, "importance/iwae: weight ESS 12.0", id="low-importance-ess"),
    pytest.param({"importance": _estimate(10.0, 0.05, ess=math.nan, num_draws=1000)}, "importance/iwae: weight ESS nan", id="nan-importance-ess"),
    pytest.param({"stepping_stone": _estimate(11.5, 0.10, num_rungs=12)}, "ti vs stepping_stone: differ by 1.5 nats", id="ti-vs-ss"),
    pytest.param({"ti": _estimate(10.0, 0.10, quadrature_correction=0.5, num_rungs=12)}, "ti: quadrature correction 0.5 nats is 5.0 SEs",
                 id="quadrature"),
    pytest.param({"ti": _estimate(10.0, 0.10, quadrature_correction=-0.5, num_rungs=12)}, "ti: quadrature correction 0.5 nats",
                 id="quadrature-negative"),
    pytest.param({"elbo": _estimate(9.5, math.nan, kind="lower bound")}, "elbo: standard error undefined", id="nan-se"),
    pytest.param({"elbo": _estimate(9.5, math.inf, kind="lower bound")}, "elbo: standard error undefined", id="inf-se"),
    pytest.param({"iwae": _estimate(math.nan, 0.1, kind="lower bound")}, "iwae: the log evidence is not finite", id="nan-value"),
]


@pytest.mark.parametrize(("changes", "expected"), EVIDENCE_CASES)
def test_each_evidence_problem_gives_its_warning(changes, expected):
    warnings = reports.evidence_warnings(evidence_report(**changes))
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(expected), warnings[0]


def test_nan_se_does_not_also_claim_a_disagreement():
    """An undefined SE is one warning, not a spurious 'differ by nan SEs' as well."""
    warnings = reports.evidence_warnings(evidence_report(stepping_stone=_estimate(10.05, math.nan)))
    assert warnings == ["stepping_stone: standard error undefined (nan): a stuck chain or constant draws"]


def test_format_evidence_marks_bounds_and_prints_warnings():
    report = evidence_report(importance=_estimate(10.0, 0.05, ess=12.0, num_draws=1000))
    text = reports.format_evidence(report)  # no stored "warnings": computed
    header, *rows = text.splitlines()[1:7]
    assert header.split()[:2] == ["estimator", "kind"]
    kinds = {row.split()[0]: " ".join(row.split()[1:3]) for row in rows}
    assert kinds["elbo"] == "lower bound" and kinds["iwae"] == "lower bound"
    assert kinds["ti"].startswith("estimate") and kinds["importance"].startswith("estimate")
    assert [line for line in text.splitlines() if line.startswith("warning: ")] == [
        "warning: " + w for w in reports.evidence_warnings(report)
    ]
    stored = report | {"warnings": ["stored warning"]}
    assert reports.format_evidence(stored).splitlines()[-1] == "warning: stored warning"


# ---------------------------------------------------------------------------
# convergence
# ---------------------------------------------------------------------------
SHAPES = {"lam_top": (3,), "u": (2,), "M": (), "signal": (2,), "mu": (), "log_z_per_n": ()}


def datatree(chains=4, draws=400, seed=0, stuck=(), accept=0.85, repeat=None, freeze=None, nan=False):
    """A run DataTree with independent Gaussian draws (healthy), or broken as asked.

    ``stuck``: chains whose draws are all identical; ``repeat``: (chain,
    fraction) — that share of consecutive draws repeats the previous one;
    ``freeze``: (variable, chain) held constant; ``nan``: a NaN draw in ``mu``.
    """
    rng = np.random.default_rng(seed)
    post = {name: rng.standard_normal((chains, draws, *shape)) for name, shape in SHAPES.items()}
    post["z"] = rng.standard_normal((chains, draws, N * (N + 1) // 2))
    for c in stuck:
        for v in post.values():
            v[c] = v[c, :1]
    if repeat is not None:
        c, fraction = repeat
        held = np.flatnonzero(rng.random(draws - 1) < fraction) + 1
        for v in post.values():
            for d in held:
                v[c, d] = v[c, d - 1]
    if freeze is not None:
        name, c = freeze
        post[name][c] = post[name][c, :1]
    if nan:
        post["mu"][0, 5] = np.nan
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}

    def ds(variables):
        return xr.Dataset({k: (["chain", "draw", *[f"{k}_dim_{i}" for i in range(v.ndim - 2)]], v) for k, v in variables.items()},
                          coords=coords)

    acc = np.full((chains, draws), accept, dtype=float)
    stats = {"diverging": np.zeros((chains, draws), dtype=bool), "energy": rng.standard_normal((chains, draws)),
             "acceptance_rate": acc, "step_size": np.full((chains, draws), 0.3), "tree_depth": np.full((chains, draws), 3)}
    tree = xr.DataTree.from_dict({"/posterior": ds(post), "/sample_stats": ds(stats)})
    tree.attrs.update({"method": "nuts", "N": N, "K": K})
    return tree


META = {"divergences": 0, "latent_summary": {"dim": 10, "stuck_coordinates": 0, "min_ess_bulk": 1500.0, "max_r_hat": 1.001}}


@pytest.fixture(scope="module")
def healthy():
    return datatree()


def test_healthy_run_has_no_convergence_warning(healthy):
    assert diagnostics.convergence_warnings(healthy, META) == []


CONVERGENCE_CASES = [
    pytest.param(dict(stuck=(1,)), {}, "stuck chain(s) [1]: all 400 draws identical", id="stuck-chain"),
    pytest.param(dict(accept=0.002), {}, "acceptance rate ~ 0 in chain(s) [0, 1, 2, 3]", id="acceptance-0"),
    pytest.param(dict(repeat=(2, 0.8)), {}, "sticky chain(s) [2]", id="sticky-chain"),
    pytest.param(dict(freeze=("M", 3)), {}, "zero variance within a chain: M (chain 3)", id="frozen-variable"),
    pytest.param(dict(nan=True), {}, "non-finite draws (NaN or inf) in mu", id="nan-draw"),
    pytest.param({}, {"stuck_coordinates": 2, "min_ess_bulk": math.nan, "max_r_hat": math.nan}, "latent coordinates: 2 of 10 never move",
                 id="stuck-latent"),
    pytest.param({}, {"max_r_hat": 1.2}, "latent coordinates: max R-hat 1.200 > 1.01", id="latent-rhat"),
    pytest.param({}, {"min_ess_bulk": math.nan}, "latent coordinates: ESS undefined (NaN)", id="latent-nan-ess"),
]


@pytest.mark.parametrize(("tree_args", "latent", "expected"), CONVERGENCE_CASES)
def test_each_convergence_problem_gives_its_warning(tree_args, latent, expected):
    meta = META | {"latent_summary": META["latent_summary"] | latent}
    warnings = diagnostics.convergence_warnings(datatree(**tree_args), meta)
    assert any(w.startswith(expected) for w in warnings), warnings


def test_stuck_chain_makes_ess_undefined_not_a_number():
    """One chain, all draws identical: no ESS or R-hat is reported as a number, and every warning says why."""
    tree = datatree(chains=1, draws=50, stuck=(0,))
    table = diagnostics.summary_table(tree, theory={})
    assert np.all(np.isnan(table.column("ess_bulk"))) and np.all(np.isnan(table.column("mcse_mean")))
    warnings = diagnostics.convergence_warnings(tree, META, table=table)
    assert warnings[0].startswith("ESS undefined (NaN) for lam_top[0], lam_top[1]")
    assert any(w.startswith("stuck chain(s) [0]: all 50 draws identical") for w in warnings)
    report = diagnostics.sampling_report(tree, meta=META, table=table)
    assert report["stuck_chains"] == [0] and report["repeat_fraction"] == [1.0]


def test_fit_and_diagnose_print_the_same_warnings():
    """``fit`` prints reports.posterior_table, ``diagnose`` diagnostics.format_report: the warnings are one list."""
    tree = datatree(chains=2, draws=100, stuck=(1,), accept=0.005)
    meta = META | {"theory": {"phase": "FMo"}, "warnings": ["a warning stored by the fit"]}
    expected = diagnostics.convergence_warnings(tree, meta)
    assert len(expected) >= 3
    fit_lines = [line.removeprefix("warning: ") for line in reports.posterior_table(tree, meta).splitlines() if line.startswith("warning: ")]
    assert fit_lines == [*expected, "a warning stored by the fit"]
    report = diagnostics.sampling_report(tree, meta=meta)
    diagnose_lines = [line.removeprefix("WARNING: ") for line in diagnostics.format_report(report).splitlines() if line.startswith("WARNING: ")]
    assert diagnose_lines == expected
    # warnings already stored in meta.json by the fit are not printed twice
    again = reports.posterior_table(tree, meta | {"warnings": expected}).splitlines()
    assert sum(line.startswith("warning: ") for line in again) == len(expected)


# ---------------------------------------------------------------------------
# logz numbers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [1e308, 5e307])
def test_partition_summary_refuses_beta_w_beyond_double_precision(beta):
    W = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"^beta: must keep beta\*W within double precision, got beta = (1e\+308|5e\+307)"):
        reports.partition_summary(W, beta)


# ---------------------------------------------------------------------------
# the CLI stores and prints them (computation replaced by the synthetic results)
# ---------------------------------------------------------------------------
def test_cli_evidence_prints_and_stores_the_warnings(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('[model]\nN = 4\ngamma = 0.5\neta = 3.0\n[data]\nsource = "teacher"\nomega = 2.5\nK = 2\nseed = 0\n')
    report = evidence_report(importance=_estimate(10.0, 0.05, ess=12.0, num_draws=1000))  # no "warnings" key
    monkeypatch.setattr(cli.reports, "evidence_report", lambda *a, **k: dict(report))
    out = tmp_path / "ev.json"
    assert cli.main(["evidence", str(spec), "--json", str(out)]) == 0
    stored = json.loads(out.read_text())
    assert stored["warnings"] == reports.evidence_warnings(report) and len(stored["warnings"]) == 1
    assert stored["estimators"]["elbo"]["kind"] == "lower bound"
    assert f"warning: {stored['warnings'][0]}" in capsys.readouterr().out


def test_cli_fit_prints_the_convergence_warnings(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('[model]\nN = 4\ngamma = 0.5\neta = 3.0\n[data]\nsource = "teacher"\nomega = 2.5\nK = 2\nseed = 0\n')
    tree = datatree(chains=2, draws=100, stuck=(0,))
    meta = META | {"timing": {"wall_s": 0.1}}
    monkeypatch.setattr(cli, "fit_spec", lambda *a, **k: (tree, meta))
    monkeypatch.setattr(cli, "_use_host_devices", lambda n: None)  # leave this process's JAX devices alone
    assert cli.main(["fit", str(spec), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    printed = [line.removeprefix("warning: ") for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]
    assert printed == diagnostics.convergence_warnings(tree, meta) and any("stuck chain(s) [0]" in w for w in printed)


def test_predict_warnings():
    rows = [{"quantity": "typical forward <D(P*||P_W)>", "value_per_n": 0.1, "se_per_n": 0.01},
            {"quantity": "typical reverse <D(P_W||P*)>", "value_per_n": 0.2, "se_per_n": math.nan},
            {"quantity": "predictive forward D(P*||P_pp)", "value_per_n": math.inf, "se_per_n": 0.01}]
    assert reports.predict_warnings({"rows": rows[:1], "predictive": {"bias_reliable": True}}) == []
    warnings = reports.predict_warnings({"rows": rows, "predictive": {"bias_reliable": False}})
    assert [w.split(":")[0] for w in warnings] == ["typical reverse <D(P_W||P*)>", "predictive forward D(P*||P_pp)", "predictive"]
