"""Atomic file output and run metadata (nothing a user wrote is ever half-written).

Every writer here writes to a temporary file in the destination folder and
``os.replace``-s it into place, so a crash leaves either the old file or the
new one, never a torn one. New files get the usual mode ``0o666 & ~umask``
(not the ``0600`` of a temporary file), and a failed write (a full disk)
leaves no hidden temporary file behind and raises one line naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import dask
import numpy as np

__all__ = [
    "process_umask",
    "atomic_path",
    "write_text_atomic",
    "write_netcdf_atomic",
    "write_json_atomic",
    "save_npy_atomic",
    "load_npy",
    "package_versions",
    "run_metadata",
]

_TRACKED_PACKAGES = ("bayes_sbm", "jax", "jaxlib", "numpyro", "arviz", "numpy", "scipy", "matplotlib", "xarray")


@functools.cache
def process_umask() -> int:
    """The process umask, read once (``/proc/self/status`` where available, else set-and-restore under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it: do it once, atomically w.r.t. our threads
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def _write_error(exc: OSError, path: Path) -> OSError:
    """A one-line ``OSError`` naming the destination (not the hidden temporary file)."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    message = f"cannot write {path}: {reason}"
    return OSError(exc.errno, message) if exc.errno is not None else OSError(message)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary file (hidden, in the destination folder) gets the mode a
    new file would get, ``0o666 & ~umask``, before it replaces ``path``. If
    the block raises, it is removed and ``path`` is left as it was; an
    ``OSError`` (a full disk, a read-only folder) is re-raised as one line
    naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(exc, path) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~process_umask())
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _write_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


def write_netcdf_atomic(path: str | os.PathLike, obj) -> Path:
    """Write an xarray Dataset/DataTree as netCDF (h5netcdf) atomically.

    The write runs with Dask's synchronous scheduler: xarray picks its file
    lock from the active Dask scheduler, and a distributed client alive in
    the process (e.g. a sweep's) would otherwise give it a distributed lock.
    """
    with dask.config.set(scheduler="synchronous"), atomic_path(path, suffix=".nc") as tmp:
        obj.to_netcdf(tmp, engine="h5netcdf")
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON (NumPy scalars and arrays allowed) atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_json_default, allow_nan=True) + "\n")


def save_npy_atomic(path: str | os.PathLike, array) -> Path:
    """``np.save`` atomically (the path keeps its name; no '.npy' is appended)."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array))
    return Path(path)


#: The first bytes of every ``.npy`` file (NumPy format specification).
NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """A real numeric array from a ``.npy`` file, or a one-line error naming the file.

    ``FileNotFoundError`` for a missing file; ``ValueError`` for a folder, an
    empty file, a file that is not ``.npy`` (a text file renamed ``.npy``),
    a truncated one, a pickled object array or a non-numeric dtype.
    ``name`` (default the path) starts the message.
    """
    path = Path(path)
    name = str(path) if name is None else name
    if not path.exists():
        raise FileNotFoundError(f"{name}: file not found")
    if not path.is_file():
        raise ValueError(f"{name}: not a file")
    with open(path, "rb") as fh:
        head = fh.read(len(NPY_MAGIC))
    if not head:
        raise ValueError(f"{name}: the file is empty (expected a NumPy .npy array)")
    if head != NPY_MAGIC:
        raise ValueError(f"{name}: not a NumPy .npy file (no .npy header; a text file renamed .npy?)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{name}: not a readable NumPy .npy array ({first})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: must hold a real numeric array, got dtype {getattr(arr, 'dtype', type(arr).__name__)}")
    return arr


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_metadata(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Seed, versions, command line and any extra fields, for storing next to results."""
    meta: dict[str, Any] = {"seed": seed, "versions": package_versions(), "argv": list(sys.argv)}
    meta.update(extra)
    return meta
