"""The package's layer order (``bayes_sbm.LAYERS``): no module imports a module below it.

Every ``import``/``from … import`` of a package module is parsed from the
source, function-local ones included, so a cycle hidden by a lazy import
fails here.  Function-local imports of package modules are not allowed at
all; :data:`LOCAL_IMPORT_ALLOW` names the exceptions with their reasons.
Function-local imports of other packages are allowed only for a heavy
import that most uses of the module do not need (:data:`LOCAL_THIRD_PARTY_ALLOW`).
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

#: (module, top-level package) pairs allowed as function-local imports of other packages, with the reason.
LOCAL_THIRD_PARTY_ALLOW: dict[tuple[str, str], str] = {
    ("sweep", "dask"): "dask.distributed takes ~1 s to import: only run_sweep needs it, not parsing or planning a sweep",
}


def _local_lines(tree: ast.AST) -> set[int]:
    """Lines of the imports inside a function."""
    return {inner.lineno for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(node) if isinstance(inner, (ast.Import, ast.ImportFrom))}


def _local_third_party_imports(module: str) -> list[tuple[str, int]]:
    """(top-level package, line) of every function-local import of something outside ``bayes_sbm``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    local = _local_lines(tree)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno not in local:
            continue
        if isinstance(node, ast.ImportFrom):
            names = [node.module] if node.level == 0 and node.module else []  # relative: a package module
        else:
            names = [a.name for a in node.names]
        out += [(n.split(".")[0], node.lineno) for n in names if n.split(".")[0] != "bayes_sbm"]
    return out


def _package_imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported package module, is function-local, line) for every import in ``module``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    local_lines = _local_lines(tree)
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


@pytest.mark.parametrize("module", MODULES + ["__init__"])
def test_function_local_imports_of_other_packages_are_listed(module):
    local = [f"line {line}: {module} imports {package} inside a function"
             for package, line in _local_third_party_imports(module) if (module, package) not in LOCAL_THIRD_PARTY_ALLOW]
    assert local == []


def test_the_checker_sees_upward_and_local_imports(tmp_path, monkeypatch):
    """The parser must be able to fail: a planted upward, function-local import is found."""
    fake = tmp_path / "sphere.py"
    fake.write_text("def f():\n    from .cli import main\n    from bayes_sbm import runs\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    found = _package_imports("sphere")
    assert ("cli", True, 2) in found and ("runs", True, 3) in found
    fake.write_text("import numpy\ndef f():\n    import scipy.linalg\n    from matplotlib import pyplot\n    from . import io\n")
    assert _local_third_party_imports("sphere") == [("scipy", 3), ("matplotlib", 4)]
