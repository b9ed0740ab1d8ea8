"""Generation from a run's posterior predictive, mapped back through its data transform, and image grids.

* :func:`bayes_sbm.reports.generate_samples` on a hand-built run folder
  (stored coupling draws, no NUTS: fast) whose two draws are rank-one spikes
  ``±ω v vᵀ``: the mixture's second moment along v against the exact value
  from Kummer's function (THEORY.md §2: one non-zero eigenvalue ℓ gives
  ``Z = ₁F₁(½; N/2; Nℓ/2)``), at β ≠ 1 so that β must be applied; the
  samples lie on the sphere and map back exactly through the inverse of the
  run's recorded transform;
* :func:`bayes_sbm.plots.image_grid` — the PNG and its one-line errors;
* ``bayes-sbm generate RUN`` — files written, and one-line errors (exit 2)
  naming the argument and the value, with nothing written.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import xarray as xr
from scipy.special import hyp1f1

from bayes_sbm import plots, reports
from bayes_sbm.cli import main
from bayes_sbm.data import DataTransform, save_transform
from bayes_sbm.io import save_npy_atomic, write_json_atomic, write_netcdf_atomic

N = 6
OMEGA = 6.0
BETA = 0.25
NUM = 1024
#: Monte Carlo check of a mean of NUM i.i.d. values: 4 standard errors (false alarm ~6e-5).
MC_SE = 4.0
#: The inverse transform and the sphere norm are exact up to a few roundings of O(1) numbers.
EXACT_RTOL = 1e-12


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder of two stored coupling draws ``±ω v vᵀ``, data on the sphere, a centring-and-projecting transform."""
    root = tmp_path_factory.mktemp("gen")
    run = root / "run"
    run.mkdir()
    rng = np.random.default_rng(7)
    v = rng.normal(size=N)
    v /= np.linalg.norm(v)
    W = np.stack([OMEGA * np.outer(v, v), -OMEGA * np.outer(v, v)])[None]  # (chain 1, draw 2, N, N)
    raw = rng.normal(size=(3, N)) * 3.0 + 5.0
    transform = DataTransform.fit(raw, center=True, project=True)
    data = transform.apply(raw)
    dims2 = {"chain": [0], "draw": [0, 1]}
    post = xr.Dataset({"W": (["chain", "draw", "row", "col"], W)},
                      coords=dims2 | {"row": np.arange(N), "col": np.arange(N)})
    obs = xr.Dataset({"x": (["point", "dim"], data)}, coords={"point": np.arange(3), "dim": np.arange(N)})
    const = xr.Dataset({"gamma": 1.0, "eta": 1.0, "beta": 1.0})
    tree = xr.DataTree.from_dict({"/posterior": post, "/observed_data": obs, "/constant_data": const})
    write_netcdf_atomic(run / "inference.nc", tree)
    write_json_atomic(run / "meta.json", {"N": N, "K": 3, "method": "nuts"})
    save_npy_atomic(run / "data.npy", data)
    save_transform(run / "transform.npz", transform)
    return run, v, transform


def _kummer_second_moment(ell: float) -> float:
    """E[(v·x)²/N] of the SBM with the single eigenvalue ℓ along v: (2/N) ∂ log ₁F₁(½; N/2; Nℓ/2)/∂ℓ."""
    a, b, z = 0.5, N / 2, N * ell / 2
    return (a / b) * hyp1f1(a + 1, b + 1, z) / hyp1f1(a, b, z)


def test_generated_samples_follow_the_mixture_and_map_back(run_folder):
    run, v, transform = run_folder
    g = reports.generate_samples(run, jax.random.key(3), NUM, BETA)
    assert g.points.shape == g.data.shape == (NUM, N) and g.num_draws == 2 and g.beta == BETA
    np.testing.assert_allclose(np.sum(g.points**2, axis=1), N, rtol=EXACT_RTOL)
    # mapped back: the inverse transform of the sphere points, every row at the training rows' mean norm from the mean
    np.testing.assert_allclose(g.data, g.points * (transform.mean_norm / math.sqrt(N)) + transform.mean, rtol=EXACT_RTOL)
    np.testing.assert_allclose(np.linalg.norm(g.data - transform.mean, axis=1), transform.mean_norm, rtol=EXACT_RTOL)
    assert g.transform == transform.as_meta()
    np.testing.assert_array_equal(reports.generate_samples(run, jax.random.key(3), NUM, BETA).data, g.data)  # same key, same draws
    # P_pp = ½ p(·|β ω v vᵀ) + ½ p(·|−β ω v vᵀ): the mean of (v·x)²/N, against Kummer's function
    y2 = (g.points @ v) ** 2 / N
    exact = 0.5 * (_kummer_second_moment(BETA * OMEGA) + _kummer_second_moment(-BETA * OMEGA))
    se = y2.std(ddof=1) / math.sqrt(NUM)
    assert abs(y2.mean() - exact) < MC_SE * se, (y2.mean(), exact, se)
    # β matters: at β = 1 the exact value differs by more than twice the tolerance (the check above could fail)
    other = 0.5 * (_kummer_second_moment(OMEGA) + _kummer_second_moment(-OMEGA))
    assert abs(other - exact) > 2 * MC_SE * se


def test_generate_samples_checks_arguments_before_sampling(run_folder):
    run, _, _ = run_folder
    with pytest.raises(ValueError, match=r"^num_samples: "):
        reports.generate_samples(run, jax.random.key(5), 0, 1.0)
    with pytest.raises(ValueError, match=r"^beta: "):
        reports.generate_samples(run, jax.random.key(5), 8, -1.0)
    with pytest.raises(ValueError, match=r"^max_draws: "):
        reports.generate_samples(run, jax.random.key(5), 8, 1.0, max_draws=0)
    assert reports.run_coupling_draws(run).shape == (1, 2, N, N)
    assert reports.run_coupling_draws(run, max_draws=1).shape == (1, 1, N, N)


def test_image_grid_writes_a_png_and_rejects_bad_input(tmp_path):
    images = np.arange(5 * 6, dtype=float).reshape(5, 6)
    path = plots.image_grid(images, tmp_path / "grid.png", (2, 3), title="five images")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plots._last_figures["grid.png"]
    shown = [ax.images[0].get_array() for ax in fig.axes]
    assert len(shown) == 5
    np.testing.assert_array_equal(np.asarray(shown[4]), images[4].reshape(2, 3))  # row-major, one axis per row
    for bad, match in (
        (np.ones((5, 7)), r"^images: 7 values per row, shape 2x3 needs 6$"),
        (np.ones(6), r"^images: expected shape \(M, H\*W\)"),
        (np.array([[1.0, 2, 3, 4, 5, np.nan]]), r"^images: row 0 has a non-finite value$"),
    ):
        with pytest.raises(ValueError, match=match):
            plots.image_grid(bad, tmp_path / "bad.png", (2, 3))
    with pytest.raises(ValueError, match=r"^shape: must be two positive integers"):
        plots.image_grid(images, tmp_path / "bad.png", (0, 6))
    assert not (tmp_path / "bad.png").exists()


def test_cli_generate_writes_npy_and_png(run_folder, tmp_path, capsys):
    run, _, transform = run_folder
    out = tmp_path / "gen"
    rc = main(["generate", str(run), "--num", "6", "--beta", "0.5", "--image-shape", "2x3", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = np.load(out / "generated.npy", allow_pickle=False)
    assert data.shape == (6, N)
    np.testing.assert_allclose(np.linalg.norm(data - transform.mean, axis=1), transform.mean_norm, rtol=EXACT_RTOL)
    assert (out / "generated.png").read_bytes()[:4] == b"\x89PNG"
    assert "6 samples at beta = 0.5 from 2 posterior draws" in text and "wrote:" in text


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--image-shape", "8by8"], ["--image-shape", "8by8"]),
        (["--image-shape", "2x2"], ["--image-shape", "2x2 has 4 pixels", "N = 6"]),
        (["--num", "0"], ["--num", "0"]),
        (["--beta", "-1"], ["--beta", "-1"]),
        (["--beta", "1,2"], ["--beta", "1,2"]),
    ],
    ids=["shape-format", "shape-pixels", "num-zero", "beta-negative", "beta-list"],
)
def test_cli_generate_errors(run_folder, tmp_path, capsys, argv, needles):
    run, _, _ = run_folder
    before = sorted(p.name for p in run.iterdir())
    rc = main(["generate", str(run), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written (no RUN/generated)


def test_cli_generate_missing_run(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"bayes-sbm generate: error: RUN: run folder not found: {tmp_path / 'nope'}"
