"""Atomic file output and run metadata (nothing a user wrote is ever half-written).

Every writer here writes to a temporary file in the destination folder and
``os.replace``-s it into place, so a crash leaves either the old file or the
new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "write_text_atomic",
    "write_json_atomic",
    "save_npy_atomic",
    "package_versions",
    "run_metadata",
]

_TRACKED_PACKAGES = ("bayes_sbm", "jax", "jaxlib", "numpyro", "arviz", "numpy", "scipy", "matplotlib", "xarray")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary file is removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
