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
  (the aligned frame of the model and of the band representation, §8);
* :func:`read_data` — a raw data file (finite (K, N), any norms), the input of
  a :class:`DataTransform`;
* :class:`DataTransform` — the preparation of raw rows for the model
  (optional centring by the mean of the training rows, optional projection
  onto the sphere), fitted on the training rows and applied unchanged to
  held-out and generated data; :func:`save_transform` /
  :func:`load_transform` (``RUN/transform.npz``, data only);
* :func:`split_rows` / :func:`prepare_data` — a train/held-out split of the
  rows of one file and the fitted transform.

Data preparation (``[data]`` ``center`` and ``project`` of a spec)
------------------------------------------------------------------
``apply(x) = P(x − m)`` where ``m`` is the mean of the training rows (zero
when ``center`` is false) and ``P`` rescales each row onto ``|y|² = N`` (the
identity when ``project`` is false: the rows must then already lie on the
sphere).  Projection is overflow-safe (rows are divided by a common scale
before any square is taken).  ``invert(y) = s·y/√N + m`` with ``s`` the mean
norm of the centred training rows (``s = √N`` without projection): the norm
of each row is lost in the projection, so inverted rows (e.g. generated
samples, for display) all get the training rows' mean norm.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .distribution import SPHERE_RTOL
from .io import atomic_path, load_npy, save_npy_atomic, write_text_atomic

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
    "ZERO_ROW_RTOL",
    "DataTransform",
    "PreparedData",
    "read_data",
    "split_rows",
    "prepare_data",
    "save_transform",
    "load_transform",
]

#: File suffixes understood by :func:`load_data` and :func:`save_data`.
DATA_SUFFIXES = (".npy", ".csv", ".txt")
#: Data eigenvalues below this fraction of the largest are numerical zeros (rank deficiency).
RANK_RTOL = 1e-12
#: A centred row shorter than this fraction of max(|x|, |mean|) is zero up to the rounding of the mean:
#: it has no direction and cannot be projected onto the sphere.
ZERO_ROW_RTOL = 1e-10


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


def _finite_rows(x, name: str) -> np.ndarray:
    """A finite float64 array of shape (K, N), K ≥ 1, N ≥ 2 (no norm check); one-line errors naming ``name`` and the row."""
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
    if arr.shape[0] < 1 or arr.shape[1] < 2:
        raise ValueError(f"{name}: need K >= 1 rows and N >= 2 columns, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{name}: row {row} has a non-finite value {arr[row, col]} in column {col}")
    return arr


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
    arr = _finite_rows(x, name)
    K, N = arr.shape
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
    return validate_data(read_data(path), name=str(path), project=project)


def read_data(path: str | os.PathLike) -> np.ndarray:
    """Raw data (K, N) from a data file: finite, float64, rows of any norm (see :func:`load_data` for the formats and errors).

    The input of :meth:`DataTransform.apply` (centring and projection come after reading).
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
        arr = load_npy(path)  # a real numeric array (load_npy rejects complex, object and text dtypes)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": reported below as a shape error
                arr = np.loadtxt(path, delimiter=",", ndmin=2)  # float64
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a numeric CSV ({_first_line(exc)})") from None
    return _finite_rows(arr, str(path))


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


# ---------------------------------------------------------------------------
# Data preparation: centring, projection, train/held-out split
# ---------------------------------------------------------------------------


class DataTransform(NamedTuple):
    """The map from raw data rows to points on the sphere, fitted on the training rows.

    ``apply(x) = P(x − mean)`` (``P``: rescale each row onto ``|y|² = N`` when
    ``project``; without projection the centred rows must already lie on the
    sphere) and ``invert(y) = (mean_norm/√N)·y + mean`` (projected) or
    ``y + mean``.  The norm of a row is lost in the projection: ``invert``
    gives every row the mean norm of the centred training rows, which is
    meant for display of generated samples in the data's units.

    Attributes
    ----------
    mean : ndarray, shape (N,)
        Per-coordinate mean of the training rows (zeros when ``center`` is false).
    center : bool
    project : bool
    mean_norm : float
        Mean Euclidean norm of the centred training rows (before projection).
    """

    mean: np.ndarray
    center: bool
    project: bool
    mean_norm: float

    @property
    def N(self) -> int:
        """Number of coordinates."""
        return int(self.mean.shape[0])

    @property
    def is_identity(self) -> bool:
        """No centring and no projection (``apply`` only checks that rows lie on the sphere)."""
        return not self.center and not self.project

    @classmethod
    def identity(cls, N: int) -> "DataTransform":
        """The transform of data already on the sphere (teacher data, runs written before transforms were recorded)."""
        return cls(np.zeros(int(N)), False, False, math.sqrt(int(N)))

    @classmethod
    def fit(cls, train, *, center: bool = False, project: bool = False, name: str = "data") -> "DataTransform":
        """The transform of the training rows ``train`` (K, N): their mean (when ``center``) and mean centred norm.

        Overflow-safe: rows are divided by their largest |entry| before the mean and norms are taken.
        """
        X = _finite_rows(train, name)
        scale = float(np.max(np.abs(X)))
        scale = scale if scale > 0 else 1.0
        Xs = X / scale
        mean_s = Xs.mean(axis=0) if center else np.zeros(X.shape[1])
        with np.errstate(over="ignore"):
            mean_norm = float(np.mean(_row_norms(Xs - mean_s))) * scale
        return cls(mean_s * scale, bool(center), bool(project), mean_norm)

    def apply(self, x, *, name: str = "x") -> np.ndarray:
        """Raw rows (K, N) → points on the sphere (K, N); one-line ``ValueError`` naming ``name`` and the row.

        Rejected: non-finite values, a wrong number of columns, rows that are
        zero after centring (``|x − mean| ≤ ZERO_ROW_RTOL·max(|x|, |mean|)``:
        no direction to project), and, without projection, rows off the sphere.
        """
        X = _finite_rows(x, name)
        if X.shape[1] != self.N:
            raise ValueError(f"{name}: has N = {X.shape[1]} columns, the transform of the run's data has N = {self.N}")
        if not self.center:
            return validate_data(X, name=name, project=self.project)
        scale = max(float(np.max(np.abs(X))), float(np.max(np.abs(self.mean))))
        scale = scale if scale > 0 else 1.0
        Xs, ms = X / scale, self.mean / scale
        Ys = Xs - ms
        ref = np.maximum(_row_norms(Xs), float(_row_norms(ms[None])[0]))
        zero = _row_norms(Ys) <= ZERO_ROW_RTOL * ref
        if zero.any():
            row = int(np.argmax(zero))
            raise ValueError(
                f"{name}: row {row} is zero after subtracting the training mean (center = true) and cannot be projected onto the sphere"
            )
        if self.project:
            return validate_data(Ys, name=name, project=True)
        with np.errstate(over="ignore"):
            return validate_data(Ys * scale, name=name, project=False)

    def invert(self, y) -> np.ndarray:
        """Points on the sphere (..., N) → the data's coordinates: ``(mean_norm/√N)·y + mean`` (projected) or ``y + mean``.

        The per-row norm of the raw data is not recoverable after projection;
        every row gets the training rows' mean (centred) norm.
        """
        Y = np.asarray(y, dtype=np.float64)
        if Y.ndim < 1 or Y.shape[-1] != self.N:
            raise ValueError(f"y: expected shape (..., N) with N = {self.N}, got {Y.shape}")
        if self.project:
            Y = Y * (self.mean_norm / math.sqrt(self.N))
        return Y + self.mean

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (``mean``, ``center``, ``project``, ``mean_norm``) for ``np.savez``; :meth:`from_arrays` inverts it."""
        return {
            "mean": np.asarray(self.mean, dtype=np.float64),
            "center": np.asarray(bool(self.center)),
            "project": np.asarray(bool(self.project)),
            "mean_norm": np.asarray(float(self.mean_norm), dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays, *, name: str = "transform") -> "DataTransform":
        """The transform from :meth:`to_arrays` output (or an ``.npz`` file's contents); ``ValueError`` naming ``name``."""
        missing = [k for k in ("mean", "center", "project", "mean_norm") if k not in arrays]
        if missing:
            raise ValueError(f"{name}: missing {', '.join(missing)} (expected mean, center, project, mean_norm)")
        mean = np.asarray(arrays["mean"])
        if mean.ndim != 1 or mean.shape[0] < 2 or mean.dtype.kind not in "iuf" or not np.all(np.isfinite(mean)):
            raise ValueError(f"{name}: mean must be a finite real vector of length N >= 2, got shape {mean.shape}, dtype {mean.dtype}")
        flags = {}
        for key in ("center", "project"):
            v = np.asarray(arrays[key])
            if v.shape != () or v.dtype != bool:
                raise ValueError(f"{name}: {key} must be a boolean scalar, got shape {v.shape}, dtype {v.dtype}")
            flags[key] = bool(v)
        norm = np.asarray(arrays["mean_norm"])
        if norm.shape != () or norm.dtype.kind not in "iuf" or not float(norm) > 0:
            raise ValueError(f"{name}: mean_norm must be a number > 0, got {norm!r}")
        if not flags["center"] and np.any(mean != 0):
            raise ValueError(f"{name}: center is false but mean is not zero")
        return cls(mean.astype(np.float64), flags["center"], flags["project"], float(norm))

    def as_meta(self) -> dict:
        """JSON-ready summary (the mean vector itself lives in the ``.npz``)."""
        return {"center": bool(self.center), "project": bool(self.project), "mean_norm": float(self.mean_norm), "N": self.N}


class PreparedData(NamedTuple):
    """The training points (on the sphere), the raw held-out rows and the transform fitted on the training rows.

    Attributes
    ----------
    train : ndarray, shape (K_train, N)
        ``transform.apply`` of the training rows.
    heldout_raw : ndarray, shape (K_heldout, N), or None
        Held-out rows in the coordinates of the data file (apply ``transform`` to evaluate them).
    transform : DataTransform
    train_rows, heldout_rows : ndarray of int
        Row numbers in the data file (``heldout_rows`` empty without a split of that file).
    """

    train: np.ndarray
    heldout_raw: np.ndarray | None
    transform: DataTransform
    train_rows: np.ndarray
    heldout_rows: np.ndarray


def split_rows(K: int, train_rows=None, *, name: str = "train_rows", file: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """``(train, heldout)`` row numbers of a file with K rows: ``train_rows`` (ascending) and the rest.

    ``train_rows=None`` trains on every row.  ``ValueError`` naming ``name``
    for an empty list, a non-integer, a duplicate or an index outside ``0 … K−1``.
    """
    K = int(K)
    if train_rows is None:
        return np.arange(K), np.arange(0)
    rows = list(train_rows)
    if not rows:
        raise ValueError(f"{name}: must list at least one row")
    if any(isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)) for r in rows):
        bad = next(r for r in rows if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)))
        raise ValueError(f"{name}: row numbers must be integers, got {bad!r}")
    out = [int(r) for r in rows if not 0 <= int(r) < K]
    if out:
        raise ValueError(f"{name}: row {out[0]} is out of range: {file} has {K} rows (0 to {K - 1})")
    idx = np.asarray(rows, dtype=np.int64)
    uniq, counts = np.unique(idx, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"{name}: row {int(uniq[np.argmax(counts > 1)])} is listed twice")
    return uniq, np.setdiff1d(np.arange(K), uniq)


def prepare_data(raw, *, center: bool = False, project: bool = False, train_rows=None, name: str = "data",
                 rows_name: str = "train_rows") -> PreparedData:
    """Split raw rows (K, N) into training and held-out rows, fit the transform on the training rows, apply it.

    Every row of ``raw`` is transformed once (errors name its row number in
    ``raw``, i.e. in the file ``name``), so a held-out row that cannot be
    projected fails here, before any fitting.

    Parameters
    ----------
    raw : array_like, shape (K, N)
        Finite rows of any norm (e.g. :func:`read_data`).
    center, project : bool
        See :class:`DataTransform`.
    train_rows : sequence of int, optional
        Training row numbers (the rest is held out); default every row.
    name, rows_name : str
        How errors name the data and ``train_rows``.
    """
    X = _finite_rows(raw, name)
    tr, ho = split_rows(X.shape[0], train_rows, name=rows_name, file=name)
    transform = DataTransform.fit(X[tr], center=center, project=project, name=name)
    Y = transform.apply(X, name=name)
    return PreparedData(Y[tr], X[ho] if ho.size else None, transform, tr, ho)


def save_transform(path: str | os.PathLike, transform: DataTransform) -> Path:
    """Write ``transform.to_arrays()`` atomically as an ``.npz`` (data only; read back with :func:`load_transform`)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **transform.to_arrays())
    return Path(path)


def load_transform(path: str | os.PathLike) -> DataTransform:
    """A :class:`DataTransform` from an ``.npz`` of :func:`save_transform` (no pickles); one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: transform file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile/NumPy raise many types for a corrupt file; all mean "unreadable"
        raise ValueError(f"{path}: not a readable .npz transform ({_first_line(exc)})") from None
    return DataTransform.from_arrays(arrays, name=str(path))
