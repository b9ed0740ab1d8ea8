"""Shared fixtures and helpers: a seeded NumPy generator, GOE spectra, script runs and CSV checks.

GOE spectra come from the Dumitriu–Edelman tridiagonal model (β = 1): its
eigenvalues have exactly the GOE joint law, and it costs O(N²) instead of the
O(N³) of diagonalising a dense matrix, which keeps large-N checks cheap.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import runpy
from pathlib import Path

# One thread per test process (make test runs one worker per core; THEORY.md §2: oversubscribed eigh is 10x slower).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.linalg import eigvalsh_tridiagonal  # noqa: E402

import bayes_sbm  # noqa: F401,E402  (switches JAX to float64 before any test imports jax arrays)

#: Seed of the per-test NumPy generator (fixed: every check is reproducible).
RNG_SEED = 20240611


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed for each test."""
    return np.random.default_rng(RNG_SEED)


def goe_eigenvalues(rng: np.random.Generator, n: int, edge: float = 1.0) -> np.ndarray:
    """Ascending eigenvalues of an N×N GOE matrix scaled so the semicircle edge is ``edge``.

    Dumitriu–Edelman: diag ~ N(0, 2), off-diagonal k ~ χ_{N−k}; this is the
    spectrum of a GOE with off-diagonal variance 1 (semicircle radius 2√N).
    """
    diag = rng.normal(0.0, np.sqrt(2.0), size=n)
    off = np.sqrt(rng.chisquare(np.arange(n - 1, 0, -1)))
    return eigvalsh_tridiagonal(diag, off) * (edge / (2.0 * np.sqrt(n)))


@pytest.fixture
def goe():
    """The :func:`goe_eigenvalues` helper as a fixture."""
    return goe_eigenvalues


#: The repository root (scripts in analysis/ and benchmarks/ are run from their paths).
ROOT = Path(__file__).resolve().parents[1]


def run_script_main(script, *args: str) -> str:
    """``main(args)`` of a study or benchmark script in this process (no subprocess, no timeout); its stdout.

    ``os.environ`` is restored afterwards (the scripts pin threads); ``SystemExit`` (``--help``) counts as its code.
    """
    saved, buf = dict(os.environ), io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            main = runpy.run_path(str(ROOT / script), run_name="_smoke")["main"]
            try:
                rc = main(list(args))
            except SystemExit as exc:  # --help
                rc = exc.code
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert rc == 0, buf.getvalue()[-3000:]
    return buf.getvalue()


def csv_rows(path) -> list[dict]:
    """The rows of a CSV file as dicts of text cells (header keys)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_finite(rows, cols) -> None:
    """There are rows, and every cell of ``cols`` in each reads as a finite float."""
    assert rows
    for r in rows:
        for c in cols:
            assert math.isfinite(float(r[c])), (c, r)
