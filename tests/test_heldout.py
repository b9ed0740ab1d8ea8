"""Data preparation (centring, projection, train/held-out split) and held-out evaluation of a run.

* :class:`bayes_sbm.data.DataTransform` on hand-made rows: centring by the
  training mean, projection onto |x|² = N (overflow-safe), the inverse with
  the training rows' mean norm, the array/``.npz`` round trip; one-line
  errors naming the file and row for rows that cannot be projected;
* the run folder of a file spec with a split records ``transform.npz``,
  ``meta.json["transform"]`` and the raw ``heldout.npy``;
* :func:`bayes_sbm.reports.heldout_report` on a tiny NUTS run (N = 4, three
  training rows, 30 + 30 draws, one chain) against a brute-force NumPy
  computation of ``log mean_s p(x | βW_s)`` with ``sphere.log_partition``
  of the eigenvalues per draw, from the stored coupling draws and an
  independently written transform;
* the CLI: ``predict RUN --heldout FILE --beta a,b,c`` (table, JSON,
  heldout.png) and its one-line errors.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import xarray as xr

from bayes_sbm import data as sbm_data, plots, reports, runs, specs, sphere
from bayes_sbm.cli import main
from bayes_sbm.data import DataTransform, load_transform, prepare_data, read_data, save_transform, split_rows

N = 4
TRAIN = [0, 2, 4]
HELD = [1, 3, 5]
BETAS = [0.5, 1.0, 2.0]
#: The report against the brute force: the same float64 formulas summed in another order (log Z per draw, log-mean-exp).
BRUTE_RTOL, BRUTE_ATOL = 1e-9, 1e-10
#: Standard errors and MCSEs divide by ESS-like counts: one more rounding step than the values.
BRUTE_SE_RTOL = 1e-8


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return np.sqrt(x.shape[1]) * x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------
# DataTransform on hand-made rows
# --------------------------------------------------------------------------
def test_centre_and_project_by_hand():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 0.0, 1.0, 2.0], [2.0, 4.0, 2.0, 0.0]])
    mean = np.array([2.0, 2.0, 2.0, 2.0])
    t = DataTransform.fit(x, center=True, project=True)
    np.testing.assert_allclose(t.mean, mean, rtol=0, atol=1e-15)
    centred = x - mean  # rows (-1,0,1,2), (1,-2,-1,0), (0,2,0,-2): norms √6, √6, √8
    np.testing.assert_allclose(t.mean_norm, (2 * math.sqrt(6) + math.sqrt(8)) / 3, rtol=1e-14)
    y = t.apply(x)
    np.testing.assert_allclose(y, 2.0 * centred / np.linalg.norm(centred, axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(np.sum(y**2, axis=1), N, rtol=1e-14)
    # invert: the direction comes back exactly, every row with the training rows' mean norm
    back = t.invert(y)
    np.testing.assert_allclose(back - mean, centred / np.linalg.norm(centred, axis=1, keepdims=True) * t.mean_norm, rtol=1e-13)
    np.testing.assert_allclose(np.linalg.norm(back - mean, axis=1), t.mean_norm, rtol=1e-13)


def test_centre_without_projection_round_trip():
    rng = np.random.default_rng(3)
    on_sphere = _unit_rows(rng.normal(size=(5, N)))
    shift = np.array([10.0, -3.0, 0.5, 7.0])
    raw = on_sphere - on_sphere.mean(axis=0) + shift  # mean = shift; centred rows are NOT on the sphere any more
    t = DataTransform.fit(raw, center=True, project=False)
    np.testing.assert_allclose(t.mean, shift, rtol=1e-14)
    with pytest.raises(ValueError, match=r"raw: row \d is not on the sphere"):
        t.apply(raw, name="raw")
    # rows that are on the sphere after centring pass unchanged, and invert adds the mean back
    y = _unit_rows(rng.normal(size=(3, N)))
    np.testing.assert_allclose(t.apply(y + shift), y, rtol=1e-13)
    np.testing.assert_allclose(t.invert(y), y + shift, rtol=1e-14)


def test_identity_and_plain_projection_match_load_data(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, N)) * np.array([[1.0], [2.0], [0.5], [3.0]])
    np.save(tmp_path / "x.npy", x)
    t = DataTransform.fit(read_data(tmp_path / "x.npy"), project=True)
    np.testing.assert_array_equal(t.mean, np.zeros(N))
    np.testing.assert_array_equal(t.apply(x), sbm_data.load_data(tmp_path / "x.npy", project=True))
    ident = DataTransform.identity(N)
    assert ident.is_identity and ident.mean_norm == 2.0
    y = _unit_rows(x)
    np.testing.assert_array_equal(ident.apply(y), y)
    np.testing.assert_array_equal(ident.invert(y), y)


def test_projection_is_overflow_safe():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 0.0, 1.0, 2.0], [2.0, 4.0, 2.0, 0.0]])
    small = DataTransform.fit(x, center=True, project=True)
    huge = DataTransform.fit(x * 1e300, center=True, project=True)
    with np.errstate(all="raise"):
        y = huge.apply(x * 1e300)
    np.testing.assert_allclose(y, small.apply(x), rtol=1e-13)
    np.testing.assert_allclose(huge.mean_norm / 1e300, small.mean_norm, rtol=1e-13)


def test_arrays_and_npz_round_trip(tmp_path):
    x = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 0.0, 1.0, 2.0], [2.0, 4.0, 2.0, 0.0]])
    t = DataTransform.fit(x, center=True, project=True)
    again = DataTransform.from_arrays(t.to_arrays())
    np.testing.assert_array_equal(again.mean, t.mean)
    assert (again.center, again.project, again.mean_norm) == (True, True, t.mean_norm)
    save_transform(tmp_path / "t.npz", t)
    loaded = load_transform(tmp_path / "t.npz")
    np.testing.assert_array_equal(loaded.apply(x), t.apply(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]  # atomic: no temporary file left
    with np.load(tmp_path / "t.npz", allow_pickle=False) as npz:  # data only
        assert sorted(npz.files) == ["center", "mean", "mean_norm", "project"]
    bad = t.to_arrays() | {"center": np.asarray(False)}
    with pytest.raises(ValueError, match="center is false but mean is not zero"):
        DataTransform.from_arrays(bad, name="t.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable \.npz transform"):
        load_transform(tmp_path / "junk.npz")


# --------------------------------------------------------------------------
# errors: rows that cannot be projected, splits
# --------------------------------------------------------------------------
def test_row_equal_to_the_training_mean_is_rejected_naming_file_and_row():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0], [2.0, 3.0, 4.0, 5.0]])  # row 2 is the mean
    with pytest.raises(ValueError, match=r"^x\.csv: row 2 is zero after subtracting the training mean") as info:
        prepare_data(x, center=True, project=True, name="x.csv")
    assert "\n" not in str(info.value)
    # one training row: the row is its own mean
    with pytest.raises(ValueError, match=r"row 0 is zero after subtracting"):
        prepare_data(x, center=True, project=True, train_rows=[0], name="x.csv")


def test_zero_row_without_centring_is_rejected():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"^x\.npy: row 1 is zero and cannot lie on the sphere"):
        prepare_data(x, project=True, name="x.npy")


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_nan_row_names_the_file_and_row(tmp_path, suffix):
    x = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 0.0, 1.0, 2.0], [2.0, np.nan, 2.0, 0.0]])
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    else:
        path.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n")
    with pytest.raises(ValueError, match=rf"{path.name}: row 2 has a non-finite value nan in column 1"):
        read_data(path)
    t = DataTransform.fit(x[:2], center=True, project=True)
    with pytest.raises(ValueError, match=r"held\.npy: row 2 has a non-finite value"):
        t.apply(x, name="held.npy")


def test_wrong_number_of_columns():
    t = DataTransform.identity(N)
    with pytest.raises(ValueError, match=r"h\.npy: has N = 5 columns, the transform of the run's data has N = 4"):
        t.apply(np.ones((2, 5)), name="h.npy")


def test_split_rows():
    tr, ho = split_rows(6, [4, 0, 2])
    np.testing.assert_array_equal(tr, [0, 2, 4])
    np.testing.assert_array_equal(ho, [1, 3, 5])
    tr, ho = split_rows(3)
    np.testing.assert_array_equal(tr, [0, 1, 2])
    assert ho.size == 0
    with pytest.raises(ValueError, match=r"spec\.toml: data\.train_rows: row 6 is out of range: x\.csv has 6 rows \(0 to 5\)"):
        split_rows(6, [0, 6], name="spec.toml: data.train_rows", file="x.csv")
    with pytest.raises(ValueError, match="listed twice"):
        split_rows(6, [1, 1])
    with pytest.raises(ValueError, match="at least one row"):
        split_rows(6, [])


def test_prepare_data_splits_and_fits_on_training_rows_only():
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(6, N)) * 3 + 1
    p = prepare_data(raw, center=True, project=True, train_rows=TRAIN)
    np.testing.assert_allclose(p.transform.mean, raw[TRAIN].mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(p.train, _unit_rows(raw[TRAIN] - raw[TRAIN].mean(axis=0)), rtol=1e-13)
    np.testing.assert_array_equal(p.heldout_raw, raw[HELD])
    np.testing.assert_array_equal(p.heldout_rows, HELD)


# --------------------------------------------------------------------------
# a tiny fitted run with a split
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One NUTS fit (N = 4, K = 3 training rows of 6, 30 + 30 draws, 1 chain) with stored W, and the raw data."""
    root = tmp_path_factory.mktemp("heldout")
    rng = np.random.default_rng(7)
    raw = rng.normal(size=(6, N)) * 3 + np.array([1.0, -2.0, 0.5, 4.0])
    np.save(root / "raw.npy", raw)
    spec = specs.parse_spec(
        {
            "model": {"N": N, "gamma": 0.5, "eta": 3.0, "parametrization": "aligned"},
            "data": {"source": "file", "path": "raw.npy", "center": True, "project": True, "train_rows": TRAIN},
            "inference": {"num_warmup": 30, "num_samples": 30, "num_chains": 1, "seed": 1},
        },
        source="tiny.toml",
        base_dir=root,
    )
    runs.fit_spec(spec, root / "run", progress_bar=False, store_W=True)
    return root, raw


def _reference(raw: np.ndarray, W: np.ndarray, x_raw: np.ndarray, betas):
    """Brute force per β: the transform written out, log p(x|βW_s) per draw, log-mean-exp, weight ESS; plug-in W̄.

    Every exact log Z (each β, each draw and W̄) comes from one ``sphere.log_partition`` call on the eigenvalues.
    """
    m = raw[TRAIN].mean(axis=0)
    x = x_raw - m
    x = 2.0 * x / np.linalg.norm(x, axis=1, keepdims=True)  # √N = 2
    mats = np.concatenate([W, W.mean(axis=0)[None]])  # the S draws, then W̄
    lam = np.stack([np.linalg.eigvalsh(b * mats) for b in betas])  # (B, S + 1, N)
    log_z = np.asarray(sphere.log_partition(lam.reshape((-1, N)))).reshape(lam.shape[:2])
    out = []
    for b, lz in zip(betas, log_z):
        lp = 0.5 * b * np.einsum("mi,sij,mj->sm", x, mats, x) - lz[:, None]
        lp, plug = lp[:-1], lp[-1]
        top = lp.max(axis=0)
        w = np.exp(lp - top)
        out.append((top + np.log(w.mean(axis=0)), w.sum(axis=0) ** 2 / (w**2).sum(axis=0), plug))
    return out


def test_run_folder_records_the_transform_and_heldout_rows(fitted):
    root, raw = fitted
    run = root / "run"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["transform"]["center"] is True and meta["transform"]["project"] is True
    assert (meta["transform"]["train_rows"], meta["transform"]["heldout_rows"]) == (3, 3)
    t = runs.load_run_transform(run, N)
    np.testing.assert_allclose(t.mean, raw[TRAIN].mean(axis=0), rtol=1e-14)
    np.testing.assert_array_equal(np.load(run / "heldout.npy"), raw[HELD])
    np.testing.assert_allclose(np.load(run / "data.npy"), _unit_rows(raw[TRAIN] - raw[TRAIN].mean(axis=0)), rtol=1e-13)
    assert "train_rows = [0, 2, 4]" in (run / "spec.toml").read_text()
    assert specs.load_spec(run / "spec.toml").data.train_rows == tuple(TRAIN)


def test_heldout_report_matches_brute_force(fitted):
    root, raw = fitted
    run = root / "run"
    dt, _ = runs.load_run(run)
    W = np.asarray(dt["posterior"]["W"].values).reshape((-1, N, N))
    rep = reports.heldout_report(run, raw[HELD], BETAS)
    assert rep.num_draws == 30 and rep.num_points == 3 and rep.N == N
    means, plug_means = [], []
    for i, (lme, ess_w, plug) in enumerate(_reference(raw, W, raw[HELD], BETAS)):
        np.testing.assert_allclose(rep.log_density[i], lme, rtol=BRUTE_RTOL, atol=BRUTE_ATOL)
        np.testing.assert_allclose(rep.weight_ess[i], ess_w, rtol=BRUTE_RTOL)
        np.testing.assert_allclose(rep.mcse[i], np.sqrt(np.maximum(30 / ess_w - 1, 0) / rep.effective_draws), rtol=BRUTE_SE_RTOL)
        np.testing.assert_allclose(rep.plugin_log_density[i], plug, rtol=BRUTE_RTOL, atol=BRUTE_ATOL)
        np.testing.assert_allclose(rep.mean[i], lme.mean(), rtol=BRUTE_RTOL, atol=BRUTE_ATOL)
        np.testing.assert_allclose(rep.se[i], lme.std(ddof=1) / math.sqrt(3), rtol=BRUTE_SE_RTOL)
        np.testing.assert_allclose(rep.plugin_se[i], plug.std(ddof=1) / math.sqrt(3), rtol=BRUTE_SE_RTOL)
        means.append(lme.mean())
        plug_means.append(plug.mean())
    assert rep.best_beta == BETAS[int(np.argmax(means))]
    assert rep.plugin_best_beta == BETAS[int(np.argmax(plug_means))]
    assert 0 < rep.effective_draws <= 30
    d = json.loads(json.dumps(rep.as_dict()))
    assert [r["beta"] for r in d["rows"]] == BETAS and d["best_beta"] == rep.best_beta and d["baseline_uniform"] == 0.0
    # max_draws thins before anything is computed
    thin = reports.heldout_report(run, raw[HELD], [1.0], max_draws=20)
    assert thin.num_draws == 20
    png = plots.heldout_plot(d, root / "heldout.png")
    assert png.is_file() and png.stat().st_size > 0


def test_heldout_report_rebuilds_couplings_from_the_latent(fitted, tmp_path):
    """A run without stored W (the default): couplings rebuilt from z give the same numbers."""
    root, raw = fitted
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    dt = xr.open_datatree(run / "inference.nc", engine="h5netcdf").load()
    dt["posterior"] = dt["posterior"].to_dataset().drop_vars("W")
    (run / "inference.nc").unlink()
    dt.to_netcdf(run / "inference.nc", engine="h5netcdf")
    a = reports.heldout_report(root / "run", raw[HELD], [1.0])
    b = reports.heldout_report(run, raw[HELD], [1.0])
    np.testing.assert_allclose(b.log_density, a.log_density, rtol=BRUTE_RTOL, atol=BRUTE_ATOL)
    np.testing.assert_allclose(b.plugin_log_density, a.plugin_log_density, rtol=BRUTE_RTOL, atol=BRUTE_ATOL)


def test_heldout_report_errors(fitted):
    root, raw = fitted
    with pytest.raises(ValueError, match=r"h\.npy: has N = 5 columns, the run .* has N = 4"):
        reports.heldout_report(root / "run", np.ones((2, 5)), [1.0], heldout_name="h.npy")
    x = raw[HELD].copy()
    x[1] = raw[TRAIN].mean(axis=0)
    with pytest.raises(ValueError, match=r"h\.npy: row 1 is zero after subtracting the training mean"):
        reports.heldout_report(root / "run", x, [1.0], heldout_name="h.npy")
    with pytest.raises(ValueError, match="betas"):
        reports.heldout_report(root / "run", raw[HELD], [1.0, -1.0])


def test_heldout_report_refuses_a_modified_run(fitted, tmp_path):
    """data.npy no longer the data the run fitted: refused before any scoring, as by ``predict``."""
    root, raw = fitted
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    np.save(run / "data.npy", _unit_rows(np.random.default_rng(1).normal(size=(len(TRAIN), N))))
    with pytest.raises(ValueError, match=r"data\.npy: differs from the run's observed_data"):
        reports.heldout_report(run, raw[HELD], [1.0])


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def test_cli_predict_heldout(fitted, tmp_path, capsys):
    root, raw = fitted
    np.save(tmp_path / "held.npy", raw[HELD])
    out = tmp_path / "plots"
    rc = main(["predict", str(root / "run"), "--heldout", str(tmp_path / "held.npy"), "--beta", "0.5,1,2",
               "--json", str(tmp_path / "h.json"), "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert (out / "heldout.png").is_file()
    r = json.loads((tmp_path / "h.json").read_text())
    assert [row["beta"] for row in r["rows"]] == BETAS
    assert f"best beta: {r['best_beta']:g}" in text and "plug-in" in text


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--heldout", "{tmp}/wide.npy"], ["--heldout", "wide.npy", "N = 5", "N = 4"]),
        (["--heldout", "{tmp}/missing.npy"], ["missing.npy", "not found"]),
        (["--heldout", "{tmp}/nan.csv"], ["nan.csv", "row 1", "non-finite"]),
        (["--beta", "0.5,1"], ["--beta", "--heldout"]),
        (["--heldout", "{tmp}/wide.npy", "--beta", "1,-2"], ["--beta", "-2"]),
        (["--heldout", "{tmp}/wide.npy", "--teacher", "{tmp}/wide.npy"], ["--teacher", "--heldout"]),
    ],
    ids=["wrong-N", "missing", "nan-row", "beta-list-without-heldout", "beta-negative", "teacher-with-heldout"],
)
def test_cli_predict_heldout_errors(fitted, tmp_path, capsys, argv, needles):
    root, _ = fitted
    np.save(tmp_path / "wide.npy", np.ones((2, 5)))
    (tmp_path / "nan.csv").write_text("1,2,3,4\n1,nan,3,4\n")
    before = sorted(p.name for p in (root / "run").iterdir())
    rc = main(["predict", str(root / "run"), *(a.format(tmp=tmp_path) for a in argv)])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0]
    assert sorted(p.name for p in (root / "run").iterdir()) == before  # nothing written (no RUN/heldout)
