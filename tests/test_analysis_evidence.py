"""Smoke tests of the inference studies of THEORY.md §5–6 and the evidence benchmark.

Each script's ``main`` runs in this process with ``--quick --out <tmp>``
(no subprocess: no interpreter and JAX start-up per script, and no wall-clock
timeout that a loaded machine could hit); the test checks that every promised
file is there, that no temporary file of an atomic write is left behind, and
that the plotted numbers are finite.

``analysis/evidence_vs_theory`` and ``benchmarks/bench_evidence.py`` run a
NUTS ladder and an SVI fit per problem (~1.5 CPU-minutes, mostly jit
compilation: every rung is a new NumPyro model), and ``analysis/double_descent``
three NUTS fits: they are marked slow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import assert_finite as _finite
from conftest import csv_rows as _rows
from conftest import run_script_main as _run

#: The refined argmin's KL gain over β = 1 is ≥ 0 on the same draws, up to the rounding of a difference of equal sums.
GAIN_ATOL = 1e-12
#: prior_tr_w2 is the closed form (N + 1)/(γη), written with repr: equal up to rounding.
CLOSED_FORM_RTOL = 1e-12
#: tr W² from the latent vector vs tr(W W) of the explicit W: float64 rounding of O(N²) sums, far below any MCSE.
TRACE_CHECK_RTOL = 1e-10


def _check_folder(out: Path, names) -> None:
    for name in names:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["quick"] is True and "jax" in meta["versions"] and meta["settings"]


# ---------------------------------------------------------------------------
# 1. (1/N) log Y vs theory (slow: TI ladder + SVI per problem)
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_evidence_vs_theory_quick(tmp_path):
    out = tmp_path / "evidence_vs_theory"
    _run("analysis/evidence_vs_theory/run.py", "--quick", "--out", str(out))
    _check_folder(out, ("evidence_vs_theory.csv", "finite_size.csv", "table.md", "estimates_vs_phase.png", "diff_vs_n.png",
                        "metadata.json"))
    rows = _rows(out / "evidence_vs_theory.csv")
    _finite(rows, ("per_n", "se_per_n", "theory_data_c", "diff", "theory_limit", "diff_limit", "wall_s"))
    assert {r["estimator"] for r in rows} == {"ti", "stepping_stone", "elbo", "importance", "iwae"}
    assert {r["spec"] for r in rows} == {"pmo", "fmo"} and {r["N"] for r in rows} == {"8", "10", "12"}
    assert all(float(r["se_per_n"]) > 0 for r in rows)
    fss = _rows(out / "finite_size.csv")
    assert sum(f["best"] == "True" for f in fss) == 10  # one best law per (spec, estimator): three sizes suffice
    assert "| spec | phase | N |" in (out / "table.md").read_text()
    # a rerun finds every point finished: nothing is recomputed
    stdout = _run("analysis/evidence_vs_theory/run.py", "--quick", "--out", str(out))
    assert "[1/6]" not in stdout
    assert _rows(out / "evidence_vs_theory.csv") == rows


# ---------------------------------------------------------------------------
# 2. temperature tuning
# ---------------------------------------------------------------------------
@pytest.mark.slow  # a study smoke test (~30 s of NUTS compilation); the §6 curves are checked in test_theory
def test_temperature_tuning_quick(tmp_path):
    out = tmp_path / "temperature_tuning"
    _run("analysis/temperature_tuning/run.py", "--quick", "--out", str(out))
    _check_folder(out, ("kl_vs_beta.csv", "theory_curves.csv", "argmin.csv", "table.md", "temperature_tuning.png",
                        "metadata.json"))
    rows = _rows(out / "kl_vs_beta.csv")
    assert len(rows) == 5 and {r["gamma"] for r in rows} == {"2.0"} and {r["N"] for r in rows} == {"10"}
    _finite(rows, ("beta", "fwd_per_n", "fwd_se_per_n", "theory_fwd", "diff", "rev_per_n"))
    assert all(float(r["fwd_per_n"]) > 0 for r in rows)  # a KL divergence
    theory_rows = _rows(out / "theory_curves.csv")
    _finite(theory_rows, ("beta", "theory_fwd"))
    (a,) = _rows(out / "argmin.csv")
    _finite([a], ("beta_c", "beta_edge", "theory_argmin", "refined_argmin", "kl_beta1", "gain", "gain_se"))
    assert float(a["beta_c"]) < float(a["theory_argmin"]) < float(a["beta_edge"])  # THEORY §6: minimum in the window
    assert float(a["gain"]) >= -GAIN_ATOL  # the refined argmin is no worse than β = 1 on the same draws


# ---------------------------------------------------------------------------
# 3. double descent
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_double_descent_quick(tmp_path):
    out = tmp_path / "double_descent"
    _run("analysis/double_descent/run.py", "--quick", "--out", str(out))
    _check_folder(out, ("rev_kl_vs_gamma.csv", "theory_curves.csv", "table.md", "double_descent.png", "metadata.json"))
    rows = _rows(out / "rev_kl_vs_gamma.csv")
    assert all(math.isfinite(float(r["max_r_hat"])) and int(float(r["num_draws"])) == 200 for r in rows)  # 2 chains x 100 draws
    # a rerun finds every point of the sweep finished: nothing is refitted, the same KLs come back
    stdout = _run("analysis/double_descent/run.py", "--quick", "--out", str(out))
    assert "[1/3]" not in stdout
    timing = ("kl_wall_s",)  # the KLs' own compute time differs between runs; everything else is reproduced exactly
    again = _rows(out / "rev_kl_vs_gamma.csv")
    assert [{k: v for k, v in r.items() if k not in timing} for r in again] == [{k: v for k, v in r.items() if k not in timing} for r in rows]
    assert [float(r["gamma"]) for r in rows] == [0.3, 1.0, 3.0] and {r["eta"] for r in rows} == {"1.0"}
    _finite(rows, ("rev_per_n", "rev_se_per_n", "theory_rev", "diff_rev", "fwd_per_n", "theory_fwd"))
    assert all(float(r["rev_per_n"]) > 0 for r in rows)
    _finite(_rows(out / "theory_curves.csv"), ("gamma", "theory_rev", "theory_fwd"))


# ---------------------------------------------------------------------------
# 4. evidence identity d log Y / dγ
# ---------------------------------------------------------------------------
@pytest.mark.slow  # a study smoke test; the identity's estimators are checked in test_evidence
def test_evidence_identity_quick(tmp_path):
    out = tmp_path / "evidence_identity"
    _run("analysis/evidence_identity/run.py", "--quick", "--out", str(out))
    _check_folder(out, ("identity.csv", "theory_curves.csv", "table.md", "identity.png", "metadata.json"))
    rows = _rows(out / "identity.csv")
    assert [r["point"] for r in rows] == ["eta=3,gamma=0.5", "eta=3,gamma=4"] and {r["N"] for r in rows} == {"10"}
    assert [r["phase"] for r in rows] == ["FMo", "PMo"]  # THEORY.md §4 at the data c: both sides of the FM/PM line
    _finite(rows, ("theory_data_c", "theory_limit", "estimate", "mcse", "diff", "post_tr_w2", "prior_tr_w2"))
    for r in rows:
        N, g, e = int(r["N"]), float(r["gamma"]), float(r["eta"])
        assert float(r["prior_tr_w2"]) == pytest.approx((N + 1) / (g * e), rel=CLOSED_FORM_RTOL)
        assert float(r["trace_check_max_rel_err"]) < TRACE_CHECK_RTOL  # tr T² of the band draw = tr(W W) of its rebuilt W
        assert float(r["mcse"]) > 0 and r["fd_same_phase"] == "True"
    _finite(_rows(out / "theory_curves.csv"), ("gamma", "theory_data_c", "theory_limit"))


# ---------------------------------------------------------------------------
# 4b. predictive forward KL from evidence ratios
# ---------------------------------------------------------------------------
@pytest.mark.slow  # three TI ladders; the ratio identity itself is tested in test_predictive against NUTS
def test_predictive_evidence_quick(tmp_path):
    out = tmp_path / "predictive_evidence"
    _run("analysis/predictive_evidence/run.py", "--quick", "--out", str(out))
    _check_folder(out, ("predictive_kl.csv", "table.md", "metadata.json"))
    rows = _rows(out / "predictive_kl.csv")
    assert [r["row"] for r in rows] == ["D", "D+x", "D+x", "KL"]
    _finite(rows[:3], ("log_evidence", "se"))
    _finite(rows[1:3], ("log_pp", "log_pp_se", "teacher_log_prob_per_n"))
    _finite(rows[3:], ("fwd_pp_per_n", "fwd_pp_se_per_n", "theory_fwd_pp", "z"))
    for r in rows[1:3]:  # log P_pp(x) is the difference of the two evidence estimates
        assert float(r["log_pp"]) == pytest.approx(float(r["log_evidence"]) - float(rows[0]["log_evidence"]), rel=1e-12)
    # a rerun finds the three evidence points finished
    stdout = _run("analysis/predictive_evidence/run.py", "--quick", "--out", str(out))
    assert "[1/3]" not in stdout


# ---------------------------------------------------------------------------
# 5. benchmark (slow: TI ladder + SVI per problem)
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_evidence_quick(tmp_path):
    out = tmp_path / "bench_evidence.json"
    stdout = _run("benchmarks/bench_evidence.py", "--quick", "--out", str(out))
    assert "SE²·CPU" in stdout
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["complete"] is True and result["threads"] == 1
    assert result["targets"] == {"N": 100, "se_per_n": 0.002, "cpu_s": 600.0}
    rows = result["rows"]
    assert {(r["spec"], r["estimator"]) for r in rows} == {
        (s, e) for s in ("pmo", "fmo") for e in ("ti", "stepping_stone", "elbo", "importance", "iwae")}
    for r in rows:
        assert r["N"] == 8
        for key in ("per_n", "se_per_n", "theory_per_n", "abs_error_per_n", "wall_s", "cpu_s", "se2_cpu", "cpu_to_target_s"):
            assert math.isfinite(r[key]), (r["estimator"], key)
        assert r["cpu_s"] > 0 and r["se2_cpu"] == pytest.approx(r["se_per_n"] ** 2 * r["cpu_s"])
    # TI and stepping stone come from one ladder: same cost attributed to both
    for spec in ("pmo", "fmo"):
        ti, ss = (next(r for r in rows if r["spec"] == spec and r["estimator"] == e) for e in ("ti", "stepping_stone"))
        assert ti["cpu_s"] == ss["cpu_s"] and ti["shared_cost_with"] == ["stepping_stone"]
    assert set(result["summary"]) == {"pmo_N8", "fmo_N8"}
