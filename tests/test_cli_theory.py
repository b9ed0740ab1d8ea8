"""``bayes-sbm theory``: saddle/evidence (``--c``) and teacher–student KLs (``--omega``)."""

from __future__ import annotations

import math

import pytest

from bayes_sbm import theory as T
from bayes_sbm.cli import main

#: The CLI prints 12 significant digits.
PRINT_RTOL = 1e-11


def _parse(out: str) -> dict[str, str]:
    kv = {}
    for line in out.splitlines():
        if " = " in line and not line.startswith(("posterior", "teacher")):
            key, val = line.split(" = ", 1)
            kv[key.strip()] = val.split()[0]
    return kv


def _rows(out: str, r: int) -> list[list[float]]:
    lines = out.splitlines()
    i = next(j for j, line in enumerate(lines) if line.split()[:2] == ["k", "c_k"])
    return [[float(v) for v in lines[i + 1 + k].split()] for k in range(r)]


SADDLE_CASES = [
    pytest.param("1.6,0.4", 0.5, 3.0, id="K2-FMo"),
    pytest.param("0.4,1.6", 2.0, 3.0, id="K2-PMo-unsorted"),
    pytest.param("1", 0.6, 0.4, id="K1-SG"),
    pytest.param("1", 0.3, 0.7, id="K1-FMe"),
]


@pytest.mark.parametrize(("c", "gamma", "eta"), SADDLE_CASES)
def test_theory_saddle_and_evidence(capsys, c, gamma, eta):
    assert main(["theory", "--c", c, "--gamma", str(gamma), "--eta", str(eta)]) == 0
    out = capsys.readouterr().out
    kv = _parse(out)
    cs = [float(v) for v in c.split(",")]
    s = T.posterior_saddle(cs, gamma, eta)
    assert kv["phase"] == s.phase
    assert int(kv["d"]) == s.d and int(kv["o"]) == s.o
    for key in ("mu", "M", "edge"):
        assert math.isclose(float(kv[key]), getattr(s, key), rel_tol=PRINT_RTOL, abs_tol=1e-15)
    assert math.isclose(float(kv["log_evidence"]), T.log_evidence(cs, gamma, eta), rel_tol=PRINT_RTOL)
    rows = _rows(out, len(cs))
    assert [r[0] for r in rows] == list(range(1, len(cs) + 1))
    assert [r[1] for r in rows] == sorted(cs, reverse=True)  # descending-c order
    for k, row in enumerate(rows):
        for col, field in zip(row[2:], ("g", "u", "xi", "lam")):
            assert math.isclose(col, getattr(s, field)[k], rel_tol=PRINT_RTOL, abs_tol=1e-15)


def test_theory_saddle_k1_values_independent(capsys):
    # K = 1, γ = 0.25 < 1 < η = 4: FMo with g = √γ = 0.5, μ = 1/g + g/(γη) = 2.5, M = 0.5
    assert main(["theory", "--c", "1", "--gamma", "0.25", "--eta", "4"]) == 0
    kv = _parse(capsys.readouterr().out)
    assert kv["phase"] == "FMo" and float(kv["mu"]) == pytest.approx(2.5, rel=1e-12)
    assert float(kv["M"]) == pytest.approx(0.5, rel=1e-12) and float(kv["edge"]) == pytest.approx(2.0, rel=1e-12)
    # (1/N) log Y = (η − 1)(1 − log γ)/4 in K = 1 FMo (hand reduction of §5)
    assert float(kv["log_evidence"]) == pytest.approx(0.75 * (1 - math.log(0.25)), rel=1e-11)


@pytest.mark.parametrize(
    ("gamma", "eta", "beta"),
    [
        pytest.param(0.5, 3.0, 1.5, id="FMo-beta1.5"),
        pytest.param(2.0, 5.0, 2.0, id="PMo-in-window"),
        pytest.param(5.0, 0.5, None, id="PMe-default-beta"),
    ],
)
def test_theory_divergences(capsys, gamma, eta, beta):
    argv = ["theory", "--omega", "2.5", "--gamma", str(gamma), "--eta", str(eta)]
    if beta is not None:
        argv += ["--beta", str(beta)]
    assert main(argv) == 0
    kv = _parse(capsys.readouterr().out)
    r = T.teacher_student_kls(gamma, eta, 2.5)
    b = 1.0 if beta is None else beta
    assert kv["phase"] == r.phase
    for key in ("fwd_typ", "rev_typ", "fwd_pp", "rev_pp"):
        assert math.isclose(float(kv[key]), getattr(r, key), rel_tol=PRINT_RTOL)
    assert kv["sampling_phase"] == T.sampling_phase(gamma, eta, 2.5, b)
    assert math.isclose(float(kv["fwd_typ_beta"]), T.forward_kl_typical_beta(gamma, eta, 2.5, b), rel_tol=PRINT_RTOL)
    if beta is None:  # at β = 1 the sampler's forward KL is the typical one
        assert math.isclose(float(kv["fwd_typ_beta"]), r.fwd_typ, rel_tol=1e-10)


def test_theory_pm_reverse_kl_is_gaussian_value(capsys):
    assert main(["theory", "--omega", "2.5", "--gamma", "4", "--eta", "2"]) == 0
    kv = _parse(capsys.readouterr().out)
    w, kappa = 2.5, 8.0
    assert kv["phase"] == "PMo"
    assert float(kv["rev_typ"]) == pytest.approx(0.5 * (w - math.log(w) - 1 + 1 / (2 * kappa)), rel=1e-11)


def test_theory_both_sections(capsys):
    assert main(["theory", "--c", "1.6,0.4", "--omega", "2.5", "--gamma", "0.5", "--eta", "3"]) == 0
    out = capsys.readouterr().out
    assert "posterior saddle" in out and "teacher-student divergences" in out


ERRORS = [
    pytest.param(["--c", "1.6,0.4", "--gamma", "-1", "--eta", "3"], "gamma", id="gamma<0"),
    pytest.param(["--c", "1.6,0.4", "--gamma", "1", "--eta", "0"], "eta", id="eta=0"),
    pytest.param(["--c", "1.6,abc", "--gamma", "1", "--eta", "3"], "--c", id="c-not-numbers"),
    pytest.param(["--c", "1,-2", "--gamma", "1", "--eta", "3"], "c must be non-negative", id="c-negative"),
    pytest.param(["--c", "nan", "--gamma", "1", "--eta", "3"], "c must be finite", id="c-nan"),
    pytest.param(["--omega", "1", "--gamma", "1", "--eta", "3"], "omega", id="omega=1"),
    pytest.param(["--omega", "2.5", "--gamma", "1", "--eta", "3", "--beta", "0"], "beta", id="beta=0"),
    pytest.param(["--gamma", "1", "--eta", "3"], "--c", id="no-c-no-omega"),
    pytest.param(["--c", "1", "--gamma", "1", "--eta", "3", "--beta", "2"], "--omega", id="beta-without-omega"),
]


@pytest.mark.parametrize(("argv", "word"), ERRORS)
def test_theory_errors_are_one_line_exit_2(capsys, argv, word):
    assert main(["theory", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bayes-sbm theory: error:")
    assert word in err
    assert "Traceback" not in captured.err
