"""Planted teachers, their samples, and data loading with validation (THEORY.md §3).

A teacher SBM ``W* = Σ_k ω_k v_k v_kᵀ`` has spikes ω_k along orthonormal
directions v_k (random unless given).  Its K exact samples form the data
``x_1 … x_K ∈ S_N``; the empirical correlation ``C = (1/N) Σ_a x_a x_aᵀ``
has non-zero eigenvalues ``c_1 ≥ … ≥ c_r`` summing to K.

Data files (``.npy`` or ``.csv``, shape (K, N)) are validated: wrong shape,
NaN/inf or rows off the sphere raise a ``ValueError`` naming the row and its
norm; rows are projected onto the sphere only with ``project=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .distribution import SPHERE_RTOL, SphericalBoltzmann
from .io import save_npy_atomic

__all__ = [
    "Teacher",
    "TeacherStudentData",
    "DataSpectrum",
    "planted_teacher",
    "teacher_from_matrix",
    "sample_teacher",
    "teacher_student_data",
    "validate_data",
    "load_data",
    "save_data",
    "data_spectrum",
]


class Teacher(NamedTuple):
    """A planted teacher.

    Attributes
    ----------
    W : ndarray, shape (N, N)
        Symmetric couplings W*.
    spikes : ndarray, shape (r,)
        ω_k (descending).
    directions : ndarray, shape (N, r)
        Orthonormal v_k (columns).
    """

    W: np.ndarray
    spikes: np.ndarray
    directions: np.ndarray


class TeacherStudentData(NamedTuple):
    """Samples of a teacher: ``data`` shape (K, N) and the ``teacher``."""

    data: np.ndarray
    teacher: Teacher


class DataSpectrum(NamedTuple):
    """Spectrum of ``C = (1/N) Σ_a x_a x_aᵀ``: non-zero eigenvalues ``c`` (r,), descending, and eigenvectors ``e`` (N, r)."""

    c: np.ndarray
    e: np.ndarray


def _as_spikes(omega) -> np.ndarray:
    spikes = np.atleast_1d(np.asarray(omega, dtype=np.float64))
    if spikes.ndim != 1 or spikes.size == 0:
        raise ValueError(f"omega: expected one or more spike strengths, got {omega!r}")
    if not np.all(np.isfinite(spikes)):
        raise ValueError(f"omega: spike strengths must be finite, got {spikes.tolist()}")
    return np.sort(spikes)[::-1]


def planted_teacher(key, N: int, omega, directions=None) -> Teacher:
    """Teacher ``W* = Σ_k ω_k v_k v_kᵀ`` with random orthonormal (or given) directions.

    Parameters
    ----------
    key : PRNGKey
        Draws the directions (Haar-random r-frame) when ``directions`` is None.
    N : int
        Dimension, ≥ 2 and > number of spikes.
    omega : float or sequence of float
        Spike strengths ω_k.
    directions : array_like, shape (N, r), optional
        Orthonormal columns; validated.
    """
    spikes = _as_spikes(omega)
    N = int(N)
    if N < 2 or N < spikes.size:
        raise ValueError(f"N: need N >= max(2, number of spikes = {spikes.size}), got N = {N}")
    if directions is None:
        g = np.asarray(jax.random.normal(key, (N, spikes.size), dtype=jnp.float64))
        q, r = np.linalg.qr(g)
        directions = q * np.sign(np.diag(r))
    else:
        directions = np.asarray(directions, dtype=np.float64)
        if directions.shape != (N, spikes.size):
            raise ValueError(f"directions: expected shape {(N, spikes.size)}, got {directions.shape}")
        gram = directions.T @ directions
        if not np.allclose(gram, np.eye(spikes.size), atol=1e-10):
            raise ValueError("directions: columns are not orthonormal")
    W = (directions * spikes) @ directions.T
    return Teacher(W=0.5 * (W + W.T), spikes=spikes, directions=directions)


def teacher_from_matrix(W) -> Teacher:
    """Wrap a user-supplied symmetric W* (its non-zero eigenpairs become the spikes)."""
    W = np.asarray(W, dtype=np.float64)
    SphericalBoltzmann(W)  # validates shape, finiteness, symmetry
    lam, vec = np.linalg.eigh(W)
    scale = max(1.0, float(np.max(np.abs(lam))))
    keep = np.abs(lam) > 1e-12 * scale
    order = np.argsort(lam[keep])[::-1]
    return Teacher(W=W, spikes=lam[keep][order], directions=vec[:, keep][:, order])


def sample_teacher(key, teacher: Teacher, K: int, beta: float = 1.0) -> np.ndarray:
    """K exact samples of ``p(x | W*, β)``, shape (K, N), float64, rows on the sphere."""
    K = int(K)
    if K < 1:
        raise ValueError(f"K: need at least one sample, got K = {K}")
    x = SphericalBoltzmann(teacher.W, beta).sample(key, (K,))
    return np.asarray(x, dtype=np.float64)


def teacher_student_data(key, N: int, K: int, omega, beta: float = 1.0) -> TeacherStudentData:
    """Draw a planted teacher and K samples from it (THEORY.md §3)."""
    k_dir, k_data = jax.random.split(key)
    teacher = planted_teacher(k_dir, N, omega)
    return TeacherStudentData(data=sample_teacher(k_data, teacher, K, beta), teacher=teacher)


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
    arr = np.asarray(x, dtype=np.float64)
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
    norms = np.sqrt(np.sum(arr * arr, axis=1))
    if np.any(norms == 0):
        row = int(np.argmax(norms == 0))
        raise ValueError(f"{name}: row {row} is zero and cannot lie on the sphere")
    off = np.abs(norms**2 / N - 1.0) > rtol
    if off.any():
        if project:
            return arr * (np.sqrt(N) / norms)[:, None]
        row = int(np.argmax(off))
        raise ValueError(
            f"{name}: row {row} is not on the sphere |x|^2 = N = {N}: its norm is {norms[row]:.6g}, "
            f"expected sqrt(N) = {np.sqrt(N):.6g} (pass project=True / --project to rescale rows)"
        )
    return arr


def load_data(path: str | os.PathLike, *, project: bool = False) -> np.ndarray:
    """Load data (K, N) from ``.npy`` or ``.csv`` (comma separated, no header) and validate it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix in (".csv", ".txt"):
        try:
            arr = np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError as exc:
            raise ValueError(f"{path}: not a numeric CSV ({exc})") from None
    else:
        raise ValueError(f"{path}: unknown data format {suffix!r} (use .npy or .csv)")
    return validate_data(arr, name=str(path), project=project)


def save_data(path: str | os.PathLike, data) -> Path:
    """Write data atomically as ``.npy`` or ``.csv`` (by suffix)."""
    path = Path(path)
    data = validate_data(data)
    if path.suffix.lower() == ".csv":
        from .io import write_text_atomic

        lines = [",".join(repr(float(v)) for v in row) for row in data]
        return write_text_atomic(path, "\n".join(lines) + "\n")
    return save_npy_atomic(path, data)


def data_spectrum(data) -> DataSpectrum:
    """Non-zero eigenpairs of ``C = XᵀX/N`` via the K×K Gram matrix (THEORY.md §3).

    Returns ``c`` (descending, sums to K) and orthonormal ``e`` (N, r).
    """
    X = validate_data(data)
    K, N = X.shape
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    c = s**2 / N
    keep = c > 1e-12 * max(1.0, float(c.max()))
    return DataSpectrum(c=c[keep], e=vt[keep].T)
