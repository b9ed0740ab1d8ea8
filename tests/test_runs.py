"""Run folders as transactions (bayes_sbm.runs.fit_spec): staging, refusal, overwrite, crash, lock.

The fit itself is replaced by a stub that writes a complete run's files into the
staging folder (the transaction logic does not depend on what is fitted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bayes_sbm import runs, specs, teacher

SPEC = {
    "model": {"N": 4, "gamma": 1.0, "eta": 1.0},
    "data": {"source": "teacher", "omega": 2.5, "K": 2, "seed": 0},
    "inference": {"num_warmup": 10, "num_samples": 10, "num_chains": 1},
}


@pytest.fixture
def spec():
    return specs.parse_spec(SPEC, source="<test>")


@pytest.fixture
def stub_fit(monkeypatch):
    """Replace the fit by a writer of a run's files; ``calls`` counts fits, ``crash`` makes the next one fail."""
    state = {"calls": 0, "crash": False}

    def fake(spec, problem, data, folder, *, progress_bar, store_W, **kw):
        state["calls"] += 1
        state["data"], state["teacher_W"] = data, kw["teacher_W"]
        (folder / "spec.toml").write_text(spec.to_toml())
        (folder / "data.npy").write_bytes(b"")
        (folder / "inference.nc").write_text("nc")
        if state["crash"]:
            raise KeyboardInterrupt("simulated crash mid-fit")
        (folder / "meta.json").write_text(json.dumps({"call": state["calls"]}))
        return runs.RunData(None, {"call": state["calls"]})

    monkeypatch.setattr(runs, "_fit_into", fake)
    return state


def test_a_run_appears_whole_and_leaves_nothing_beside_it(spec, stub_fit, tmp_path):
    out = tmp_path / "run"
    runs.fit_spec(spec, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert json.loads((out / "meta.json").read_text()) == {"call": 1}


def test_the_fit_gets_the_teacher_drawn_with_the_data(spec, stub_fit, tmp_path):
    """The teacher W* saved as RUN/teacher.npy is the one the data were drawn from (one draw, handed to the fit)."""
    td = teacher.teacher_student_data(jax.random.key(SPEC["data"]["seed"]), 4, 2, 2.5)
    runs.fit_spec(spec, tmp_path / "run")
    np.testing.assert_array_equal(stub_fit["data"], td.data)
    np.testing.assert_array_equal(stub_fit["teacher_W"], td.teacher.W)


def test_check_run_folder(tmp_path):
    """What fit_spec (and the demo, before its fits) accept as a run folder; errors start with the given name."""
    assert runs.check_run_folder(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    runs.check_run_folder(tmp_path / "empty")
    done = tmp_path / "done"
    done.mkdir()
    (done / "inference.nc").write_text("nc")
    (done / "meta.json").write_text("{}")
    runs.check_run_folder(done, overwrite=True)
    with pytest.raises(ValueError, match=r"^RUN: .*done already holds a finished run"):
        runs.check_run_folder(done, what="RUN")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"^--out: .*afile exists and is not a folder"):
        runs.check_run_folder(tmp_path / "afile", overwrite=True)


def test_a_finished_run_is_refused_then_replaced_as_a_whole(spec, stub_fit, tmp_path):
    out = tmp_path / "run"
    runs.fit_spec(spec, out)
    (out / "extra_from_the_old_run.txt").write_text("x")
    with pytest.raises(ValueError, match="--out: .* already holds a finished run"):
        runs.fit_spec(spec, out)
    runs.fit_spec(spec, out, overwrite=True)
    assert not (out / "extra_from_the_old_run.txt").exists()  # replaced as a whole, no leftovers
    assert json.loads((out / "meta.json").read_text()) == {"call": 2}


def test_a_foreign_folder_is_never_written(spec, stub_fit, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "data.npy").write_text("the user's own file")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="--out: .* is not empty and is not a run folder"):
            runs.fit_spec(spec, out, overwrite=overwrite)
    assert (out / "data.npy").read_text() == "the user's own file" and stub_fit["calls"] == 0


def test_a_crash_leaves_no_run_folder_and_the_rerun_completes(spec, stub_fit, tmp_path):
    out = tmp_path / "run"
    stub_fit["crash"] = True
    with pytest.raises(KeyboardInterrupt):
        runs.fit_spec(spec, out)
    assert not out.exists()  # nothing half-written where the run belongs
    assert (tmp_path / ("run" + runs.STAGING_SUFFIX)).is_dir()  # the staging folder (a checkpoint would resume from it)
    assert not (tmp_path / ("run" + runs.LOCK_SUFFIX)).exists()  # the lock is released
    stage = tmp_path / ("run" + runs.STAGING_SUFFIX)
    (stage / "elbo.npy").write_text("from another attempt")  # a leftover that must not end up in the run
    (stage / "checkpoint").mkdir()
    seen = []
    stub_fit["crash"] = False
    original = runs._fit_into

    def spy(spec, problem, data, folder, **kw):
        seen.append(sorted(p.name for p in folder.iterdir()))  # what the rerun starts from
        return original(spec, problem, data, folder, **kw)

    runs._fit_into = spy
    try:
        runs.fit_spec(spec, out)
    finally:
        runs._fit_into = original
    assert seen == [["checkpoint"]]  # only the resumable checkpoint survives a crash
    assert (out / "meta.json").is_file() and not (out / "elbo.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(spec, stub_fit, tmp_path):
    out = tmp_path / "run"
    lock = tmp_path / ("run" + runs.LOCK_SUFFIX)
    lock.write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(ValueError, match="--out: .* is being written by process"):
        runs.fit_spec(spec, out)
    assert stub_fit["calls"] == 0 and not out.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    lock.write_text(dead.stdout.strip())  # a process that has exited (killed mid-fit)
    runs.fit_spec(spec, out)
    assert (out / "meta.json").is_file() and not lock.exists()
