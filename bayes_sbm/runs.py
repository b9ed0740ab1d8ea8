"""Run folders: fit a model spec into a folder, assemble its DataTree, read it back.

A run folder ``RUN/`` holds

* ``inference.nc`` — the ArviZ DataTree (:func:`to_datatree`);
* ``meta.json`` — spec (as a dict), seeds, package versions, data spectrum,
  timings, the theory values (:func:`bayes_sbm.theory.observable_reference`),
  warnings, and for NUTS ESS/R-hat over every latent coordinate
  (``latent_summary``);
* ``spec.toml`` — the spec actually fitted; ``data.npy`` — the data fitted;
  ``teacher.npy`` — the teacher couplings W* (teacher data, drawn once with the data);
* ``transform.npz`` — the data transform fitted on the training rows
  (:class:`bayes_sbm.data.DataTransform`; identity for teacher data), also
  summarised in ``meta.json`` ``"transform"``; ``heldout.npy`` — held-out
  rows of the spec's split (``data.train_rows`` / ``data.heldout_path``), in
  the data file's coordinates (before the transform);
* ``elbo.npy`` (SVI).

A run folder is a transaction: everything is built in a staging folder
``RUN.partial/`` next to it and moved into place at the end, so ``RUN/``
either holds a complete run or does not exist.  An interrupted checkpointed
NUTS run leaves its staging folder, and fitting the same spec into the same
``--out`` resumes from its checkpoint.  A lock file ``RUN.lock`` keeps two
processes from writing one run.  An existing ``RUN/`` is never touched unless
``overwrite=True``, which replaces it as a whole.  Nothing read back from a
run folder can run code (NetCDF, JSON and ``.npy`` with ``allow_pickle=False``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import arviz as az
import jax
import numpy as np
import numpyro
import xarray as xr

from . import __version__, diagnostics, inference, predictive, teacher, theory
from .data import DataTransform, PreparedData, load_transform, prepare_data, read_data, save_transform
from .io import run_metadata, save_npy_atomic, write_json_atomic, write_netcdf_atomic, write_text_atomic
from .model import SPECTRAL_SITES
from .settings import derive_keys

__all__ = [
    "RUN_FILES",
    "RunData",
    "TRANSFORM_FILE",
    "HELDOUT_FILE",
    "TEACHER_FILE",
    "load_spec_data",
    "prepare_spec_data",
    "load_run_transform",
    "problem_from_spec",
    "latent_summary",
    "posterior_predictive_draws",
    "to_datatree",
    "check_run_folder",
    "fit_spec",
    "load_run",
]

#: Dims whose integer coordinates start at 1 (λ_1, u_1, … are numbered from 1 in THEORY.md).
ONE_BASED_DIMS = ("rank", "mode")
#: Files of a finished run folder (``elbo.npy`` for SVI only).
RUN_FILES = ("inference.nc", "meta.json", "spec.toml", "data.npy")
#: Largest N at which a band fit stores posterior-predictive draws (each needs a dense N×N eigendecomposition
#: and a Haar rotation per draw: ~0.1 s per draw at N = 1000 on one core).
BAND_PREDICTIVE_MAX_N = 300
#: Suffixes of the staging folder and the lock file next to a run folder.
STAGING_SUFFIX, LOCK_SUFFIX = ".partial", ".lock"


class RunData(NamedTuple):
    """A fitted run: its ArviZ DataTree and the ``meta.json`` contents."""

    datatree: Any
    meta: dict


def load_spec_data(spec) -> np.ndarray:
    """The data a spec fits: teacher samples (seeded) or the transformed training rows of a file."""
    return prepare_spec_data(spec).train


# --- data transform and held-out split (bayes_sbm.data.DataTransform); begin ---
#: The recorded data transform and the held-out rows of a run folder.
TRANSFORM_FILE, HELDOUT_FILE = "transform.npz", "heldout.npy"
#: The teacher couplings W* of a run on teacher data.
TEACHER_FILE = "teacher.npy"


def prepare_spec_data(spec) -> PreparedData:
    """Training points, raw held-out rows and the transform of a spec's ``[data]`` table (teacher data: identity)."""
    return _prepare_spec_data(spec)[0]


def _prepare_spec_data(spec) -> tuple[PreparedData, np.ndarray | None]:
    """:func:`prepare_spec_data` and the teacher couplings W* drawn with teacher data (None for a data file)."""
    d, N = spec.data, spec.model.N
    if d.source == "teacher":
        td = teacher.teacher_student_data(jax.random.key(d.seed), N, d.K, d.omega)
        return PreparedData(td.data, None, DataTransform.identity(N), np.arange(d.K), np.arange(0)), np.asarray(td.teacher.W)
    raw = read_data(d.resolved_path)
    if raw.shape[1] != N:
        raise ValueError(f"{spec.path}: model.N: the data file {d.resolved_path} has N = {raw.shape[1]} columns, the spec says {N}")
    prepared = prepare_data(raw, center=d.center, project=d.project, train_rows=d.train_rows, name=d.resolved_path,
                            rows_name=f"{spec.path}: data.train_rows")
    if d.resolved_heldout_path is not None:
        held = read_data(d.resolved_heldout_path)
        if held.shape[1] != N:
            raise ValueError(f"{spec.path}: data.heldout_path: {d.resolved_heldout_path} has N = {held.shape[1]} columns, the spec says {N}")
        prepared.transform.apply(held, name=d.resolved_heldout_path)  # fails before fitting if a row cannot be transformed
        prepared = prepared._replace(heldout_raw=held)
    return prepared, None


def load_run_transform(run_dir, N: int) -> DataTransform:
    """The data transform of a run folder (``transform.npz``; identity for runs without one), checked against N."""
    path = Path(run_dir) / TRANSFORM_FILE
    transform = load_transform(path) if path.is_file() else DataTransform.identity(N)
    if transform.N != N:
        raise ValueError(f"{path}: the transform has N = {transform.N}, the run's data N = {N} (the run folder was modified)")
    return transform


def _save_prepared(folder: Path, prepared: PreparedData, meta: dict) -> None:
    save_transform(folder / TRANSFORM_FILE, prepared.transform)
    meta["transform"] = prepared.transform.as_meta() | {
        "file": TRANSFORM_FILE, "train_rows": int(prepared.train.shape[0]),
        "heldout_rows": 0 if prepared.heldout_raw is None else int(prepared.heldout_raw.shape[0]),
    }
    if prepared.heldout_raw is not None:
        save_npy_atomic(folder / HELDOUT_FILE, prepared.heldout_raw)
        meta["transform"]["heldout_file"] = HELDOUT_FILE
# --- data transform and held-out split; end ---


def problem_from_spec(spec, data=None) -> inference.PosteriorProblem:
    """The :class:`~bayes_sbm.inference.PosteriorProblem` of a spec (its data loaded unless given)."""
    data = load_spec_data(spec) if data is None else data
    m = spec.model
    return inference.make_problem(data, m.gamma, m.eta, m.beta, m.parametrization)


def latent_summary(latent) -> dict[str, float]:
    """Worst-case convergence over all latent coordinates: min bulk/tail ESS, max R-hat.

    A coordinate whose draws are constant (a stuck chain) has no ESS: the
    minimum is then NaN and ``stuck_coordinates`` counts them.

    Parameters
    ----------
    latent : ndarray, shape (chain, draw, dim)
    """
    latent = np.asarray(latent)
    constant = np.ptp(latent.reshape((-1, latent.shape[-1])), axis=0) == 0
    out: dict[str, float] = {"dim": int(latent.shape[-1]), "stuck_coordinates": int(np.sum(constant))}
    with np.errstate(invalid="ignore", divide="ignore"):
        ess_bulk = np.asarray(az.ess(latent, method="bulk"), dtype=float)
        ess_tail = np.asarray(az.ess(latent, method="tail", prob=(0.05, 0.95)), dtype=float)
    ess_bulk[constant] = np.nan
    ess_tail[constant] = np.nan
    out["min_ess_bulk"] = float(np.nan if constant.any() else np.nanmin(ess_bulk))
    out["min_ess_tail"] = float(np.nan if constant.any() else np.nanmin(ess_tail))
    out["argmin_ess_bulk"] = int(np.argmax(constant)) if constant.any() else int(np.nanargmin(ess_bulk))
    if latent.shape[0] > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            rhat = np.asarray(az.rhat(latent), dtype=float)
        out["max_r_hat"] = float(np.nan if constant.any() else np.nanmax(rhat))
    return out


def posterior_predictive_draws(key, result, beta: float, num_points: int) -> np.ndarray:
    """Exact draws of x from ``p(x | βW)`` for every posterior draw of a fit, shape (chain, draw, num_points, N)."""
    problem = result.problem
    latent = result.samples[problem.latent_site]
    chains, draws = latent.shape[:2]
    W = inference.coupling_draws(problem, latent, key=jax.random.fold_in(key, 1)).reshape((-1, problem.N, problem.N))
    pp = np.asarray(predictive.sample_posterior_predictive(key, W, beta, num_points))
    return pp.reshape((chains, draws, int(num_points), problem.N))


def to_datatree(
    result,
    *,
    posterior_predictive=None,
    predictive_beta: float | None = None,
    store_latent: bool | None = None,
    store_W: bool = False,
    attrs: dict | None = None,
):
    """ArviZ DataTree of a fit (THEORY.md §3–4 names), like ``arviz.from_numpyro``.

    Parameters
    ----------
    result : inference.NutsResult or inference.SviResult
    posterior_predictive : array_like, shape (chain, draw, point, N), optional
        Ready-made draws of x from ``p(x | βW)`` (e.g.
        :func:`bayes_sbm.predictive.sample_posterior_predictive`).
    predictive_beta : float, optional
        The β of those draws (default the problem's β), stored in ``constant_data``.
    store_latent : bool, optional
        Store the latent vector ``z`` (default N ≤ 30).
    store_W : bool
        Store the (N, N) coupling draws.
    attrs : dict, optional
        Extra attributes of the tree.

    Returns
    -------
    xarray.DataTree
        Groups ``posterior`` (spectral sites; ``W`` when asked),
        ``unconstrained_posterior`` (the latent ``z``), ``sample_stats``
        (NUTS), ``log_likelihood`` (``x``: chain, draw, point; untempered),
        ``observed_data``, ``posterior_predictive`` (``x`` on the same
        ``point`` dim as the data, when given) and ``constant_data`` (``c``,
        γ, η, β).  Every dim has integer coordinates (``rank`` and ``mode``
        from 1); every group carries ``created_at`` and ``creation_library``.
    """
    problem = result.problem
    latent = result.samples[problem.latent_site]
    chains, draws = latent.shape[:2]
    N, K = problem.N, problem.K
    beta = problem.beta if predictive_beta is None else float(predictive_beta)
    if store_latent is None:
        store_latent = N <= 30

    def ds(variables: dict, dims: dict, sample=True):
        coords = {"chain": np.arange(chains), "draw": np.arange(draws)} if sample else {}
        data_vars = {}
        for name, value in variables.items():
            value = np.asarray(value)
            extra = list(dims.get(name, [f"{name}_dim_{i}" for i in range(value.ndim - (2 if sample else 0))]))
            lead = 2 if sample else 0
            for i, dim in enumerate(extra):  # integer coordinates on every dim (1-based where physics numbers modes)
                if dim not in coords:
                    start = 1 if dim in ONE_BASED_DIMS else 0
                    coords[dim] = np.arange(start, start + value.shape[lead + i])
            data_vars[name] = ((["chain", "draw"] if sample else []) + extra, value)
        return xr.Dataset(data_vars, coords=coords)

    post_vars = {k: result.samples[k] for k in SPECTRAL_SITES}
    if store_W:
        post_vars["W"] = inference.coupling_draws(problem, latent)
    dims = {"lam_top": ["rank"], "u": ["mode"], "signal": ["mode"], "z": ["latent"], "W": ["row", "col"]}
    groups = {"posterior": ds(post_vars, dims)}
    if store_latent:  # the sampler's coordinates, kept apart so that az.summary(dt) lists the observables only
        groups["unconstrained_posterior"] = ds({"z": latent}, dims)
    if isinstance(result, inference.NutsResult):
        groups["sample_stats"] = ds(result.sample_stats, {})
    groups["log_likelihood"] = ds({"x": inference.log_likelihood_draws(problem, latent)}, {"x": ["point"]})
    groups["observed_data"] = ds({"x": problem.data}, {"x": ["point", "dim"]}, sample=False)
    if posterior_predictive is not None:
        pp = np.asarray(posterior_predictive)
        if pp.shape[:2] != (chains, draws) or pp.ndim != 4 or pp.shape[-1] != N:
            raise ValueError(f"posterior_predictive: expected shape ({chains}, {draws}, points, {N}), got {pp.shape}")
        groups["posterior_predictive"] = ds({"x": pp}, {"x": ["point", "dim"]})
    groups["constant_data"] = xr.Dataset(
        {
            "c": (["mode"], problem.frame.c),
            "gamma": problem.gamma,
            "eta": problem.eta,
            "beta": beta,
        },
        coords={"mode": np.arange(1, problem.frame.c.shape[0] + 1)},
    )
    created = {"created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "creation_library": "bayes_sbm", "creation_library_version": __version__,
               "inference_library": "numpyro", "inference_library_version": numpyro.__version__}
    for d in groups.values():
        d.attrs.update(created)
    tree = xr.DataTree.from_dict({f"/{name}": d for name, d in groups.items()})
    method = "nuts" if isinstance(result, inference.NutsResult) else "svi"
    meta = {"N": N, "K": K, "method": method, "parametrization": problem.parametrization} | created
    if method == "svi":  # draws from a fitted guide: one pseudo-chain, no R-hat or rank plots, MCSE ignores guide bias
        meta["note"] = "SVI: independent draws from the fitted guide; ESS/MCSE/R-hat do not measure the guide's bias"
    tree.attrs.update(meta | (attrs or {}))
    return tree


# ---------------------------------------------------------------------------
# Run folders as transactions
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(out: Path):
    """Exclusive lock ``RUN.lock`` (created with O_EXCL; a lock left by a dead process is taken over)."""
    lock = out.with_name(out.name + LOCK_SUFFIX)
    out.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # at most one takeover of a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            alive = pid > 0 and _pid_alive(pid)
            if alive:
                raise ValueError(f"--out: {out} is being written by process {pid} (lock {lock}); wait for it or remove the lock") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    else:  # pragma: no cover - two takeovers raced
        raise ValueError(f"--out: cannot take the lock {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_run_folder(out_dir, *, overwrite: bool = False, what: str = "--out") -> Path:
    """Refuse a run folder that :func:`fit_spec` may not write, before any computing.

    ``out_dir`` may be missing or empty; a finished run (``inference.nc`` and
    ``meta.json``) only with ``overwrite`` (it is then replaced as a whole);
    anything else never.  ``ValueError`` starting with ``what`` otherwise.
    """
    out = Path(out_dir)
    if not out.exists():
        return out
    if not out.is_dir():
        raise ValueError(f"{what}: {out} exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return out
    if not ((out / "inference.nc").is_file() and (out / "meta.json").is_file()):
        raise ValueError(f"{what}: {out} is not empty and is not a run folder ({', '.join(entries[:5])}); choose another folder")
    if not overwrite:
        raise ValueError(f"{what}: {out} already holds a finished run; choose another folder or pass --overwrite to replace it")
    return out


def fit_spec(spec, out_dir, *, progress_bar: bool = True, store_W: bool = False, overwrite: bool = False,
             keep_checkpoint: bool = False) -> RunData:
    """Fit a spec (NUTS or SVI) and write the run folder as one transaction.

    Parameters
    ----------
    spec : specs.Spec
    out_dir : path
        The run folder; must not exist or be empty (or hold a finished run
        and ``overwrite=True``).
    progress_bar : bool
    store_W : bool
        Store the (N, N) coupling draws in ``inference.nc``.
    overwrite : bool
        Replace a finished run in ``out_dir`` as a whole.
    keep_checkpoint : bool
        Keep the NUTS checkpoint in ``RUN/checkpoint`` (default: removed after success).

    Returns
    -------
    RunData
        ``(datatree, meta)``.
    """
    out = check_run_folder(out_dir, overwrite=overwrite)
    prepared, teacher_W = _prepare_spec_data(spec)  # data transform and held-out split; the teacher drawn with its data
    data = prepared.train
    problem = problem_from_spec(spec, data)
    with _run_lock(out):
        stage = out.with_name(out.name + STAGING_SUFFIX)
        stage.mkdir(parents=True, exist_ok=True)
        for leftover in stage.iterdir():  # an interrupted attempt: only its checkpoint may be resumed, nothing else kept
            if leftover.name == "checkpoint":
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        result = _fit_into(spec, problem, data, stage, progress_bar=progress_bar, store_W=store_W, prepared=prepared,
                           teacher_W=teacher_W)
        if not keep_checkpoint:
            shutil.rmtree(stage / "checkpoint", ignore_errors=True)
        if out.exists():  # empty, or a finished run that overwrite=True replaces as a whole
            old = out.with_name(out.name + ".replaced")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out)
    return result


def _fit_into(spec, problem, data, folder: Path, *, progress_bar: bool, store_W: bool, prepared: PreparedData,
              teacher_W: np.ndarray | None) -> RunData:
    seed = spec.inference.seed
    keys = derive_keys(seed)
    t0 = time.perf_counter()
    meta: dict[str, Any] = run_metadata(seed=seed, spec=spec.to_dict(), c=problem.frame.c.tolist())
    if spec.inference.method == "nuts":
        ckpt = folder / "checkpoint" if spec.inference.checkpoint_every > 0 else None
        result = inference.run_nuts(keys.fit, problem, spec.inference.nuts_settings(progress_bar), checkpoint_dir=ckpt)
        meta["latent_summary"] = latent_summary(result.samples[problem.latent_site])
        meta["divergences"] = int(np.sum(result.sample_stats["diverging"]))
    else:
        result = inference.run_svi(keys.fit, problem, spec.inference.svi_settings(progress_bar))
        save_npy_atomic(folder / "elbo.npy", result.elbo)
        meta["elbo_final"] = float(np.mean(result.elbo[-max(1, len(result.elbo) // 10) :]))
    pred = spec.predictive
    num_points = problem.K if pred.num_points is None else int(pred.num_points)
    pp = None
    if problem.parametrization != "band" or problem.N <= BAND_PREDICTIVE_MAX_N:
        pp = posterior_predictive_draws(keys.predictive, result, pred.beta, num_points)
    else:
        meta.setdefault("notes", []).append(
            f"no posterior_predictive group: a band fit at N = {problem.N} > {BAND_PREDICTIVE_MAX_N} would need a dense "
            "eigendecomposition per draw; use bayes_sbm.predictive on chosen draws"
        )
    dt = to_datatree(
        result,
        posterior_predictive=pp,
        predictive_beta=pred.beta,
        store_W=store_W,
        store_latent=True,
        attrs={"spec_name": spec.name, "seed": seed},
    )
    meta["timing"] = dict(result.timing) | {"wall_s": time.perf_counter() - t0}
    try:
        meta["theory"] = theory.observable_reference(problem.frame.c, problem.gamma, problem.eta).as_dict()
    except ValueError as exc:  # theory undefined for these inputs: say so, keep the run
        meta["theory"] = {"error": str(exc)}
    save_npy_atomic(folder / "data.npy", data)
    _save_prepared(folder, prepared, meta)  # data transform and held-out rows
    if teacher_W is not None:  # the teacher couplings, so `predict` never has to regenerate them
        save_npy_atomic(folder / TEACHER_FILE, teacher_W)
    write_text_atomic(folder / "spec.toml", spec.to_toml())  # the spec actually fitted (overrides included)
    write_netcdf_atomic(folder / "inference.nc", dt)
    meta["warnings"] = diagnostics.convergence_warnings(dt, meta)
    write_json_atomic(folder / "meta.json", meta)
    return RunData(dt, meta)


def load_run(run_dir) -> RunData:
    """``(datatree, meta)`` of a run folder written by :func:`fit_spec`.

    Raises ``FileNotFoundError``/``ValueError`` naming the folder or file when
    something is missing or unreadable (never a traceback from a reader).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    for name in ("inference.nc", "meta.json"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run}: no {name} (is this a run folder written by 'bayes-sbm fit'?)")
    try:
        meta = json.loads((run / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{run / 'meta.json'}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{run / 'meta.json'}: expected a JSON object, got {type(meta).__name__}")
    try:
        dt = az.from_netcdf(run / "inference.nc", engine="h5netcdf")
    except Exception as exc:  # h5py/netCDF raise many types for a corrupt file; all mean "unreadable"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{run / 'inference.nc'}: cannot be read as a DataTree ({first})") from None
    if "posterior" not in dt.children:
        raise ValueError(f"{run / 'inference.nc'}: no posterior group")
    return RunData(dt, meta)
