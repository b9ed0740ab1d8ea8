"""Planted teachers, their samples, and data loading with validation (THEORY.md §3).

A teacher SBM ``W* = Σ_k ω_k v_k v_kᵀ`` has spikes ω_k along orthonormal
directions v_k (random unless given).  Its K exact samples form the data
``x_1 … x_K ∈ S_N``; the empirical correlation ``C = (1/N) Σ_a x_a x_aᵀ``
has non-zero eigenvalues ``c_1 ≥ … ≥ c_r`` summing to K.

Data validation, files and spectra live in :mod:`bayes_sbm.data`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .distribution import SphericalBoltzmann

__all__ = [
    "Teacher",
    "TeacherStudentData",
    "planted_teacher",
    "teacher_from_matrix",
    "sample_teacher",
    "teacher_student_data",
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
