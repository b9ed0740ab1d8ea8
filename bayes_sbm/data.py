"""Data on the sphere: validation, loading, saving, spectrum and frame (THEORY.md §3).

K data points ``x_1 … x_K ∈ S_N`` (rows of a (K, N) array, ``|x|² = N``)
have the empirical correlation ``C = (1/N) Σ_a x_a x_aᵀ`` with non-zero
eigenvalues ``c_1 ≥ … ≥ c_r`` (summing to K) and eigenvectors ``e_k``.

* :func:`validate_data` — shape, finiteness and norm checks with one-line
  errors naming the row; optional projection onto the sphere (overflow-safe:
  rows are scaled by their largest entry before any square is taken);
* :func:`load_data` / :func:`save_data` — ``.npy``, ``.csv`` or ``.txt``
  (comma separated) by suffix, atomic writes;
* :func:`data_spectrum` — ``c`` and ``e`` from the K×K Gram matrix;
* :func:`data_frame` — an orthogonal Q whose first r columns are the ``e_k``
  (the aligned frame of the model and of the band representation, §8).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .distribution import SPHERE_RTOL
from .io import load_npy, save_npy_atomic, write_text_atomic

__all__ = [
    "SPHERE_RTOL",
    "DATA_SUFFIXES",
    "DataSpectrum",
    "DataFrame",
    "validate_data",
    "load_data",
    "save_data",
    "data_spectrum",
    "data_frame",
]

#: File suffixes understood by :func:`load_data` and :func:`save_data`.
DATA_SUFFIXES = (".npy", ".csv", ".txt")
#: Data eigenvalues below this fraction of the largest are numerical zeros (rank deficiency).
RANK_RTOL = 1e-12


class DataSpectrum(NamedTuple):
    """Spectrum of ``C = (1/N) Σ_a x_a x_aᵀ``: non-zero eigenvalues ``c`` (r,), descending, and eigenvectors ``e`` (N, r)."""

    c: np.ndarray
    e: np.ndarray


class DataFrame(NamedTuple):
    """The data in the frame of its correlation eigenvectors.

    Attributes
    ----------
    Q : ndarray, shape (N, N)
        Orthogonal; ``Q[:, :r]`` are the data eigenvectors e_k (descending c_k).
    c : ndarray, shape (r,)
        Non-zero eigenvalues of ``C = XᵀX/N``.
    aligned : ndarray, shape (K, N)
        ``X Q`` (zero beyond the first r columns up to rounding).
    """

    Q: np.ndarray
    c: np.ndarray
    aligned: np.ndarray


def _row_norms(arr: np.ndarray) -> np.ndarray:
    """Euclidean row norms without overflow or underflow (scaled by each row's largest |entry|)."""
    top = np.max(np.abs(arr), axis=1)
    safe = np.where(top > 0, top, 1.0)
    return top * np.sqrt(np.sum((arr / safe[:, None]) ** 2, axis=1))


def validate_data(x, *, name: str = "data", project: bool = False, rtol: float = SPHERE_RTOL) -> np.ndarray:
    """Check data of shape (K, N): finite rows on the sphere ``|x|² = N``.

    Parameters
    ----------
    x : array_like, shape (K, N)
    name : str
        Used in error messages (e.g. the file name).
    project : bool
        Rescale rows onto the sphere instead of rejecting them (never silent:
        only when asked).  Zero rows are always rejected.
    rtol : float
        Allowed relative deviation of ``|x|²/N`` from 1.

    Returns
    -------
    ndarray, shape (K, N), float64
    """
    if np.iscomplexobj(x):
        raise ValueError(f"{name}: expected a real array of shape (K, N), got complex values")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a numeric array of shape (K, N), got {type(x).__name__}") from None
    if arr.ndim == 1:
        raise ValueError(f"{name}: expected a 2-D array of shape (K, N) with one point per row, got a 1-D array of length {arr.shape[0]}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape (K, N), got {arr.shape}")
    K, N = arr.shape
    if K < 1 or N < 2:
        raise ValueError(f"{name}: need K >= 1 rows and N >= 2 columns, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{name}: row {row} has a non-finite value {arr[row, col]} in column {col}")
    norms = _row_norms(arr)
    if np.any(norms == 0):
        row = int(np.argmax(norms == 0))
        raise ValueError(f"{name}: row {row} is zero and cannot lie on the sphere")
    off = np.abs((norms / np.sqrt(N)) ** 2 - 1.0) > rtol
    if off.any():
        if project:
            top = np.max(np.abs(arr), axis=1)
            return (arr / top[:, None]) * (np.sqrt(N) / (norms / top))[:, None]
        row = int(np.argmax(off))
        raise ValueError(
            f"{name}: row {row} is not on the sphere |x|^2 = N = {N}: its norm is {norms[row]:.6g}, "
            f"expected sqrt(N) = {np.sqrt(N):.6g} (set project = true in the spec's [data] table, or project=True, to rescale rows)"
        )
    return arr


def load_data(path: str | os.PathLike, *, project: bool = False) -> np.ndarray:
    """Load data (K, N) from ``.npy`` or ``.csv``/``.txt`` (comma separated, no header) and validate it.

    Every failure is a one-line ``ValueError`` (``FileNotFoundError`` for a
    missing file) naming the file: an empty or truncated file, a text file
    renamed ``.npy``, a pickled or complex array, non-numeric text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}" if not path.exists() else f"data file {path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise ValueError(f"{path}: unknown data format {suffix!r} (use {', '.join(DATA_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (expected {'a NumPy .npy array' if suffix == '.npy' else 'comma-separated rows'} of shape (K, N))")
    if suffix == ".npy":
        arr = load_npy(path)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": reported below as a shape error
                arr = np.loadtxt(path, delimiter=",", ndmin=2)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a numeric CSV ({_first_line(exc)})") from None
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{path}: expected a real numeric array of shape (K, N), got dtype {arr.dtype}")
    return validate_data(arr, name=str(path), project=project)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def save_data(path: str | os.PathLike, data) -> Path:
    """Write data atomically as ``.npy`` or comma-separated ``.csv``/``.txt`` (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise ValueError(f"{path}: unknown data format {suffix!r} (use {', '.join(DATA_SUFFIXES)})")
    data = validate_data(data)
    if suffix in (".csv", ".txt"):
        lines = [",".join(repr(float(v)) for v in row) for row in data]
        return write_text_atomic(path, "\n".join(lines) + "\n")
    return save_npy_atomic(path, data)


def data_spectrum(data) -> DataSpectrum:
    """Non-zero eigenpairs of ``C = XᵀX/N`` via the K×K Gram matrix (THEORY.md §3).

    Returns ``c`` (descending, sums to K) and orthonormal ``e`` (N, r).
    """
    X = validate_data(data)
    K, N = X.shape
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    c = s**2 / N
    keep = c > RANK_RTOL * max(1.0, float(c.max()))
    return DataSpectrum(c=c[keep], e=vt[keep].T)


def data_frame(data) -> DataFrame:
    """Orthogonal frame whose first r axes are the data eigenvectors (THEORY.md §3, §8)."""
    X = validate_data(data)
    spec = data_spectrum(X)
    q, r = np.linalg.qr(spec.e, mode="complete")
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q[:, : spec.e.shape[1]] *= signs
    return DataFrame(Q=q, c=spec.c, aligned=X @ q)
