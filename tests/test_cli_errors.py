"""Every bad input or faulty file a user can give the CLI: exit 2, one line, nothing written.

One table of cases across all subcommands (from a user trial): each must
exit with status 2, print exactly one line on stderr naming the culprit
(argument or file) and its value, print no traceback anywhere, and leave
every file in the working folder untouched (hashes, mtimes and modes are
compared before and after), and fail before any sampling or heavy computing.

The inputs live in one module-scope folder (copied per case): matrices,
data and spec files, and a small run folder in the layout ``bayes-sbm fit``
writes (``inference.nc`` with the posterior, sample_stats, observed_data
and constant_data groups, ``meta.json``, ``spec.toml``, ``data.npy``),
built directly with xarray so the table needs no NUTS compile; broken
variants of it (corrupt NetCDF, ``meta.json`` a list or invalid JSON,
modified ``data.npy``) are made from it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from bayes_sbm import cli, data as sbm_data, specs
from bayes_sbm.cli import main

N, K, DRAWS = 4, 2, 30
SPEC = {
    "model": {"N": N, "gamma": 0.5, "eta": 3.0},
    "data": {"source": "teacher", "omega": 2.5, "K": K, "seed": 0},
    "inference": {"num_warmup": 30, "num_samples": DRAWS, "num_chains": 1, "seed": 0},
}


def _sphere_rows(rng, k: int, n: int) -> np.ndarray:
    x = rng.normal(size=(k, n))
    return x * (np.sqrt(n) / np.linalg.norm(x, axis=1, keepdims=True))


def write_run(folder: Path, rng: np.random.Generator) -> Path:
    """A run folder in the layout of :func:`bayes_sbm.runs.fit_spec` (synthetic draws, one chain)."""
    folder.mkdir(parents=True)
    spec = specs.parse_spec(SPEC, source="spec.toml")
    x = _sphere_rows(rng, K, N)
    coords = {"chain": [0], "draw": np.arange(DRAWS)}

    def sampled(**variables):
        return xr.Dataset({k: (["chain", "draw", *dims], v) for k, (dims, v) in variables.items()}, coords=coords)

    post = sampled(
        lam_top=(["rank"], 2.0 + 0.1 * rng.normal(size=(1, DRAWS, 3))),
        u=(["mode"], rng.uniform(size=(1, DRAWS, 2))),
        M=([], rng.uniform(size=(1, DRAWS))),
        signal=(["mode"], rng.normal(size=(1, DRAWS, 2))),
        mu=([], 2.0 + 0.1 * rng.normal(size=(1, DRAWS))),
        log_z_per_n=([], 0.2 + 0.01 * rng.normal(size=(1, DRAWS))),
        z=(["latent"], rng.normal(size=(1, DRAWS, N * (N + 1) // 2))),
    )
    stats = sampled(
        diverging=([], np.zeros((1, DRAWS), dtype=bool)),
        energy=([], rng.normal(size=(1, DRAWS))),
        acceptance_rate=([], rng.uniform(0.6, 1.0, size=(1, DRAWS))),
        step_size=([], np.full((1, DRAWS), 0.3)),
        tree_depth=([], np.full((1, DRAWS), 3)),
        n_steps=([], np.full((1, DRAWS), 7)),
    )
    tree = xr.DataTree.from_dict({
        "/posterior": post,
        "/sample_stats": stats,
        "/log_likelihood": sampled(x=(["point"], rng.normal(size=(1, DRAWS, K)))),
        "/observed_data": xr.Dataset({"x": (["point", "dim"], x)}),
        "/constant_data": xr.Dataset({"c": (["mode"], np.array([1.8, 0.2])), "gamma": 0.5, "eta": 3.0, "beta": 1.0}),
    })
    tree.attrs.update({"N": N, "K": K, "method": "nuts", "parametrization": "aligned", "spec_name": "spec", "seed": 0})
    tree.to_netcdf(folder / "inference.nc", engine="h5netcdf")
    meta = {"seed": 0, "spec": spec.to_dict(), "c": [1.8, 0.2], "divergences": 0,
            "latent_summary": {"dim": 10, "stuck_coordinates": 0, "min_ess_bulk": 30.0, "min_ess_tail": 30.0, "argmin_ess_bulk": 0},
            "timing": {"wall_s": 1.0}}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "spec.toml").write_text(spec.to_toml())
    np.save(folder / "data.npy", x)
    return folder


def _spec_text(**changes) -> str:
    tables = {t: dict(v) for t, v in SPEC.items()}
    for dotted, value in changes.items():
        table, key = dotted.split("__")
        tables[table][key] = value
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value) if isinstance(value, str) else value}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Every input file of the table, made once per session."""
    root = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(7)
    w = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.5, 0.0]])
    np.save(root / "w.npy", w)
    (root / "empty.npy").write_bytes(b"")
    np.save(root / "w3d.npy", np.zeros((2, 2, 2)))
    np.save(root / "nonsq.npy", np.zeros((2, 3)))
    np.save(root / "wnan.npy", np.where(np.eye(3) > 0, np.nan, w))
    np.save(root / "winf.npy", np.where(np.eye(3) > 0, np.inf, w))
    np.save(root / "asym.npy", np.array([[0.0, 1.0], [0.0, 0.0]]))
    np.save(root / "one.npy", np.array([[1.0]]))
    np.save(root / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(root / "w4asym.npy", np.triu(np.ones((N, N))))
    (root / "text.npy").write_text("this is a text file renamed .npy\n")
    (root / "afile.txt").write_text("just a file\n")
    (root / "adir").mkdir()
    (root / "adir.npy").mkdir()
    np.save(root / "data_nan.npy", np.where(np.eye(K, N) > 0, np.nan, _sphere_rows(rng, K, N)))
    np.save(root / "data5.npy", _sphere_rows(rng, K, N + 1))
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not a run\n")
    (root / "demo_out" / "nuts").mkdir(parents=True)
    (root / "demo_out" / "nuts" / "notes.txt").write_text("not a run\n")

    (root / "spec.toml").write_text(_spec_text())
    (root / "bad.toml").write_text("this is [not toml = = \n")
    (root / "n_huge.toml").write_text(_spec_text(model__N=1e23))
    (root / "n_big.toml").write_text(_spec_text(model__N=200000))
    (root / "n_mem.toml").write_text(_spec_text(model__N=100000))
    (root / "chains.toml").write_text(_spec_text(inference__num_chains=20000))
    (root / "seed.toml").write_text(_spec_text(inference__seed=2**32))
    for name, path in (("empty_data", "empty.npy"), ("text_data", "text.npy"), ("nan_data", "data_nan.npy")):
        (root / f"{name}.toml").write_text(_spec_text().replace(
            '[data]\nsource = "teacher"\nomega = 2.5\nK = 2\nseed = 0', f'[data]\nsource = "file"\npath = "{path}"'))
    (root / "n5_data.toml").write_text(_spec_text(model__N=5).replace(
        '[data]\nsource = "teacher"\nomega = 2.5\nK = 2\nseed = 0', '[data]\nsource = "file"\npath = "data4.npy"'))
    np.save(root / "data4.npy", _sphere_rows(rng, K, N))

    run = write_run(root / "run", rng)
    nc = (run / "inference.nc").read_bytes()
    for name, edit in {
        "run_meta_list": lambda r: (r / "meta.json").write_text("[1, 2, 3]\n"),
        "run_meta_invalid": lambda r: (r / "meta.json").write_text('{"seed": 0, "spec": \n'),
        "run_meta_spec_list": lambda r: (r / "meta.json").write_text('{"seed": 0, "spec": [1]}\n'),
        "run_nc_corrupt": lambda r: (r / "inference.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50),
        "run_nc_truncated": lambda r: (r / "inference.nc").write_bytes(nc[: len(nc) // 2]),
        "run_nc_missing": lambda r: (r / "inference.nc").unlink(),
        "run_data_differs": lambda r: np.save(r / "data.npy", _sphere_rows(np.random.default_rng(1), K, N)),
        "run_data_empty": lambda r: (r / "data.npy").write_bytes(b""),
        "run_data_missing": lambda r: (r / "data.npy").unlink(),
    }.items():
        shutil.copytree(run, root / name)
        edit(root / name)
    return root


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (digest, st.st_mtime_ns, st.st_mode)
    return out


#: A case that fails before any computing returns within this (seconds; sampling would take far longer, its JIT alone more).
FAIL_FAST_S = 5.0
#: ``evidence --json`` into a missing folder: only argument and spec checks run before the failure (seconds).
JSON_CHECK_S = 2.0


def case(case_id: str, argv: str | list[str], *expect: str, memory: int | None = None):
    """One row: argv (a string is split on spaces), the substrings the error line must contain."""
    return pytest.param(argv.split() if isinstance(argv, str) else argv, expect, memory, id=case_id)


T = "teacher --N 4 --K 2 --out d.npy"
CASES = [
    # --- teacher: arguments and output paths (all before any sampling)
    case("teacher-seed-2^32", f"{T} --seed 4294967296", "--seed", "4294967296"),
    case("teacher-seed-negative", f"{T} --seed -1", "--seed", "-1"),
    case("teacher-seed-not-int", f"{T} --seed 1.5", "--seed", "1.5"),
    case("teacher-out-bin", "teacher --N 4 --K 2 --out x.bin", "--out", "x.bin"),
    case("teacher-out-no-folder", "teacher --N 4 --K 2 --out nodir/d.npy", "--out", "nodir/d.npy"),
    case("teacher-out-is-folder", "teacher --N 4 --K 2 --out adir.npy", "--out", "adir.npy"),
    case("teacher-teacher-out-suffix", f"{T} --teacher-out w.txt", "--teacher-out", "w.txt"),
    case("teacher-teacher-out-same", f"{T} --teacher-out d.npy", "--teacher-out", "d.npy"),
    case("teacher-beta-0", f"{T} --beta 0", "--beta", "0"),
    case("teacher-beta-nan", f"{T} --beta nan", "--beta", "nan"),
    case("teacher-beta-inf", f"{T} --beta inf", "--beta", "inf"),
    case("teacher-N-0", "teacher --N 0 --K 2 --out d.npy", "--N", "0"),
    case("teacher-omega-text", f"{T} --omega 2.5,abc", "--omega", "2.5,abc"),
    case("teacher-omega-inf", f"{T} --omega inf", "--omega", "inf"),
    case("teacher-N-missing", "teacher --K 2 --out d.npy", "--N"),
    # --- logz: the matrix file and beta
    case("logz-empty-npy", "logz empty.npy", "empty.npy", "empty"),
    case("logz-3d", "logz w3d.npy", "w3d.npy", "(2, 2, 2)"),
    case("logz-non-square", "logz nonsq.npy", "nonsq.npy", "(2, 3)"),
    case("logz-nan", "logz wnan.npy", "wnan.npy", "nan"),
    case("logz-inf", "logz winf.npy", "winf.npy", "inf"),
    case("logz-text-as-npy", "logz text.npy", "text.npy", "not a NumPy"),
    case("logz-missing", "logz missing.npy", "missing.npy", "not found"),
    case("logz-folder", "logz adir.npy", "adir.npy", "not a file"),
    case("logz-pickled", "logz obj.npy", "obj.npy"),
    case("logz-asymmetric", "logz asym.npy", "asym.npy", "symmetric"),
    case("logz-1x1", "logz one.npy", "one.npy", "N = 1"),
    case("logz-beta-1e308", "logz w.npy --beta 1e308", "--beta", "1e+308"),
    case("logz-beta-0", "logz w.npy --beta 0", "--beta", "0"),
    case("logz-beta-negative", "logz w.npy --beta -1", "--beta", "-1"),
    case("logz-beta-nan", "logz w.npy --beta nan", "--beta", "nan"),
    case("logz-beta-inf", "logz w.npy --beta inf", "--beta", "inf"),
    # --- fit: spec files, data files, --out (all before sampling)
    case("fit-spec-missing", "fit nospec.toml --out r", "nospec.toml", "not found"),
    case("fit-spec-not-toml", "fit bad.toml --out r", "bad.toml", "TOML"),
    case("fit-spec-is-folder", "fit adir --out r", "adir", "folder"),
    case("fit-N-1e23", "fit n_huge.toml --out r", "model.N", "1e+23"),
    case("fit-N-above-max", "fit n_big.toml --out r", "model.N", "200000"),
    case("fit-N-exceeds-memory", "fit n_mem.toml --out r", "model.N", "100000", memory=2**30),
    case("fit-20000-chains", "fit chains.toml --out r", "num_chains", "20000"),
    case("fit-seed-2^32", "fit seed.toml --out r", "inference.seed", "4294967296"),
    case("fit-empty-data-npy", "fit empty_data.toml --out r", "empty.npy", "empty"),
    case("fit-text-data-npy", "fit text_data.toml --out r", "text.npy", "not a NumPy"),
    case("fit-nan-data", "fit nan_data.toml --out r", "data_nan.npy", "nan"),
    case("fit-data-wrong-N", "fit n5_data.toml --out r", "model.N", "5"),
    case("fit-out-not-a-run", "fit spec.toml --out junk", "--out", "junk"),
    case("fit-out-finished-run", "fit spec.toml --out run", "--out", "run", "--overwrite"),
    case("fit-out-is-file", "fit spec.toml --out afile.txt", "--out", "afile.txt"),
    case("fit-out-under-file", "fit spec.toml --out afile.txt/r", "--out", "afile.txt/r"),
    # --- evidence
    case("evidence-json-no-folder", "evidence spec.toml --json /nonexistent/dir/x.json", "--json", "/nonexistent/dir/x.json"),
    case("evidence-json-is-folder", "evidence spec.toml --json adir", "--json", "adir"),
    case("evidence-spec-missing", "evidence nospec.toml", "nospec.toml", "not found"),
    case("evidence-empty-data", "evidence empty_data.toml", "empty.npy", "empty"),
    case("evidence-rungs-0", "evidence spec.toml --rungs 0", "--rungs", "0"),
    case("evidence-samples-text", "evidence spec.toml --samples many", "--samples", "many"),
    case("evidence-no-estimator", "evidence spec.toml --no-ti --no-svi", "--no-ti", "--no-svi"),
    # --- demo
    case("demo-spec-missing", "demo --spec nospec.toml --out d", "nospec.toml", "not found"),
    case("demo-svi-spec-not-toml", "demo --spec spec.toml --svi-spec bad.toml --out d", "bad.toml", "TOML"),
    case("demo-spec-N-too-large", "demo --spec n_big.toml --out d", "model.N", "200000"),
    case("demo-out-is-file", "demo --spec spec.toml --out afile.txt", "--out", "afile.txt"),
    case("demo-out-not-a-run", "demo --spec spec.toml --out demo_out", "--out", "nuts"),
    # --- theory: inputs and results that are not finite
    case("theory-omega-1e300", "theory --omega 1e300 --gamma 0.5 --eta 3", "--omega", "1e+300"),
    case("theory-c-1e300", "theory --c 1e300 --gamma 0.5 --eta 3", "--c", "1e300"),
    case("theory-gamma-0", "theory --c 1.6,0.4 --gamma 0 --eta 3", "--gamma", "0"),
    case("theory-eta-nan", "theory --c 1.6,0.4 --gamma 0.5 --eta nan", "--eta", "nan"),
    case("theory-beta-1e300", "theory --omega 2.5 --gamma 0.5 --eta 3 --beta 1e300", "--beta", "1e+300"),
    case("theory-c-text", "theory --c 1.6,abc --gamma 0.5 --eta 3", "--c", "1.6,abc"),
    case("theory-omega-inf", "theory --omega inf --gamma 0.5 --eta 3", "--omega", "inf"),
    # --- diagnose
    case("diagnose-meta-list", "diagnose run_meta_list", "run_meta_list/meta.json", "list"),
    case("diagnose-meta-invalid-json", "diagnose run_meta_invalid", "run_meta_invalid/meta.json", "JSON"),
    case("diagnose-meta-spec-list", "diagnose run_meta_spec_list", "run_meta_spec_list/meta.json", "spec"),
    case("diagnose-nc-corrupt", "diagnose run_nc_corrupt", "run_nc_corrupt/inference.nc"),
    case("diagnose-nc-truncated", "diagnose run_nc_truncated", "run_nc_truncated/inference.nc"),
    case("diagnose-nc-missing", "diagnose run_nc_missing", "run_nc_missing", "inference.nc"),
    case("diagnose-not-a-folder", "diagnose afile.txt", "afile.txt", "not a folder"),
    case("diagnose-missing", "diagnose norun", "norun", "not found"),
    case("diagnose-out-is-file", "diagnose run --out afile.txt", "--out", "afile.txt"),
    # --- compare
    case("compare-same-run-twice", "compare run run", "run", "twice"),
    case("compare-same-run-two-spellings", "compare run ./run/", "./run/", "twice"),
    case("compare-meta-list", "compare run run_meta_list", "run_meta_list/meta.json", "list"),
    case("compare-meta-invalid-json", "compare run_meta_invalid run", "run_meta_invalid/meta.json", "JSON"),
    case("compare-nc-corrupt", "compare run run_nc_corrupt", "run_nc_corrupt/inference.nc"),
    case("compare-nc-missing", "compare run run_nc_missing", "run_nc_missing", "inference.nc"),
    case("compare-missing", "compare run norun", "norun", "not found"),
    # --- predict
    case("predict-json-under-file", "predict run --json afile.txt/x.json", "--json", "afile.txt/x.json"),
    case("predict-json-no-folder", "predict run --json /nonexistent/dir/x.json", "--json", "/nonexistent/dir/x.json"),
    case("predict-teacher-nan", "predict run --teacher wnan.npy", "--teacher", "wnan.npy", "nan"),
    case("predict-teacher-wrong-shape", "predict run --teacher w.npy", "--teacher", "w.npy", "(3, 3)"),
    case("predict-teacher-asymmetric", "predict run --teacher w4asym.npy", "--teacher", "w4asym.npy", "symmetric"),
    case("predict-teacher-empty", "predict run --teacher empty.npy", "--teacher", "empty.npy", "empty"),
    case("predict-teacher-missing", "predict run --teacher missing.npy", "--teacher", "missing.npy", "not found"),
    case("predict-data-differs", "predict run_data_differs", "run_data_differs/data.npy", "differs"),
    case("predict-data-empty", "predict run_data_empty", "run_data_empty/data.npy", "empty"),
    case("predict-data-missing", "predict run_data_missing", "run_data_missing", "data.npy"),
    case("predict-meta-list", "predict run_meta_list", "run_meta_list/meta.json", "list"),
    case("predict-meta-invalid-json", "predict run_meta_invalid", "run_meta_invalid/meta.json", "JSON"),
    case("predict-nc-corrupt", "predict run_nc_corrupt", "run_nc_corrupt/inference.nc"),
    case("predict-nc-missing", "predict run_nc_missing", "run_nc_missing", "inference.nc"),
    case("predict-not-a-folder", "predict afile.txt", "afile.txt", "not a folder"),
    case("predict-num-points-1", "predict run --num-points 1", "--num-points", "1"),
    case("predict-beta-0", "predict run --beta 0", "--beta", "0"),
    case("predict-beta-negative", "predict run --beta -1", "--beta", "-1"),
    case("predict-beta-nan", "predict run --beta nan", "--beta", "nan"),
    case("predict-beta-inf", "predict run --beta inf", "--beta", "inf"),
    case("predict-seed-2^32", "predict run --seed 4294967296", "--seed", "4294967296"),
    case("predict-seed-negative", "predict run --seed -1", "--seed", "-1"),
]


@pytest.mark.parametrize(("argv", "expect", "memory"), CASES)
def test_bad_input_exits_2_with_one_line(assets, tmp_path, monkeypatch, capfd, argv, expect, memory):
    work = tmp_path / "work"
    shutil.copytree(assets, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(cli, "_use_host_devices", lambda n: None)  # leave this process's JAX devices alone
    if memory is not None:
        monkeypatch.setattr(cli, "_physical_memory", lambda: memory)
    before = _snapshot(work)
    t0 = time.perf_counter()
    rc = main(argv)
    seconds = time.perf_counter() - t0
    out, err = capfd.readouterr()
    assert rc == 2, f"exit {rc}; stdout: {out!r}; stderr: {err!r}"
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    assert lines[0].startswith(f"bayes-sbm {argv[0]}: error: "), lines[0]
    missing = [word for word in expect if word not in lines[0]]
    assert not missing, f"{missing} not named in: {lines[0]}"
    assert _snapshot(work) == before, "a file changed"
    assert seconds < FAIL_FAST_S, f"took {seconds:.1f} s: it computed before failing"


def _fake_teacher_data(key, n, k, omega, beta=1.0):
    """Stands in for the sampler (slow to compile): what matters here is the file the CLI writes."""
    rows = _sphere_rows(np.random.default_rng(3), k, n)
    return SimpleNamespace(data=rows, teacher=SimpleNamespace(W=np.eye(n)))


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_teacher_text_output_is_comma_separated(tmp_path, monkeypatch, capsys, suffix):
    monkeypatch.setattr(cli.teacher, "teacher_student_data", _fake_teacher_data)
    monkeypatch.chdir(tmp_path)
    assert main(["teacher", "--N", "5", "--K", "3", "--out", f"x{suffix}", "--teacher-out", "w.npy"]) == 0
    assert "comma-separated text" in capsys.readouterr().out
    expected = _fake_teacher_data(None, 5, 3, [2.5]).data
    text = (tmp_path / f"x{suffix}").read_text()
    assert len(text.splitlines()) == 3 and all(line.count(",") == 4 for line in text.splitlines())
    assert np.array_equal(np.loadtxt(tmp_path / f"x{suffix}", delimiter=","), expected)  # repr floats: exact
    assert np.array_equal(sbm_data.load_data(tmp_path / f"x{suffix}"), expected)
    assert np.array_equal(np.load(tmp_path / "w.npy"), np.eye(5))
    assert json.loads((tmp_path / f"x{suffix}.json").read_text())["N"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["w.npy", f"x{suffix}", f"x{suffix}.json"])  # no temp files


def test_evidence_json_check_is_before_any_computing(assets, tmp_path, monkeypatch, capfd):
    """``--json`` into a missing folder fails at once, even with settings that would run for minutes."""
    monkeypatch.chdir(assets)
    t0 = time.perf_counter()
    assert main(["evidence", "spec.toml", "--samples", "100000", "--json", "/nonexistent/dir/x.json"]) == 2
    assert time.perf_counter() - t0 < JSON_CHECK_S
    assert "--json" in capfd.readouterr().err


def test_help_and_version_still_exit_normally(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "bayes-sbm" in capsys.readouterr().out


def test_case_table_covers_every_subcommand():
    commands = {p.values[0][0] for p in CASES}
    assert commands == {"teacher", "logz", "fit", "evidence", "demo", "theory", "diagnose", "compare", "predict"}
    assert len(CASES) >= 104
