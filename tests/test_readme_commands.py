"""The README's command list runs, in order, on a fresh clone.

The commands are read from the first ``bash`` block of the README's
"Command line" section (every line that starts with ``bayes-sbm``), so the
README cannot drift from what runs. The checks:

* :func:`test_readme_commands_only_read_what_exists_or_came_before` (static,
  no computing): each command's input files and run folders are either in
  the repository or written by an earlier command of the list.
* :func:`test_readme_commands_fast_subset`: the commands before the first
  ``diagnose`` but ``fit`` (teacher, logz, theory) at tiny settings;
  :func:`test_readme_commands_fit_and_diagnose` (slow) adds the fit and the
  diagnose.
* :func:`test_readme_commands_all` (slow): the whole list at tiny settings.

Tiny settings: the commands run in a fresh folder (the test's ``tmp_path``)
holding *tiny copies* of the specs they name (``models/X.toml`` with
:data:`TINY_SPEC` overrides, written by ``Spec.to_toml``), so the README's
spec paths are used unchanged; the few options that set sizes on the
command line are rewritten by :data:`REWRITES`. Every command runs in-process
through :func:`bayes_sbm.cli.main` and must exit 0.
"""

from __future__ import annotations

import ast
import importlib
import shlex
import time
from pathlib import Path

import pytest

from bayes_sbm import cli
from bayes_sbm.specs import load_spec

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
#: Spec overrides of the tiny copies: N = 6, one chain of 30 + 30 NUTS draws, 30 SVI steps.
TINY_SPEC = {
    "model.N": 6,
    "inference.num_warmup": 30,
    "inference.num_samples": 30,
    "inference.num_chains": 1,
    "inference.svi_steps": 30,
    "inference.svi_draws": 30,
}
#: Dimension given to ``teacher --N`` (the README's data and W* are then tiny too).
TINY_N = "6"


def _replace_option(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    i = out.index(option)
    out[i + 1] = value
    return out


#: Command-line size options rewritten to tiny values, by subcommand (the specs are handled by the tiny copies).
REWRITES = {
    "teacher": lambda argv: _replace_option(argv, "--N", TINY_N),
    "evidence": lambda argv: argv + ["--rungs", "2", "--max-rungs", "2", "--samples", "30", "--svi-steps", "30"],
    "predict": lambda argv: argv + ["--num-points", "20"],
    "demo": lambda argv: argv + ["--quick"],
}


def readme_commands() -> list[list[str]]:
    """The ``bayes-sbm`` commands of the README's command-line block, as argv lists (without ``bayes-sbm``)."""
    text = README.read_text()
    section = text[text.index("## Command line"):]
    start = section.index("```bash")
    block = section[start + len("```bash"): section.index("```", start + 1)]
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["bayes-sbm"]:
            commands.append(words[1:])
    return commands


def _inputs_outputs(argv: list[str]) -> tuple[list[str], list[str]]:
    """(paths a command reads, paths it writes), from the CLI's own parser."""
    args = cli.build_parser().parse_args(argv)
    cmd = args.command
    if cmd == "teacher":
        return [], [args.out, args.out + ".json"] + ([args.teacher_out] if args.teacher_out else [])
    if cmd == "logz":
        return [args.W], []
    if cmd == "fit":
        return [args.spec], [args.out]
    if cmd == "evidence":
        return [args.spec], [args.json_out] if args.json_out else []
    if cmd in ("diagnose", "predict"):
        return [args.run] + ([getattr(args, "teacher", None)] if getattr(args, "teacher", None) else []), []
    if cmd == "compare":
        return list(args.runs), []
    if cmd == "demo":
        return [p for p in (args.spec, args.svi_spec) if p], [args.out]
    if cmd == "theory":
        return [], []
    raise AssertionError(f"README command {cmd!r} has no input/output rule here: add one")


def test_readme_has_a_command_list():
    commands = readme_commands()
    assert len(commands) >= 8
    covered = {argv[0] for argv in commands}
    assert {"teacher", "logz", "theory", "fit", "diagnose", "compare", "evidence", "predict", "demo"} <= covered


def test_readme_commands_only_read_what_exists_or_came_before():
    """A fresh clone has the tracked files; every other input must be written by an earlier command."""
    written: set[str] = set()
    for argv in readme_commands():
        inputs, outputs = _inputs_outputs(argv)
        for path in inputs:
            assert path in written or (REPO / path).exists(), (
                f"README command 'bayes-sbm {shlex.join(argv)}' reads {path!r}, which no earlier command writes "
                "and a fresh clone does not have")
        written.update(outputs)


def _tiny_workspace(folder: Path, commands: list[list[str]]) -> None:
    """Tiny copies of every spec the commands name, at the same relative paths."""
    for argv in commands:
        args = cli.build_parser().parse_args(argv)
        for spec_path in {getattr(args, "spec", None)} - {None}:
            target = folder / spec_path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(load_spec(REPO / spec_path).with_overrides(TINY_SPEC).to_toml())


def _run_in_order(commands: list[list[str]], folder: Path, monkeypatch, capsys) -> list[tuple[str, float]]:
    monkeypatch.chdir(folder)
    monkeypatch.setattr(cli, "_use_host_devices", lambda n: None)  # leave this process's JAX devices alone
    _tiny_workspace(folder, commands)
    timings = []
    for argv in commands:
        argv = REWRITES[argv[0]](argv) if argv[0] in REWRITES else list(argv)
        t0 = time.perf_counter()
        rc = cli.main(argv)
        out, err = capsys.readouterr()
        assert rc == 0, f"bayes-sbm {shlex.join(argv)} exited {rc}\nstdout tail:\n{out[-2000:]}\nstderr tail:\n{err[-2000:]}"
        assert "Traceback" not in out + err
        timings.append((shlex.join(argv), time.perf_counter() - t0))
    return timings


def _fast_prefix(commands: list[list[str]]) -> list[list[str]]:
    """The commands up to and including the first ``diagnose`` (teacher, logz, theory, fit + diagnose)."""
    end = next(i for i, argv in enumerate(commands) if argv[0] == "diagnose")
    return commands[: end + 1]


def test_readme_commands_fast_subset(tmp_path, monkeypatch, capsys):
    """teacher, logz and theory in README order (fits run in the slow tests; the CLI fit is also pinned by
    tests/test_analysis_common.py)."""
    commands = [argv for argv in _fast_prefix(readme_commands()) if argv[0] not in ("fit", "diagnose")]
    assert [argv[0] for argv in commands][:2] == ["teacher", "logz"] and "theory" in {argv[0] for argv in commands}
    _run_in_order(commands, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
def test_readme_commands_fit_and_diagnose(tmp_path, monkeypatch, capsys):
    commands = _fast_prefix(readme_commands())
    _run_in_order(commands, tmp_path, monkeypatch, capsys)
    run = next(argv[argv.index("--out") + 1] for argv in commands if argv[0] == "fit")
    assert (tmp_path / run / "inference.nc").is_file()
    assert (tmp_path / run / "diagnostics" / "summary.csv").is_file()


@pytest.mark.slow
def test_readme_commands_all(tmp_path, monkeypatch, capsys):
    commands = readme_commands()
    _run_in_order(commands, tmp_path, monkeypatch, capsys)
    for argv in commands:
        for path in _inputs_outputs(argv)[1]:
            assert (tmp_path / path).exists(), f"bayes-sbm {shlex.join(argv)} did not write {path}"


def test_readme_python_example_names_exist():
    """Every ``module.name`` the README's Python example uses exists (the example itself runs for minutes)."""
    text = README.read_text()
    section = text[text.index("## Python"):]
    start = section.index("```python")
    code = section[start + len("```python"): section.index("```", start + 1)]
    tree = ast.parse(code)
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "bayes_sbm":
            for alias in node.names:
                modules[alias.asname or alias.name] = getattr(importlib.import_module("bayes_sbm"), alias.name)
    missing = [f"{n.value.id}.{n.attr}" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules
               and not hasattr(modules[n.value.id], n.attr)]
    assert modules and not missing, f"the README's Python example uses names that do not exist: {missing}"
