"""The package's layer order (``bayes_sbm.LAYERS``): no module imports a module below it.

Every ``import``/``from … import`` of a package module is parsed from the
source, function-local ones included, so a cycle hidden by a lazy import
fails here.  Function-local imports of package modules are not allowed at
all; :data:`LOCAL_IMPORT_ALLOW` names the exceptions with their reasons.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bayes_sbm

PACKAGE = Path(bayes_sbm.__file__).resolve().parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
RANK = {name: i for i, name in enumerate(bayes_sbm.LAYERS)}
#: (module, imported module) pairs allowed as function-local imports, with the reason.
LOCAL_IMPORT_ALLOW: dict[tuple[str, str], str] = {
    ("__init__", "distribution"): "lazy attribute bayes_sbm.SphericalBoltzmann (importing the package stays cheap)",
}


def _package_imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported package module, is function-local, line) for every import in ``module``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    local_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    local_lines.add(inner.lineno)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
            elif node.level == 0 and node.module and node.module.split(".")[0] == "bayes_sbm":
                rest = node.module.split(".")[1:]
                targets = rest[:1] if rest else [a.name for a in node.names]
            else:
                continue
            out += [(t.split(".")[0], node.lineno in local_lines, node.lineno) for t in targets]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "bayes_sbm" and len(parts) > 1:
                    out.append((parts[1], node.lineno in local_lines, node.lineno))
    return out


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) ^ set(RANK)) == []


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_go_up(module):
    upward = [
        f"line {line}: {module} (layer {RANK[module]}) imports {target} (layer {RANK[target]})"
        for target, _, line in _package_imports(module)
        if target in RANK and RANK[target] >= RANK[module]
    ]
    assert upward == []


@pytest.mark.parametrize("module", MODULES + ["__init__"])
def test_no_function_local_package_imports(module):
    local = [
        f"line {line}: {module} imports {target} inside a function"
        for target, is_local, line in _package_imports(module)
        if is_local and (module, target) not in LOCAL_IMPORT_ALLOW
    ]
    assert local == []


def test_the_checker_sees_upward_and_local_imports(tmp_path, monkeypatch):
    """The parser must be able to fail: a planted upward, function-local import is found."""
    fake = tmp_path / "sphere.py"
    fake.write_text("def f():\n    from .cli import main\n    from bayes_sbm import runs\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    found = _package_imports("sphere")
    assert ("cli", True, 2) in found and ("runs", True, 3) in found
