"""Tests of ``bayes_sbm.teacher``: planted teachers, their data, file I/O (THEORY.md §2–3)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from bayes_sbm.data import data_spectrum, load_data, save_data, validate_data
from bayes_sbm.distribution import SPHERE_RTOL, SphericalBoltzmann
from bayes_sbm.teacher import planted_teacher, teacher_student_data

#: Orthonormality / eigenvalues of a QR frame and of W = Σω v vᵀ: float64 rounding times N.
FRAME_ATOL = 1e-12
#: Rows of sampled data: |x|²/N − 1 after float64 normalisation and an orthogonal rotation (a few ulps);
#: looser than 1e-12 would hide the sampler's off-sphere bug, which does not occur at the N used here.
ROW_NORM_RTOL = 1e-12
#: Σ_k c_k = tr C = (1/N) Σ_a |x_a|² = K up to rounding of the SVD.
TRACE_ATOL = 1e-12
#: c = (2 − 1/ω, 1/ω) at large N; overlaps of two condensed samples fluctuate by O(1/√N) with an O(1)
#: prefactor (spread ≈ 0.03 across seeds at N = 400): allow 4/√N = 0.2.
C_FLUCT_COEFF = 4.0


def test_planted_teacher_structure():
    n, omega = 30, [3.0, 1.5, -0.5]
    t = planted_teacher(jax.random.PRNGKey(0), n, omega)
    assert t.W.shape == (n, n) and t.directions.shape == (n, 3)
    np.testing.assert_array_equal(t.W, t.W.T)
    np.testing.assert_allclose(t.directions.T @ t.directions, np.eye(3), rtol=0, atol=FRAME_ATOL)
    np.testing.assert_array_equal(t.spikes, np.sort(omega)[::-1])
    expected = np.sort(np.concatenate([omega, np.zeros(n - 3)]))
    np.testing.assert_allclose(np.linalg.eigvalsh(t.W), expected, rtol=0, atol=FRAME_ATOL * n)
    for k, w in enumerate(t.spikes):  # W v_k = ω_k v_k
        np.testing.assert_allclose(t.W @ t.directions[:, k], w * t.directions[:, k], rtol=0, atol=FRAME_ATOL * n)


def test_planted_teacher_given_directions_and_errors():
    n = 6
    frame = np.eye(n)[:, :2]
    t = planted_teacher(jax.random.PRNGKey(0), n, [2.0, 1.0], directions=frame)
    np.testing.assert_allclose(t.W, np.diag([2.0, 1.0, 0, 0, 0, 0]), atol=0)
    with pytest.raises(ValueError, match="directions"):
        planted_teacher(jax.random.PRNGKey(0), n, [2.0, 1.0], directions=np.ones((n, 2)))
    with pytest.raises(ValueError, match="directions"):
        planted_teacher(jax.random.PRNGKey(0), n, [2.0, 1.0], directions=frame[:, :1])
    with pytest.raises(ValueError, match="N"):
        planted_teacher(jax.random.PRNGKey(0), 1, 2.0)
    with pytest.raises(ValueError, match="omega"):
        planted_teacher(jax.random.PRNGKey(0), n, np.nan)


def test_rank_one_teacher_large_n_limit():
    """THEORY §2: W* = ω v vᵀ, ω = 2.5 > 1 condenses: (1/N) log Z* → ½(ω − 1 − log ω), M → 1 − 1/ω (N = 2000)."""
    n, omega = 2000, 2.5
    t = planted_teacher(jax.random.PRNGKey(1), n, omega)
    d = SphericalBoltzmann(t.W)
    # exact finite-N correction to (1/N) log Z is O(log N / N) (measured ≈ 1.06/N, i.e. O(1) in log Z)
    assert abs(float(d.log_normalizer) / n - 0.5 * (omega - 1 - math.log(omega))) <= math.log(n) / n
    # condensate: finite-N correction O(1/N) (measured ≈ 0.13/N): allow 1/N
    assert abs(float(d.condensate) - (1 - 1 / omega)) <= 1.0 / n


def test_teacher_student_data_rows_and_reproducibility():
    n, k = 40, 3
    a = teacher_student_data(jax.random.PRNGKey(4), n, k, 2.0)
    b = teacher_student_data(jax.random.PRNGKey(4), n, k, 2.0)
    c = teacher_student_data(jax.random.PRNGKey(5), n, k, 2.0)
    assert a.data.shape == (k, n) and a.data.dtype == np.float64
    np.testing.assert_allclose(np.sum(a.data**2, axis=1) / n, 1.0, rtol=0, atol=ROW_NORM_RTOL)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.teacher.W, b.teacher.W)
    assert not np.allclose(a.data, c.data)
    assert not np.allclose(a.teacher.directions, c.teacher.directions)


def test_data_spectrum_rank_one_teacher_two_samples():
    """THEORY §3: ω = 2.5, K = 2 gives c = (2 − 1/ω, 1/ω) at large N; Σc = K exactly; e orthonormal."""
    n, k, omega = 400, 2, 2.5
    data = teacher_student_data(jax.random.PRNGKey(0), n, k, omega).data
    spec = data_spectrum(data)
    assert spec.c.shape == (2,) and spec.e.shape == (n, 2)
    assert abs(spec.c.sum() - k) <= TRACE_ATOL
    np.testing.assert_allclose(spec.c, [2 - 1 / omega, 1 / omega], rtol=0, atol=C_FLUCT_COEFF / math.sqrt(n))
    np.testing.assert_allclose(spec.e.T @ spec.e, np.eye(2), rtol=0, atol=FRAME_ATOL)
    # independent: eigenpairs of C = XᵀX/N
    C = data.T @ data / n
    np.testing.assert_allclose(C @ spec.e, spec.e * spec.c, rtol=0, atol=FRAME_ATOL * n)


# ---------------------------------------------------------------------------
# Data files and validation
# ---------------------------------------------------------------------------


def _good_data(rng, k=4, n=7):
    g = rng.standard_normal((k, n))
    return g * np.sqrt(n / np.sum(g * g, axis=1, keepdims=True))


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_save_load_round_trip(rng, tmp_path, suffix):
    data = _good_data(rng)
    path = save_data(tmp_path / f"x{suffix}", data)
    assert path.exists()
    np.testing.assert_array_equal(load_data(path), data)  # csv writes repr(float): exact round trip


def test_nan_row_is_named(rng, tmp_path):
    data = _good_data(rng)
    data[2, 3] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        validate_data(data)
    path = tmp_path / "bad.npy"
    np.save(path, data)
    with pytest.raises(ValueError, match=r"bad\.npy.*row 2"):
        load_data(path)


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)], ids=["1d", "3d"])
def test_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"shape|1-D"):
        validate_data(np.ones(shape))


def test_row_off_sphere_names_row_and_norm(rng, tmp_path):
    data = _good_data(rng, n=9)
    data[1] *= 1.5  # norm 1.5·√9 = 4.5
    with pytest.raises(ValueError, match=r"row 1.*norm is 4\.5\b"):
        validate_data(data)
    path = tmp_path / "off.csv"
    np.savetxt(path, data, delimiter=",")
    with pytest.raises(ValueError, match=r"row 1"):
        load_data(path)
    projected = load_data(path, project=True)
    np.testing.assert_allclose(np.sum(projected**2, axis=1), 9.0, rtol=1e-12)
    np.testing.assert_allclose(projected[1], data[1] / 1.5, rtol=1e-12)
    np.testing.assert_allclose(projected[0], data[0], rtol=1e-12)
    # within the tolerance nothing is rescaled (float32 round trip is accepted as is)
    f32 = data.astype(np.float32).astype(np.float64)
    f32[1] /= 1.5
    assert np.all(np.abs(np.sum(f32**2, axis=1) / 9 - 1) < SPHERE_RTOL)
    np.testing.assert_array_equal(validate_data(f32), f32)


def test_zero_row_rejected_even_with_project(rng):
    data = _good_data(rng)
    data[0] = 0.0
    with pytest.raises(ValueError, match="row 0"):
        validate_data(data, project=True)


def test_missing_file_and_unknown_suffix(rng, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_data(tmp_path / "nope.npy")
    path = tmp_path / "data.json"
    path.write_text("[[1, 2]]")
    with pytest.raises(ValueError, match="unknown"):
        load_data(path)
