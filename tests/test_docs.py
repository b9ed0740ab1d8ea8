"""The documentation stays true: quoted numbers are recomputed, cited anchors exist, specs ship.

* :data:`QUOTES` is the table of every computed number that README.md,
  models/README.md and the comments of models/*.toml quote: (file, what, how
  to recompute). Each recompute function returns the exact text the file
  must contain; a drift in the code (a changed sampler, a changed theory)
  fails here with the old and the new text.
  :func:`test_every_quoted_number_is_in_the_table` fails when a doc gains a
  number with three or more decimals (or a ``~`` approximation) that no
  entry recomputes.
* ``docs/theory.md``: every ``docs/theory.md#anchor`` cited by the CLI and
  the docs is a heading there; every printed label is in its glossary; no
  CLI output string points to the THEORY.md outside the repository.
* Package data: ``models/*.toml`` ship inside the package (``bayes_sbm/models``).
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pytest

from bayes_sbm import cli, diagnostics, model, teacher, theory
from bayes_sbm.data import data_spectrum
from bayes_sbm.specs import load_spec

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
PHASE_SPECS = ("pmo", "pme", "fmo", "fme", "sg")
#: The large-N teacher data eigenvalues at ω = 2.5: c = (2 − 1/ω, 1/ω).
C_LARGE_N = (1.6, 0.4)
#: In PMe, FMe and SG λ_1 is the bulk edge ℓ (THEORY.md §4): the saddle returns the same number up to rounding.
EDGE_RTOL = 1e-12


# ---------------------------------------------------------------------------
# recomputations
# ---------------------------------------------------------------------------
def _num(x: float) -> str:
    """Four decimals as the docs quote them; an exact zero as ``0``."""
    return "0" if x == 0 else f"{x:.4f}"


@functools.cache
def _spec(name: str):
    return load_spec(MODELS / f"{name}.toml")


def _saddle(name: str):
    m = _spec(name).model
    return theory.posterior_saddle(C_LARGE_N, m.gamma, m.eta)


@functools.cache
def _data_c(N: int, seed: int = 0) -> tuple[float, ...]:
    """Data eigenvalues of the K = 2, ω = 2.5 teacher data of a seed (what fit would see)."""
    td = teacher.teacher_student_data(jax.random.key(seed), N, 2, 2.5)
    return tuple(float(v) for v in data_spectrum(td.data).c)


def _c_text(N: int) -> str:
    c = _data_c(N)
    return f"c = ({c[0]:.4f}, {c[1]:.4f})"


def _edge_note(s) -> str:
    """The parenthesis after λ_1 in a spec comment, as its phase dictates."""
    if s.phase == "PMo":
        return f"BBP outlier above the edge ℓ = {s.edge:.4f}"
    if s.phase == "FMo":
        return f"outlier; edge ℓ = {s.edge:.4f}"
    assert s.lam[0] == pytest.approx(s.edge, rel=EDGE_RTOL), f"{s.phase}: λ_1 is quoted as the bulk edge"
    return "= the bulk edge ℓ"


def spec_comment_line(name: str) -> str:
    """``#   phase = FMo, μ = 2.0462, M = …, λ_1 = … (…), u_1 = …[, d = 1]``: the theory line of a spec's comment."""
    s = _saddle(name)
    line = (f"#   phase = {s.phase}, μ = {_num(s.mu)}, M = {_num(s.M)}, λ_1 = {_num(s.lam[0])} ({_edge_note(s)}), "
            f"u_1 = {_num(s.u[0])}")
    return line + (f", d = {s.d}" if s.d else "")


def readme_table_row(name: str) -> str:
    """The row of models/README.md's table (whitespace collapsed), from the spec file and the theory."""
    m, s = _spec(name).model, _saddle(name)
    cells = [f"`{name}.toml`", s.phase, repr(m.gamma), repr(m.eta), _num(s.mu), _num(s.M), _num(s.lam[0]), _num(s.u[0])]
    return "| " + " | ".join(cells) + " |"


def readme_edge_note(name: str) -> str:
    return f"(edge ℓ = {_saddle(name).edge:.4f})"


def data_sentence_demo() -> str:
    """N = 30 seed-0 data eigenvalues and their phase at the demo's γ, η."""
    m = _spec("demo").model
    return f"{_c_text(30)}: also {theory.posterior_saddle(_data_c(30), m.gamma, m.eta).phase}"


def data_sentence_phase(name: str) -> str:
    """N = 100 seed-0 data eigenvalues and their phase at the spec's γ, η."""
    m = _spec(name).model
    return f"{_c_text(100)}, phase {theory.posterior_saddle(_data_c(100), m.gamma, m.eta).phase};"


def fme_fmo_line(gamma: float) -> float:
    """η on the FMe/FMo boundary at this γ and c = (1.6, 0.4), by bisection (FMe below, FMo above)."""
    lo, hi = 0.3, 3.0
    assert theory.posterior_saddle(C_LARGE_N, gamma, lo).phase == "FMe"
    assert theory.posterior_saddle(C_LARGE_N, gamma, hi).phase == "FMo"
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if theory.posterior_saddle(C_LARGE_N, gamma, mid).phase == "FMe" else (lo, mid)
    return lo


def settings_sentence() -> str:
    """The common settings of the phase specs, as models/README.md states them."""
    values = {(s.model.N, s.inference.num_warmup, s.inference.num_samples, s.inference.num_chains)
              for s in map(_spec, PHASE_SPECS)}
    assert len(values) == 1, f"the phase specs no longer share N and NUTS settings: {values}"
    N, warm, draws, chains = values.pop()
    return f"N = {N}, and NUTS with {warm} warm-up and {draws} draws in each of\n{chains} chains"


def demo_note() -> str:
    s = _spec("demo")
    i = s.inference
    return f"N = {s.model.N}, NUTS {i.num_warmup} + {i.num_samples} draws, {i.num_chains} chains"


class Quote(NamedTuple):
    file: str
    what: str
    expected: Callable[[], str]


def _spec_quotes(name: str) -> list[Quote]:
    out = [Quote(f"models/{name}.toml", "theory values at c = (1.6, 0.4)", functools.partial(spec_comment_line, name))]
    if name in PHASE_SPECS:
        out.append(Quote(f"models/{name}.toml", "N = 100 seed-0 data c and phase", functools.partial(data_sentence_phase, name)))
    else:
        out.append(Quote(f"models/{name}.toml", "N = 30 seed-0 data c and phase", data_sentence_demo))
    return out


#: The observables of the README's large-N posterior headline (analysis/posterior_vs_theory/results/finite_size.csv).
POSTERIOR_HEADLINE = ("lam_1", "u_1", "M", "log_z_per_n", "Q_1", "M_8")


def posterior_headline() -> str:
    """The README's headline table, rebuilt from the committed study results (so it cannot go stale)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from analysis._common import headline_table

    return headline_table(REPO / "analysis" / "posterior_vs_theory" / "results" / "finite_size.csv", "observable", POSTERIOR_HEADLINE)


def evidence_headline() -> str:
    """The README's evidence table, rebuilt from the committed study results."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from analysis._common import law_band_table

    return law_band_table(REPO / "analysis" / "evidence_vs_theory" / "results" / "finite_size.csv", "estimator", "ti",
                          "TI (1/N) log Y")


#: Every computed number quoted in README.md, models/README.md and the models/*.toml comments.
QUOTES: list[Quote] = [
    *(q for name in (*PHASE_SPECS, "demo", "demo_svi") for q in _spec_quotes(name)),
    *(Quote("models/README.md", f"table row {name}", functools.partial(readme_table_row, name))
      for name in (*PHASE_SPECS, "demo", "demo_svi")),
    Quote("models/README.md", "pmo edge", functools.partial(readme_edge_note, "pmo")),
    Quote("models/README.md", "fmo edge", functools.partial(readme_edge_note, "fmo")),
    Quote("models/README.md", "phase-spec settings", settings_sentence),
    Quote("models/README.md", "demo settings", demo_note),
    Quote("models/README.md", "N = 30 demo data c and phase", data_sentence_demo),
    Quote("models/README.md", "N = 100 seed-0 data c", lambda: f"have\n{_c_text(100)}, and those"),
    Quote("models/fme.toml", "FMe/FMo line at γ = 0.2 (description)", lambda: f"~{fme_fmo_line(0.2):.2f} at gamma = 0.2"),
    Quote("models/fmo.toml", "FMe/FMo line at γ = 0.5 (description)", lambda: f"~{fme_fmo_line(0.5):.2f} at gamma = 0.5"),
    Quote("README.md", "large-N posterior headline", posterior_headline),
    Quote("README.md", "large-N evidence headline", evidence_headline),
]

DOC_FILES = ("README.md", "models/README.md", *(f"models/{p.name}" for p in sorted(MODELS.glob("*.toml"))))


def _doc_text(file: str) -> str:
    """The prose of a doc: whitespace inside table rows collapsed; for a spec, its comments and descriptions."""
    text = (REPO / file).read_text()
    if file.endswith(".toml"):
        keep = [line for line in text.splitlines() if line.startswith("#") or line.startswith("description")]
        text = "\n".join(keep)
    return "\n".join(re.sub(r" {2,}", " ", line) if line.startswith("|") else line for line in text.splitlines())


@pytest.mark.parametrize("quote", QUOTES, ids=[f"{q.file}:{q.what}" for q in QUOTES])
def test_quoted_number_is_recomputed(quote):
    expected = quote.expected()
    assert expected in _doc_text(quote.file), (
        f"{quote.file} ({quote.what}) no longer matches the code: it should contain\n  {expected!r}")


#: A computed-looking number: three or more decimals, or an approximation ``~x``.
_NUMBER = re.compile(r"~\s*\d+(?:\.\d+)?|\d+\.\d{3,}")


@pytest.mark.parametrize("file", DOC_FILES)
def test_every_quoted_number_is_in_the_table(file):
    text = _doc_text(file)
    covered = " ".join(q.expected() for q in QUOTES if q.file == file)
    loose = [m.group(0) for m in _NUMBER.finditer(text) if m.group(0).replace(" ", "") not in covered.replace(" ", "")]
    assert not loose, f"{file} quotes {loose} but no QUOTES entry recomputes them: add one (or drop the number)"


@pytest.mark.slow
def test_teacher_data_of_seeds_0_to_39_stay_in_the_margin():
    """The claim of models/README.md and the spec comments: N = 100 seeds 0–39 have c_1 in [1.4, 1.8]."""
    c1 = np.array([_data_c(100, seed)[0] for seed in range(40)])
    assert np.all((c1 >= 1.4) & (c1 <= 1.8)), f"c_1 outside [1.4, 1.8]: {c1[(c1 < 1.4) | (c1 > 1.8)]}"
    text = (REPO / "models" / "README.md").read_text()
    assert "seeds 0–39 all have c_1 in [1.4, 1.8]" in text


# ---------------------------------------------------------------------------
# docs/theory.md: anchors and glossary
# ---------------------------------------------------------------------------
THEORY_MD = REPO / "docs" / "theory.md"


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def theory_anchors() -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", THEORY_MD.read_text(), flags=re.M)}


def test_theory_doc_is_in_the_repository():
    assert THEORY_MD.is_file()
    assert cli.THEORY_DOC == "docs/theory.md"
    assert "../shared" not in (REPO / "README.md").read_text()
    assert "docs/theory.md" in (REPO / "README.md").read_text()


def test_cited_anchors_exist():
    anchors = theory_anchors()
    cited = {f"{cli.THEORY_DOC}#{a}" for a in cli.THEORY_ANCHORS.values()} | {f"{cli.THEORY_DOC}#glossary"}
    for file in (REPO / "bayes_sbm" / "cli.py", *(REPO / f for f in DOC_FILES)):
        cited |= set(re.findall(r"docs/theory\.md#[\w-]+", file.read_text()))
    missing = sorted(c for c in cited if c.split("#", 1)[1] not in anchors)
    assert not missing, f"anchors not in docs/theory.md: {missing}"
    internal = set(re.findall(r"\]\(#([\w-]+)\)", THEORY_MD.read_text()))
    assert not internal - anchors, f"broken links inside docs/theory.md: {sorted(internal - anchors)}"


def test_theory_sections_follow_the_docstring_numbering():
    """Section n of docs/theory.md is THEORY.md §n of the docstrings: anchors start with the number."""
    assert sorted(cli.THEORY_ANCHORS) == list(range(1, 9))
    for n, anchor in cli.THEORY_ANCHORS.items():
        assert anchor.startswith(f"{n}-")
        assert cli.theory_ref(n) == f"docs/theory.md#{anchor}"


def _cli_output_strings() -> list[str]:
    """String constants of cli.py that can reach the user (docstrings and comments excluded)."""
    tree = ast.parse((REPO / "bayes_sbm" / "cli.py").read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_cli_output_cites_docs_not_theory_md():
    stale = [s for s in _cli_output_strings() if "THEORY.md" in s or "§" in s]
    assert not stale, f"CLI output strings still cite THEORY.md: {stale}"
    parser = cli.build_parser()
    helps = [parser.format_help()]
    for action in parser._subparsers._group_actions:
        helps += [p.format_help() for p in action.choices.values()]
    assert not [h for h in helps if "THEORY.md" in h]


def _glossary() -> str:
    text = THEORY_MD.read_text()
    return text[text.index("## Glossary"):]


def _theory_printed_keys(capsys) -> list[str]:
    """Every ``key = value`` key that ``bayes-sbm theory`` prints, and its table header."""
    assert cli.main(["theory", "--c", "1.6,0.4", "--gamma", "0.5", "--eta", "3", "--omega", "2.5", "--beta", "1.5"]) == 0
    out = capsys.readouterr().out
    keys = [line.split(" = ", 1)[0].strip() for line in out.splitlines()
            if " = " in line and not line.startswith(("posterior", "teacher"))]
    header = next(line for line in out.splitlines() if line.split()[:2] == ["k", "c_k"])
    return keys + header.split()


#: Labels printed by fit/diagnose/evidence/predict/logz that the glossary must explain (beyond the ones read from code).
PRINTED_LABELS = (
    "lambda_1", "u_1", "M (condensate)", "e_1' W e_1", "(1/N) log Z(W)", "mcse", "ESS", "MCSE", "R-hat", "BFMI",
    "divergences", "mean acceptance", "max tree depth", "step size per chain", "latent coordinates", "final ELBO",
    "TI", "stepping_stone", "ELBO", "IWAE", "importance ESS", "weight ESS", "quadrature correction", "combined SEs",
    "lower bound", "estimate", "theory/N", "diff/N", "(1/N) log Y", "fwd_typ", "rev_typ", "fwd_pp", "rev_pp",
    "Jensen bias of log-mean-exp", "median weight ESS", "exact log Z", "saddle log Z", "saddle + Gaussian",
    "Lagrange multiplier mu", "condensate E[y_1^2]/N", "exact sampler acceptance", "sPM", "sFM", "sSG",
    "PMo", "PMe", "FMo", "FMe", "SG", "kappa", "edge", "xi", "signal", "lam_top", "log_z_per_n", "wrote",
)


def test_glossary_explains_every_printed_label(capsys):
    """Labels read from the code must appear as `label` in the glossary; the listed ones in a row's first cell."""
    glossary = _glossary()
    from_code = set(_theory_printed_keys(capsys)) | set(diagnostics.SUMMARY_COLUMNS) | set(model.SPECTRAL_SITES)
    from_code |= {"ti", "stepping_stone", "elbo", "importance", "iwae"}
    missing = sorted(lab for lab in from_code if f"`{lab}`" not in glossary)
    first_cells = " ".join(row.split("|")[1] for row in glossary.splitlines() if row.startswith("| "))
    missing += sorted(lab for lab in PRINTED_LABELS if f"`{lab}`" not in glossary and lab not in first_cells)
    assert not missing, f"labels the CLI prints but docs/theory.md#glossary does not explain: {missing}"


# ---------------------------------------------------------------------------
# package data: the specs ship inside the package
# ---------------------------------------------------------------------------
def test_specs_are_package_data():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["bayes_sbm"]
    assert "models/*.toml" in data
    link = REPO / "bayes_sbm" / "models"
    assert link.resolve() == MODELS.resolve(), "bayes_sbm/models must be the top-level models/ folder (one source)"
    for name in ("demo.toml", "demo_svi.toml"):
        assert Path(cli._default_spec_path(name)).read_text() == (MODELS / name).read_text()


def test_an_installed_copy_finds_its_specs(tmp_path):
    """A copy of the package with its data (as a wheel installs it) and no checkout beside it finds demo.toml."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "bayes_sbm", site / "bayes_sbm", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    code = ("import bayes_sbm.cli as c, pathlib; p = pathlib.Path(c._default_spec_path('demo.toml')); "
            "print(p.parent.parent.name == 'bayes_sbm' and p.is_file())")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "True", res.stdout + res.stderr[-2000:]
