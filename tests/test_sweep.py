"""Sweeps (``bayes_sbm.sweep``, ``bayes-sbm sweep``): the grid file, points, resume, failures, the results tables.

Everything but :func:`test_end_to_end_fit_sweep_on_an_in_process_cluster`
replaces the fit (or the evidence/predict report) by a fake that writes a
tiny run folder, so these checks take seconds; the end-to-end test fits two
real points at N = 5 (20 + 20 NUTS draws, one chain) on an in-process Dask
cluster and checks both tables against the run folders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import csv_rows as read_csv

from bayes_sbm import cli, reports, runs, sweep
from bayes_sbm.specs import load_spec
from bayes_sbm.sweep import SweepError, load_sweep, parse_sweep, plan, point_name, run_point, run_sweep

REPO = Path(__file__).resolve().parent.parent
FMO = REPO / "models" / "fmo.toml"
#: The tables hold the run folders' float64 numbers (repr in the CSV); only the summation order of a mean may differ.
TABLE_RTOL = 1e-12
#: The sweep header of most tests: the FMo spec, tiny settings on every point.
HEADER = f'''base = "{FMO}"
task = "fit"
out = "out"

[set]
"inference.num_warmup" = 20
"inference.num_samples" = 20
"inference.num_chains" = 1
'''


def write_sweep(folder: Path, text: str, name: str = "sw.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def client():
    """One in-process Dask cluster (a single thread) for the tests that run sweeps with a fake fit."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


# ---------------------------------------------------------------------------
# a fake fit: a tiny but complete run folder, no sampling
# ---------------------------------------------------------------------------
THEORY = {"phase": "FMo", "lam": [2.0, 1.5], "u": [0.8, 0.0], "signal": [1.9, 0.6], "M": 0.4, "mu": 2.1,
          "log_z_per_n": 0.2, "log_evidence_per_n": 2.2}


def fake_datatree(N: int, seed: int):
    rng = np.random.default_rng(seed)
    chain, draw = 1, 10

    def v(*extra):
        return rng.normal(size=(chain, draw, *extra)) + N

    post = xr.Dataset({"lam_top": (("chain", "draw", "rank"), v(3)), "u": (("chain", "draw", "mode"), v(2)),
                       "signal": (("chain", "draw", "mode"), v(2)), "M": (("chain", "draw"), v()),
                       "mu": (("chain", "draw"), v()), "log_z_per_n": (("chain", "draw"), v())})
    dt = xr.DataTree.from_dict({"/posterior": post})
    dt.attrs["method"] = "nuts"
    return dt


class FakeFit:
    """Stands in for :func:`bayes_sbm.runs.fit_spec`: counts calls, fails where told, writes meta.json and inference.nc."""

    def __init__(self, fail_N=()):
        self.calls = []
        self.fail_N = set(fail_N)

    def __call__(self, spec, out, progress_bar=True, **kwargs):
        self.calls.append(spec.model.N)
        if spec.model.N in self.fail_N:
            raise ValueError(f"planted failure at N = {spec.model.N}\nsecond line")
        out = Path(out)
        out.mkdir(parents=True)
        dt = fake_datatree(spec.model.N, spec.data.seed)
        dt.to_netcdf(out / "inference.nc", engine="h5netcdf")
        meta = {"spec": spec.to_dict(), "theory": THEORY, "latent_summary": {"min_ess_bulk": 9.0, "max_r_hat": 1.01},
                "divergences": 0, "timing": {"wall_s": 0.5}, "warnings": ["w"]}
        (out / "meta.json").write_text(json.dumps(meta))
        return runs.RunData(dt, meta)


# ---------------------------------------------------------------------------
# the file: errors
# ---------------------------------------------------------------------------
GRID = '[grid]\n"model.N" = [5]\n'
#: (label, top-level lines, the rest: more [set] lines and tables, key, reason); the file is top + HEADER + rest.
BAD = [
    ("unknown top-level key", 'tsak = "fit"\n', GRID, "tsak", "unknown key (did you mean 'task'?)"),
    ("unknown grid key", "", '[grid]\n"model.NN" = [5]\n', "grid.model.NN", "unknown spec key (did you mean 'N'?)"),
    ("unknown grid table", "", '[grid]\n"modle.N" = [5]\n', "grid.modle.N", "(did you mean 'model'?)"),
    ("grid key without table", "", '[grid]\nN = [5]\n', "grid.N", "must be a spec key 'table.key'"),
    ("empty list", "", '[grid]\n"model.N" = []\n', "grid.model.N", "must not be an empty list"),
    ("not a list", "", '[grid]\n"model.N" = 5\n', "grid.model.N", "must be a list of values, got int 5"),
    ("empty grid", "", '[grid]\n', "grid", "must name at least one spec key"),
    ("bad value", "", '[grid]\n"model.gamma" = [0.5, -1.0]\n', "grid.model.gamma", "must be > 0, got -1.0"),
    ("wrong type", "", '[grid]\n"model.N" = [5, 6.5]\n', "grid.model.N", "expected an integer, got float 6.5"),
    ("repeated value", "", '[grid]\n"model.gamma" = [1, 1.0]\n', "grid.model.gamma", "repeats the value 1.0"),
    ("value against the base", "", '[grid]\n"model.N" = [2]\n', "grid.model.N", "must be >= K + 1 = 3"),
    ("combination of grid values", "", '[grid]\n"model.N" = [4]\n"data.K" = [1, 4]\n', "grid.model.N",
     "must be >= K + 1 = 5 for teacher data with data.K = 4, got 4 (at the point model.N = 4, data.K = 4)"),
    ("set and grid", "", '"model.N" = 6\n' + GRID, "set.model.N", "is also a grid key"),
    ("bad set value", "", '"model.eta" = 0\n' + GRID, "set.model.eta", "must be > 0, got 0.0"),
    ("table of another task", "", GRID + "[evidence]\nrungs = 2\n", "evidence", "only used with task = 'evidence'"),
]


@pytest.mark.parametrize("label, top, rest, key, reason", BAD, ids=[b[0] for b in BAD])
def test_bad_sweep_files_are_one_line_errors_naming_file_and_key(tmp_path, label, top, rest, key, reason):
    path = write_sweep(tmp_path, top + HEADER + rest)
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message, message


@pytest.mark.parametrize("text, key, reason", [
    ('task = "fitt"\nout = "o"\nbase = "x.toml"\n[grid]\n"model.N" = [5]\n', "task", "must be one of 'fit', 'evidence', 'predict', got 'fitt' (did you mean 'fit'?)"),
    ('task = "fit"\nout = "o"\n[grid]\n"model.N" = [5]\n', "base", "missing required key"),
    ('task = "fit"\nout = "o"\nbase = "nothere.toml"\n[grid]\n"model.N" = [5]\n', "base", "spec file not found"),
    ('task = "fit"\nbase = "{FMO}"\n[grid]\n"model.N" = [5]\n', "out", "missing"),
    ('task = "fit"\nout = "o"\nbase = "{FMO}"\n', "grid", "missing required table [grid]"),
    ('task = "evidence"\nout = "o"\nbase = "{FMO}"\n[grid]\n"model.N" = [5]\n[evidence]\nrungs = 0\n', "evidence.rungs", "must be >= 1, got 0"),
    ('task = "evidence"\nout = "o"\nbase = "{FMO}"\n[grid]\n"model.N" = [5]\n[evidence]\nrung = 3\n', "evidence.rung", "did you mean 'rungs'?"),
    ('task = "predict"\nout = "o"\nbase = "{FMO}"\n[grid]\n"model.N" = [5]\n[predict]\nbeta = "1"\n', "predict.beta", "expected a number"),
])
def test_missing_and_invalid_keys(tmp_path, text, key, reason):
    path = write_sweep(tmp_path, text.replace("{FMO}", str(FMO)))
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: {key}: ") and reason in message, message


def test_unreadable_files_and_bad_base_spec(tmp_path):
    with pytest.raises(SweepError, match=r"nope.toml: sweep file not found$"):
        load_sweep(tmp_path / "nope.toml")
    bad = write_sweep(tmp_path, "task = [\n")
    with pytest.raises(SweepError, match=r"invalid TOML") as info:
        load_sweep(bad)
    assert "\n" not in str(info.value)
    spec = tmp_path / "bad_spec.toml"
    spec.write_text(FMO.read_text().replace("gamma = 0.5", "gamma = -0.5"))
    path = write_sweep(tmp_path, 'task = "fit"\nout = "o"\nbase = "bad_spec.toml"\n[grid]\n"model.N" = [5]\n')
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert str(info.value).startswith(f"{path}: base: ") and "model.gamma: must be > 0" in str(info.value)


# ---------------------------------------------------------------------------
# points and folder names
# ---------------------------------------------------------------------------
def test_points_are_the_cartesian_product_with_deterministic_folders(tmp_path):
    path = write_sweep(tmp_path, HEADER + '[grid]\nmodel.N = [5, 6]\n"model.gamma" = [1, 0.25]\ndata.seed = [0, 3]\n')
    sw = load_sweep(path)
    assert list(sw.grid) == ["model.N", "model.gamma", "data.seed"]
    assert sw.grid["model.gamma"] == (1.0, 0.25)  # validated values: the integer 1 of a float key is 1.0
    assert sw.shape == (2, 2, 2) and len(sw.points) == 8
    assert sw.out == (tmp_path / "out").resolve()  # relative to the sweep file
    first, second, last = sw.points[0], sw.points[1], sw.points[-1]
    assert first.name == "model.N=5__model.gamma=1.0__data.seed=0"
    assert second.name == "model.N=5__model.gamma=1.0__data.seed=3"  # the last key varies fastest
    assert last.name == "model.N=6__model.gamma=0.25__data.seed=3" and last.index == (1, 1, 1)
    assert last.folder == sw.out / last.name
    assert (last.spec.model.N, last.spec.model.gamma, last.spec.data.seed) == (6, 0.25, 3)
    assert last.spec.inference.num_samples == 20 and last.spec.model.eta == 3.0  # [set] and the base
    assert len({p.name for p in sw.points}) == 8
    assert [p.name for p in load_sweep(path).points] == [p.name for p in sw.points]  # deterministic
    assert load_sweep(path, out=tmp_path / "elsewhere").points[0].folder == (tmp_path / "elsewhere" / first.name).resolve()


def test_a_grid_over_spec_files(tmp_path):
    """``[grid] spec = [files]``: the spec is a grid dimension named by the specs' names, each point built on its own spec."""
    path = write_sweep(tmp_path, HEADER.replace(f'base = "{FMO}"\n', "")
                       + f'[grid]\nspec = ["{FMO}", "{REPO / "models" / "sg.toml"}"]\nmodel.N = [5, 6]\n')
    sw = load_sweep(path)
    assert list(sw.grid) == ["spec", "model.N"] and sw.grid["spec"] == ("fmo", "sg") and sw.shape == (2, 2)
    assert [p.name for p in sw.points] == ["spec=fmo__model.N=5", "spec=fmo__model.N=6", "spec=sg__model.N=5", "spec=sg__model.N=6"]
    fmo, sg = load_spec(FMO), load_spec(REPO / "models" / "sg.toml")
    last = sw.points[-1]
    assert (last.spec.model.gamma, last.spec.model.eta, last.spec.model.N) == (sg.model.gamma, sg.model.eta, 6)
    assert sw.points[0].spec.model.gamma == fmo.model.gamma and last.spec.inference.num_samples == 20  # [set] on every spec
    assert sw.to_dict()["base"] == [str(FMO), str(REPO / "models" / "sg.toml")]
    rows = [{**p.values, "point": p.name, "status": "ok", "error": None, "seconds": 1.0, "lam_1_mean": float(i)}
            for i, p in enumerate(sw.points)]
    _, nc_path = sweep.write_results(sw, rows)
    with xr.open_dataset(nc_path, engine="h5netcdf") as ds:
        assert ds["lam_1_mean"].dims == ("spec", "model.N") and list(ds["spec"].values) == ["fmo", "sg"]
        assert ds["lam_1_mean"].sel(spec="sg", **{"model.N": 5}).item() == 2.0


@pytest.mark.parametrize("grid_line, extra, key, reason", [
    ('spec = "x.toml"', "", "grid.spec", "must be a non-empty list of spec file names"),
    ("spec = []", "", "grid.spec", "must be a non-empty list"),
    ('spec = ["nothere.toml"]', "", "grid.spec", "spec file not found"),
    (f'spec = ["{FMO}", "{FMO}"]', "", "grid.spec", "two spec files have the name 'fmo'"),
    (f'spec = ["{FMO}"]', f'base = "{FMO}"\n', "base", "give either base or [grid] spec"),
])
def test_bad_spec_grids(tmp_path, grid_line, extra, key, reason):
    path = write_sweep(tmp_path, extra + HEADER.replace(f'base = "{FMO}"\n', "") + f"[grid]\n{grid_line}\nmodel.N = [5]\n")
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert info.value.key == key and reason in info.value.reason and str(path) in str(info.value)


def test_point_names_of_strings_floats_and_long_grids():
    assert point_name({"model.parametrization": "band", "model.beta": 1e-05, "data.project": True}) == \
        "model.parametrization=band__model.beta=1e-05__data.project=true"
    assert point_name({"data.path": "a/b c.npy"}) == "data.path=a_b_c.npy"
    long = point_name({f"model.k{i}": 123456789 for i in range(20)})
    assert len(long) == sweep.MAX_NAME and long == point_name({f"model.k{i}": 123456789 for i in range(20)})
    assert long != point_name({f"model.k{i}": 123456788 for i in range(20)})


def test_the_example_sweep_file():
    sw = load_sweep(REPO / "models" / "sweeps" / "fmo_n.toml")
    assert sw.name == "fmo_n" and sw.task.kind == "fit" and sw.base.name == "fmo"
    assert [p.name for p in sw.points] == ["model.N=20__data.seed=0", "model.N=20__data.seed=1",
                                          "model.N=40__data.seed=0", "model.N=40__data.seed=1"]
    assert sw.out == (REPO / "runs" / "sweeps" / "fmo_n").resolve()


def test_parse_sweep_from_a_mapping(tmp_path):
    sw = parse_sweep({"base": str(FMO), "task": "evidence", "out": str(tmp_path), "grid": {"model": {"eta": [1, 2]}},
                      "evidence": {"rungs": 3, "max_rungs": 4, "samples": 10, "ti": False}})
    assert sw.name == "sweep" and [p.spec.model.eta for p in sw.points] == [1.0, 2.0]
    assert sw.task.evidence.ladder().num_rungs == 3 and sw.task.settings()["ti"] is False


# ---------------------------------------------------------------------------
# resume and failures (fake fit, in-process cluster)
# ---------------------------------------------------------------------------
def test_resume_skips_finished_points_and_reruns_what_changed(tmp_path, monkeypatch, client):
    fit = FakeFit()
    monkeypatch.setattr(runs, "fit_spec", fit)
    path = write_sweep(tmp_path, HEADER + '[grid]\n"model.N" = [5, 6]\n"data.seed" = [0, 1]\n')
    sw = load_sweep(path)
    assert {s.state for s in plan(sw)} == {"new"}
    seen = []
    first = run_sweep(sw, client=client, on_result=lambda row, done, total: seen.append((row["point"], done, total)))
    assert sorted(fit.calls) == [5, 5, 6, 6] and first.ran == 4 and not first.errors
    assert sorted(d for _, d, _ in seen) == [1, 2, 3, 4] and {t for *_, t in seen} == {4}
    for p in sw.points:
        marker = json.loads((p.folder / "point.json").read_text())
        assert marker["status"] == "ok" and marker["values"] == p.values and (p.folder / "run" / "meta.json").is_file()
    assert {s.state for s in plan(sw)} == {"done"} and sweep.read_rows(sw) == first.rows

    again = run_sweep(sw, client=client, on_result=lambda *a: pytest.fail("nothing should run"))
    assert len(fit.calls) == 4 and again.ran == 0 and again.rows == first.rows

    # a predict sweep on the same points reuses the fitted runs (no new fit) and predicts
    monkeypatch.setattr(reports, "predict_run", fake_predict)
    pred = load_sweep(write_sweep(tmp_path, HEADER.replace('task = "fit"', 'task = "predict"')
                                  + '[grid]\n"model.N" = [5, 6]\n"data.seed" = [0, 1]\n[predict]\nnum_points = 50\n', "pred.toml"))
    assert {s.state for s in plan(pred)} == {"changed"}
    out = run_sweep(pred, client=client, on_result=lambda *a: None)
    assert len(fit.calls) == 4 and not out.errors
    assert all(r["fwd_pp_per_n"] == 0.25 and r["lam_1_mean"] == first.rows[i]["lam_1_mean"] for i, r in enumerate(out.rows))
    assert json.loads((pred.points[0].folder / "predict.json").read_text())["args"][1] == 1.0  # beta: the spec's predictive.beta

    # a changed [set] gives other specs: the old run folders are not silently reused
    changed = load_sweep(write_sweep(tmp_path, HEADER.replace("= 20\n", "= 21\n", 1) + '[grid]\n"model.N" = [5, 6]\n"data.seed" = [0, 1]\n',
                                     "changed.toml"))
    assert {s.state for s in plan(changed)} == {"changed"}
    res = run_sweep(changed, client=client, on_result=lambda *a: None)
    assert len(fit.calls) == 4 and len(res.errors) == 4
    assert all("holds a finished run of another spec" in r["error"] for r in res.errors)


def fake_predict(run_dir, beta, key, teacher_W, num_points, **kwargs):
    entry = {"per_n": 0.25, "se_per_n": 0.01}
    return {"args": [str(run_dir), beta, num_points], "typical": {"forward": entry, "reverse": entry},
            "predictive": {"forward": entry, "reverse": entry},
            "theory": {"fwd_typ": 0.3, "rev_typ": 0.3, "fwd_pp": 0.2, "rev_pp": None}, "warnings": []}


def test_a_failing_point_is_recorded_and_the_others_finish(tmp_path, monkeypatch, client):
    fit = FakeFit(fail_N={6})
    monkeypatch.setattr(runs, "fit_spec", fit)
    sw = load_sweep(write_sweep(tmp_path, HEADER + '[grid]\n"model.N" = [5, 6, 7]\n'))
    res = run_sweep(sw, client=client, on_result=lambda *a: None)
    assert sorted(fit.calls) == [5, 6, 7]
    status = {r["point"]: (r["status"], r["error"]) for r in res.rows}
    assert status["model.N=5"] == ("ok", None) and status["model.N=7"] == ("ok", None)
    assert status["model.N=6"] == ("error", "ValueError: planted failure at N = 6 second line")  # one line
    marker = json.loads((sw.out / "model.N=6" / "point.json").read_text())
    assert marker["status"] == "error" and "Traceback" in marker["traceback"]
    table = read_csv(res.csv)
    assert [(r["model.N"], r["status"]) for r in table] == [("5", "ok"), ("6", "error"), ("7", "ok")]
    assert table[1]["error"] == status["model.N=6"][1] and table[1]["lam_1_mean"] == ""
    with xr.open_dataset(res.netcdf, engine="h5netcdf") as ds:
        assert list(ds["status"].values) == ["ok", "error", "ok"] and math.isnan(float(ds["lam_1_mean"].sel({"model.N": 6})))
    assert sweep.format_progress(res.rows[1], 2, 3) == "[2/3] model.N=6: error: " + status["model.N=6"][1]

    fit.fail_N.clear()  # the rerun runs the failed point only
    again = run_sweep(sw, client=client, on_result=lambda *a: None)
    assert sorted(fit.calls) == [5, 6, 6, 7] and again.ran == 1 and not again.errors


def test_evidence_point_and_table(tmp_path, monkeypatch):
    """No Dask: run_point and write_results are plain functions."""
    calls = []

    def fake_evidence(spec, *, ladder, svi_steps, ti, svi, progress_bar):
        calls.append((spec.model.gamma, ladder.num_rungs, ladder.max_rungs, ladder.num_samples, svi_steps, ti, svi))
        est = {"per_n": spec.model.gamma, "se_per_n": 0.01, "log_evidence": 1.0, "se": 0.05}
        return {"theory_per_n": 2.2, "phase": "FMo", "estimators": {"ti": est, "elbo": est}, "seconds": {"ti": 1.0, "svi": 2.0},
                "warnings": ["x"]}

    monkeypatch.setattr(reports, "evidence_report", fake_evidence)
    sw = load_sweep(write_sweep(tmp_path, HEADER.replace('task = "fit"', 'task = "evidence"')
                                + '[grid]\n"model.gamma" = [0.5, 0.75]\n[evidence]\nrungs = 3\nmax_rungs = 5\nsamples = 40\nsvi_steps = 30\n'))
    rows = [run_point(p, sw.task) for p in sw.points]
    assert calls == [(0.5, 3, 5, 40, 30, True, True), (0.75, 3, 5, 40, 30, True, True)]
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[1]["ti_per_n"] == 0.75 and rows[0]["stepping_stone_per_n"] is None
    assert rows[0]["evidence_s"] == 3.0 and rows[0]["log_evidence_per_n_theory"] == 2.2
    assert json.loads((sw.points[0].folder / "evidence.json").read_text())["phase"] == "FMo"
    assert {s.state for s in plan(sw)} == {"done"}
    csv_path, nc_path = sweep.write_results(sw, rows)
    assert read_csv(csv_path)[1]["ti_per_n"] == "0.75"
    with xr.open_dataset(nc_path, engine="h5netcdf") as ds:
        assert ds["ti_per_n"].dims == ("model.gamma",) and list(ds["model.gamma"].values) == [0.5, 0.75]
        assert np.isnan(ds["importance_per_n"].values).all() and ds.attrs["task"] == "evidence"


def test_pinned_env():
    env = sweep.pinned_env({"XLA_FLAGS": "--xla_dump_to=/tmp/x"})
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert sweep.pinned_env({"XLA_FLAGS": "intra_op_parallelism_threads=2"})["XLA_FLAGS"] == \
        "intra_op_parallelism_threads=2 --xla_cpu_multi_thread_eigen=false"  # the user's setting wins


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------
def test_cli_dry_run_and_errors(tmp_path, capsys):
    path = write_sweep(tmp_path, HEADER + '[grid]\n"data.seed" = [0, 1]\n')
    assert cli.main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 points over data.seed (2); 0 finished, 2 to run" in out and "new      data.seed=1" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    bad = write_sweep(tmp_path, HEADER + '[grid]\n"data.seed" = []\n', "bad.toml")
    assert cli.main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"bayes-sbm sweep: error: {bad}: grid.data.seed: must not be an empty list\n"
    assert cli.main(["sweep", str(path), "--workers", "0"]) == 2
    assert "--workers: must be an integer >= 1" in capsys.readouterr().err


def test_cli_run_reports_failed_points_and_exits_1(tmp_path, capsys, monkeypatch):
    path = write_sweep(tmp_path, HEADER + '[grid]\n"data.seed" = [0, 1]\n')
    seen = {}

    def fake_run_sweep(sw, *, scheduler, workers, on_result, log):
        seen.update(scheduler=scheduler, workers=workers)
        rows = [{"point": p.name, "status": "ok", "seconds": 1.0} for p in sw.points]
        rows[1] |= {"status": "error", "error": "ValueError: boom"}
        for i, row in enumerate(rows):
            on_result(row, i + 1, len(rows))
        return sweep.SweepResult(rows, 2, sw.out / "results.csv", sw.out / "results.nc")

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    assert cli.main(["sweep", str(path), "--scheduler", "tcp://h:1", "--workers", "3", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert seen == {"scheduler": "tcp://h:1", "workers": 3}
    assert "[1/2]" not in out and "[2/2] data.seed=1: error: ValueError: boom" in out  # --quiet keeps the failures
    assert "1 of 2 points ok (2 run now, 0 finished before); 1 failed:\n  data.seed=1: error: ValueError: boom" in out
    assert "results.csv, results.nc" in out


# ---------------------------------------------------------------------------
# end to end: real fits on an in-process cluster
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_fit_sweep_on_an_in_process_cluster(tmp_path):
    path = write_sweep(tmp_path, HEADER + '"model.N" = 5\n[grid]\n"data.seed" = [0, 1]\n')
    sw = load_sweep(path)
    lines = []
    res = run_sweep(sw, workers=1, processes=False, on_result=lambda row, done, total: lines.append(sweep.format_progress(row, done, total)))
    assert not res.errors, res.errors
    assert len(lines) == 2 and sorted(line.split()[1].rstrip(":") for line in lines) == ["data.seed=0", "data.seed=1"]
    assert all(": ok (" in line for line in lines) and {line.split()[0] for line in lines} == {"[1/2]", "[2/2]"}
    table = read_csv(sw.out / "results.csv")
    assert list(table[0])[:4] == ["data.seed", "point", "status", "error"]
    ds = xr.open_dataset(sw.out / "results.nc", engine="h5netcdf")
    assert ds["lam_1_mean"].dims == ("data.seed",) and list(ds["data.seed"].values) == [0, 1]
    for i, p in enumerate(sw.points):
        dt, meta = runs.load_run(p.folder / "run")
        assert meta["spec"]["model"]["N"] == 5 and meta["spec"]["data"]["seed"] == i
        lam1 = float(np.mean(dt["posterior"]["lam_top"].values[..., 0]))
        mu = float(np.mean(dt["posterior"]["mu"].values))
        assert table[i]["status"] == "ok" and table[i]["point"] == p.name
        assert float(table[i]["lam_1_mean"]) == pytest.approx(lam1, rel=TABLE_RTOL)
        assert float(ds["lam_1_mean"].sel({"data.seed": i})) == pytest.approx(lam1, rel=TABLE_RTOL)
        assert float(ds["mu_mean"].sel({"data.seed": i})) == pytest.approx(mu, rel=TABLE_RTOL)
        assert float(ds["M_theory"].sel({"data.seed": i})) == pytest.approx(meta["theory"]["M"], rel=TABLE_RTOL)
        assert float(table[i]["u_1_theory"]) == pytest.approx(meta["theory"]["u"][0], rel=TABLE_RTOL)
        assert str(ds["phase"].sel({"data.seed": i}).values) == meta["theory"]["phase"]
        assert math.isfinite(float(table[i]["lam_1_mcse"])) and float(table[i]["divergences"]) == meta["divergences"]
    ds.close()
    assert json.loads((sw.out / "sweep.json").read_text())["points"] == [p.name for p in sw.points]
    again = run_sweep(sw, on_result=lambda *a: pytest.fail("finished points must be skipped"))  # no cluster is started
    assert again.ran == 0 and read_csv(again.csv) == table


def test_the_readme_example_is_the_example_file():
    import tomllib

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Sweeps"):]
    block = section[section.index("```toml") + len("```toml"): section.index("```", section.index("```toml") + 1)]
    from_readme = parse_sweep(tomllib.loads(block), source="README.md", base_dir=REPO / "models" / "sweeps")
    from_file = load_sweep(REPO / "models" / "sweeps" / "fmo_n.toml")
    assert from_readme.name == from_file.name and from_readme.task == from_file.task and from_readme.out == from_file.out
    assert from_readme.grid == from_file.grid and from_readme.fixed == from_file.fixed
    assert [p.spec for p in from_readme.points] == [p.spec for p in from_file.points]


def test_run_point_on_a_finished_point_returns_its_row_without_running(tmp_path, monkeypatch):
    """A task that Dask sends again (its worker died after finishing it) must not recompute the point."""
    calls = []

    def fake_evidence(spec, *, ladder, svi_steps, ti, svi, progress_bar):
        calls.append(spec.model.gamma)
        est = {"per_n": 0.5, "se_per_n": 0.01, "log_evidence": 1.0, "se": 0.05}
        return {"theory_per_n": 0.4, "phase": "FMo", "estimators": {"ti": est}, "seconds": {"ti": 1.0}, "warnings": []}

    monkeypatch.setattr(reports, "evidence_report", fake_evidence)
    sw = load_sweep(write_sweep(tmp_path, HEADER.replace('task = "fit"', 'task = "evidence"') + '[grid]\n"model.gamma" = [0.5]\n'))
    first = run_point(sw.points[0], sw.task)
    again = run_point(sw.points[0], sw.task, release_compiled=True)
    assert calls == [0.5] and again == json.loads(json.dumps(first))
