"""Atomic writes (``bayes_sbm.io``): the umask is honoured, a failing writer leaves the old file, a full disk leaves nothing."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bayes_sbm import cli, io


@pytest.fixture
def umask():
    """Set the process umask for one test (and the cached value io reads); restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)
        io.process_umask.cache_clear()

    yield set_mask
    os.umask(old)
    io.process_umask.cache_clear()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


WRITERS = {
    "text": lambda p: io.write_text_atomic(p, "hello\n"),
    "json": lambda p: io.write_json_atomic(p, {"a": np.float64(1.5), "b": np.arange(2)}),
    "npy": lambda p: io.save_npy_atomic(p, np.eye(2)),
}


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("writer", WRITERS)
def test_new_files_honour_the_umask(tmp_path, umask, mask, expected, writer):
    umask(mask)
    path = tmp_path / f"out.{writer}"
    WRITERS[writer](path)
    assert _mode(path) == expected
    assert _listing(tmp_path) == [path.name]


def test_replacing_a_file_also_takes_the_umask_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "x.txt"
    path.write_text("old")
    path.chmod(0o600)
    io.write_text_atomic(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o644


def test_process_umask_is_the_real_one_and_read_once(umask, monkeypatch):
    umask(0o027)
    assert io.process_umask() == 0o027
    calls = []
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or 0o027)
    assert io.process_umask() == 0o027 and calls == []  # cached: the umask is not touched again


def test_a_writer_that_raises_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "result.json"
    io.write_json_atomic(path, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(path) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            assert tmp.parent == tmp_path and tmp.name.startswith(".result.json.")  # hidden, next to the target
            raise RuntimeError("boom")
    assert json.loads(path.read_text()) == {"v": 1}
    assert _listing(tmp_path) == ["result.json"]


def _assert_one_line_naming(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text and str(path) in text and "No space left on device" in text
    assert exc.errno == errno.ENOSPC


def test_full_disk_during_a_text_write(tmp_path, monkeypatch):
    path = tmp_path / "notes.txt"
    path.write_text("old contents")
    real_write_text = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError) as info:
        io.write_text_atomic(path, "new contents that do not fit")
    _assert_one_line_naming(info.value, path)
    monkeypatch.undo()
    assert path.read_text() == "old contents"
    assert _listing(tmp_path) == ["notes.txt"]  # no partial file, no hidden temporary file


def test_full_disk_during_an_npy_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "W.npy"

    def full(fh, array, *args, **kwargs):
        fh.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(OSError) as info:
        io.save_npy_atomic(path, np.eye(3))
    _assert_one_line_naming(info.value, path)
    assert _listing(tmp_path) == []


def test_full_disk_when_creating_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "x.json"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    with pytest.raises(OSError) as info:
        io.write_json_atomic(path, {})
    _assert_one_line_naming(info.value, path)
    assert _listing(tmp_path) == []


def test_cli_reports_a_full_disk_as_one_line_naming_the_file(tmp_path, monkeypatch, capfd):
    """``bayes-sbm teacher`` on a full disk: exit 2, one line naming the output, nothing left behind."""
    rows = np.full((2, 4), 1.0)
    monkeypatch.setattr(cli.teacher, "teacher_student_data",
                        lambda *a, **k: SimpleNamespace(data=rows, teacher=SimpleNamespace(W=np.eye(4))))

    def full(fh, array, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["teacher", "--N", "4", "--K", "2", "--out", "d.npy"]) == 2
    out, err = capfd.readouterr()
    assert len(err.splitlines()) == 1 and "Traceback" not in out + err
    assert "d.npy" in err and "No space left on device" in err and "[Errno" not in err
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param(b"", "the file is empty", id="empty"),
        pytest.param(b"1,2,3\n4,5,6\n", "not a NumPy .npy file", id="text-renamed"),
        pytest.param(None, "not a readable NumPy .npy array", id="truncated"),
        pytest.param("object", "not a readable NumPy .npy array", id="pickled-objects"),
        pytest.param("complex", "must hold a real numeric array, got dtype complex128", id="complex"),
    ],
)
def test_load_npy_errors_are_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "W.npy"
    if content is None:
        np.save(path, np.eye(50))
        path.write_bytes(path.read_bytes()[:200])
    elif content == "object":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "complex":
        np.save(path, np.eye(2) * 1j)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        io.load_npy(path, "--teacher W.npy")
    text = str(info.value)
    assert text.startswith("--teacher W.npy: ") and message in text and "\n" not in text


def test_load_npy_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy: file not found"):
        io.load_npy(tmp_path / "nope.npy")
    with pytest.raises(ValueError, match="not a file"):
        io.load_npy(tmp_path)
    np.save(tmp_path / "ok.npy", np.arange(3))
    assert io.load_npy(tmp_path / "ok.npy").tolist() == [0, 1, 2]
