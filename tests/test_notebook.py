"""The tutorial notebook (``notebooks/tutorial.ipynb``) stays runnable and is committed with its outputs.

* fast: the notebook is valid JSON (read with :mod:`json`, no Jupyter
  needed), every code cell was executed in order with no error output and
  the outputs include figures; every code cell compiles; every attribute the
  cells take from a ``bayes_sbm`` module exists (a renamed function fails
  here at once); the cells read the tiny-settings switch;
* slow: every code cell is executed, in order, in one namespace in this
  process, with ``BAYES_SBM_TUTORIAL_QUICK=1`` (tiny NUTS runs and ladders)
  and the run folders in a temporary folder — the notebook's whole workflow
  (load, fit, ArviZ, held-out likelihood, evidence over γ, generation).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tutorial.ipynb"
#: The environment switch the notebook reads for its tiny settings.
QUICK_SWITCH = "BAYES_SBM_TUTORIAL_QUICK"


def _code_cells() -> list[dict]:
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_notebook_is_committed_executed_with_outputs():
    cells = _code_cells()
    assert len(cells) >= 8
    counts = [c.get("execution_count") for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"not executed top to bottom in one session: {counts}"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # trace, held-out, generated images
    assert QUICK_SWITCH in _source(cells[0])


def test_every_cell_compiles_and_every_bayes_sbm_name_exists():
    """``module.attr`` for every alias bound to a ``bayes_sbm`` module (``from bayes_sbm import data as sbm_data``)."""
    aliases: dict[str, object] = {}
    for i, cell in enumerate(_code_cells()):
        tree = ast.parse(_source(cell), filename=f"cell {i}")
        compile(tree, f"cell {i}", "exec")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bayes_sbm":
                for a in node.names:
                    target = importlib.import_module(node.module)
                    value = getattr(target, a.name, None)
                    if value is None:
                        value = importlib.import_module(f"{node.module}.{a.name}")
                    aliases[a.asname or a.name] = value
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                owner = aliases[node.value.id]
                assert hasattr(owner, node.attr), f"cell {i}: {node.value.id}.{node.attr} does not exist"
    assert {"runs", "reports", "plots", "specs"} <= set(aliases)


@pytest.mark.slow
def test_notebook_runs_at_tiny_settings(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    matplotlib.use("Agg")
    monkeypatch.setenv(QUICK_SWITCH, "1")
    monkeypatch.setenv("BAYES_SBM_TUTORIAL_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__tutorial__"}
    for i, cell in enumerate(_code_cells()):
        exec(compile(_source(cell), f"{NOTEBOOK.name} code cell {i}", "exec"), namespace)  # noqa: S102
    assert namespace["QUICK"] is True
    assert (tmp_path / "threes_g1" / "inference.nc").is_file() and (tmp_path / "heldout.png").is_file()
    assert sorted(p.name for p in tmp_path.glob("generated_beta*.png"))
    assert len(namespace["rows"]) == 2 and os.environ[QUICK_SWITCH] == "1"
