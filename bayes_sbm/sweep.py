"""Sweeps: one model spec over a grid of overrides, run point by point on Dask.

A *sweep file* (TOML, parsed with :mod:`tomllib` and validated strictly;
every problem is one :class:`SweepError` ``"{file}: {key}: {reason}"``)
names a base model spec, a grid of spec keys and a task::

    name = "fmo_n"                  # optional (default: the file stem)
    description = "..."             # optional
    base = "../fmo.toml"            # the model spec, relative to this file (or absolute)
    task = "fit"                    # "fit", "evidence" or "predict" (fit, then predict, on each point)
    out = "../../runs/sweeps/fmo_n" # results folder, relative to this file (or absolute)

    [grid]                          # dotted spec keys -> non-empty lists; points = cartesian product
    model.N = [20, 40]
    data.seed = [0, 1]

A grid may also run over model specs: ``spec = ["../pmo.toml", "../fme.toml"]``
in ``[grid]`` (instead of ``base``; files relative to the sweep file, their
``name`` fields distinct) makes the spec one more grid dimension, with the
spec names as its coordinates (e.g. phase spec × N × seed).

    [set]                           # optional: spec keys set on every point
    inference.num_samples = 200

    [evidence]                      # optional, task = "evidence" only (defaults: LadderSettings)
    rungs = 12
    max_rungs = 20
    samples = 500
    warmup = 200
    svi_steps = 3000                # default: the spec's inference.svi_steps
    ti = true
    svi = true

    [predict]                       # optional, task = "predict" only
    beta = 1.0                      # default: the point's predictive.beta
    num_points = 2000
    seed = 0
    max_draws = 400                 # default: all draws

Grid keys are ``table.key`` of the spec schema (:data:`bayes_sbm.specs.SCHEMA`),
written quoted (``"model.N" = [...]``) or as TOML dotted keys; every point's
spec is validated when the file is read, so a bad value fails before any
computing.

Layout of ``out``: one folder per point, named from its values
(``model.N=20__data.seed=0``), holding ``point.json`` (the marker: values,
spec, task settings, status ``running``/``ok``/``error``, the one-line error
and its traceback, the result row), ``run/`` (the run folder of
:func:`bayes_sbm.runs.fit_spec`; fit and predict), ``predict.json`` and
``evidence.json``; ``sweep.json`` (the resolved sweep) and the tables
``results.csv`` and ``results.nc`` (grid keys as dimensions, one variable per
column).  A point is finished when its marker says ``ok`` for the same spec,
task and settings and its files are there; a rerun skips finished points and
runs the others (failed ones included).  A finished run folder of the same
spec is reused (a ``fit`` sweep rerun as ``predict`` only predicts).

The pure parts (:func:`load_sweep`, :func:`plan`, :func:`run_point`,
:func:`write_results`) need no Dask; :func:`run_sweep` runs the points on a
Dask distributed cluster (a ``LocalCluster`` of single-threaded worker
processes by default, or an existing scheduler).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import io as _io
import itertools
import json
import logging
import math
import numbers
import os
import re
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import xarray as xr

from . import __version__, _checks, _stats, reports, runs
from .io import run_metadata, write_json_atomic, write_netcdf_atomic, write_text_atomic
from .settings import LadderSettings
from .specs import (
    _SEED, SCHEMA, Spec, SpecError, _checked, _coerce, _Field, _ge, _gt, _non_empty, _one_of, _spec_name, _suggest,
    load_spec, read_toml_file, toml_type_name,
)

__all__ = [
    "TASKS",
    "SweepError",
    "EvidenceTask",
    "PredictTask",
    "Task",
    "Point",
    "Sweep",
    "PointStatus",
    "SweepResult",
    "load_sweep",
    "parse_sweep",
    "point_name",
    "plan",
    "run_point",
    "columns",
    "write_results",
    "read_rows",
    "pinned_env",
    "run_sweep",
]

#: What a sweep computes on each point.
TASKS = ("fit", "evidence", "predict")
#: Top-level keys and tables of a sweep file.
TOP_LEVEL = ("name", "description", "base", "task", "out", "grid", "set", "evidence", "predict")
#: The ``[grid]`` key whose values are model spec files (the spec as a grid dimension, instead of ``base``).
SPEC_GRID_KEY = "spec"
#: Largest number of grid points (a larger product is a typo, not a sweep).
MAX_POINTS = 100_000
#: Point folder names longer than this are cut and end in a hash of the full name.
MAX_NAME = 150
#: Files of a point folder.
MARKER, RUN_DIR, PREDICT_FILE, EVIDENCE_FILE = "point.json", "run", "predict.json", "evidence.json"
#: Files of the sweep's ``out`` folder.
SWEEP_FILE, RESULTS_CSV, RESULTS_NC = "sweep.json", "results.csv", "results.nc"
#: Thread pinning of each LocalCluster worker process (one core each; THEORY.md §2: oversubscribed eigh is 10x slower).
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: Posterior observables of a fit: (column prefix, posterior variable, index of the mode or None, theory key).
OBSERVABLES = (
    ("lam_1", "lam_top", 0, "lam"),
    ("u_1", "u", 0, "u"),
    ("M", "M", None, "M"),
    ("signal_1", "signal", 0, "signal"),
    ("mu", "mu", None, "mu"),
    ("log_z_per_n", "log_z_per_n", None, "log_z_per_n"),
)
#: Evidence estimators of :func:`bayes_sbm.reports.evidence_report`.
ESTIMATORS = ("ti", "stepping_stone", "elbo", "importance", "iwae")
#: KLs of :func:`bayes_sbm.reports.predict_run`: (column prefix, section, direction).
DIVERGENCES = (("fwd_typ", "typical", "forward"), ("rev_typ", "typical", "reverse"),
               ("fwd_pp", "predictive", "forward"), ("rev_pp", "predictive", "reverse"))
#: Columns of every row (after the grid keys).
COMMON_COLUMNS = ("point", "status", "error", "seconds")
_FIT_COLUMNS = (
    *(f"{name}_{what}" for name, *_ in OBSERVABLES for what in ("mean", "mcse", "theory")),
    "phase", "log_evidence_per_n_theory", "method", "divergences", "min_ess_bulk", "max_r_hat", "num_warnings", "fit_s",
)
_PREDICT_COLUMNS = (
    *(f"{name}_{what}" for name, *_ in DIVERGENCES for what in ("per_n", "se_per_n", "theory")),
    "predict_num_warnings", "predict_s",
)
_EVIDENCE_COLUMNS = (
    *(f"{name}_{what}" for name in ESTIMATORS for what in ("per_n", "se_per_n")),
    "log_evidence_per_n_theory", "phase", "num_warnings", "evidence_s",
)
#: Task columns, in table order.
TASK_COLUMNS = {"fit": _FIT_COLUMNS, "predict": (*_FIT_COLUMNS, *_PREDICT_COLUMNS), "evidence": _EVIDENCE_COLUMNS}
#: Columns that hold text in ``results.nc`` (all others are floats, NaN where missing).
TEXT_COLUMNS = ("point", "status", "error", "phase", "method")

_LADDER = LadderSettings()


class SweepError(ValueError):
    """A sweep file that cannot be used; the message is ``"{file}: {key}: {reason}"`` (``"{file}: {reason}"`` without a key)."""

    def __init__(self, file: str, key: str, reason: str):
        self.file, self.key, self.reason = str(file), key, reason
        super().__init__(f"{self.file}: {key}: {reason}" if key else f"{self.file}: {reason}")


# --------------------------------------------------------------------------
# the sweep and its points
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class EvidenceTask:
    """``[evidence]``: the ladder and estimators of :func:`bayes_sbm.reports.evidence_report`."""

    rungs: int = _LADDER.num_rungs
    max_rungs: int = _LADDER.max_rungs
    samples: int = _LADDER.num_samples
    warmup: int = _LADDER.num_warmup
    svi_steps: int | None = None
    ti: bool = True
    svi: bool = True

    def ladder(self) -> LadderSettings:
        return LadderSettings(num_rungs=self.rungs, max_rungs=self.max_rungs, num_samples=self.samples, num_warmup=self.warmup)


@dataclass(frozen=True)
class PredictTask:
    """``[predict]``: the arguments of :func:`bayes_sbm.reports.predict_run` (beta None: the point's ``predictive.beta``)."""

    beta: float | None = None
    num_points: int = 2000
    seed: int = 0
    max_draws: int | None = None


@dataclass(frozen=True)
class Task:
    """What :func:`run_point` does on a point: ``kind`` in :data:`TASKS` and its settings."""

    kind: str = "fit"
    evidence: EvidenceTask = field(default_factory=EvidenceTask)
    predict: PredictTask = field(default_factory=PredictTask)

    def settings(self, point: Point | None = None) -> dict:
        """The settings that a finished point must match (resolved for ``point``), JSON-ready."""
        if self.kind == "evidence":
            return dataclasses.asdict(self.evidence)
        if self.kind == "predict":
            s = dataclasses.asdict(self.predict)
            if s["beta"] is None and point is not None:
                s["beta"] = point.spec.predictive.beta
            return s
        return {}


@dataclass(frozen=True)
class Point:
    """One grid point.

    Attributes
    ----------
    index : tuple of int
        Position in the grid (one index per grid key, in file order).
    values : dict
        Grid key → the validated spec value.
    name : str
        Folder name, from the values (:func:`point_name`).
    folder : pathlib.Path
        Absolute point folder ``out/name``.
    spec : specs.Spec
        The base spec with ``[set]`` and the point's values applied.
    """

    index: tuple[int, ...]
    values: dict
    name: str
    folder: Path
    spec: Spec


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file (:func:`load_sweep`).

    Attributes
    ----------
    name, description : str
    path : pathlib.Path or None
        The sweep file (None when parsed from a mapping).
    base : specs.Spec
        The base spec (``[set]`` not applied); with a ``spec`` grid, the first one.
    bases : dict
        Spec name → base spec of a ``spec`` grid (``{}`` for a single ``base``).
    grid : dict
        Grid key → tuple of validated values, in file order.
    fixed : dict
        ``[set]``: spec key → value, applied to every point.
    task : Task
    out : pathlib.Path
        Absolute results folder.
    points : tuple of Point
        The cartesian product, last grid key fastest.
    """

    name: str
    description: str
    path: Path | None
    base: Spec
    grid: dict
    fixed: dict
    task: Task
    out: Path
    points: tuple[Point, ...]
    bases: dict = field(default_factory=dict)

    def base_files(self) -> list[str]:
        """The base spec file(s) as strings (one per ``spec`` grid value)."""
        specs_ = list(self.bases.values()) or [self.base]
        return ["" if b.path is None else str(b.path) for b in specs_]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.grid.values())

    def to_dict(self) -> dict:
        """JSON-ready description (written as ``out/sweep.json``)."""
        return {
            "name": self.name, "description": self.description,
            "sweep_file": None if self.path is None else str(self.path),
            "base": self.base_files() if self.bases else (None if self.base.path is None else str(self.base.path)),
            "base_spec": {n: b.to_dict() for n, b in self.bases.items()} if self.bases else self.base.to_dict(),
            "grid": {k: list(v) for k, v in self.grid.items()}, "set": dict(self.fixed),
            "task": self.task.kind, "settings": self.task.settings(), "out": str(self.out),
            "points": [p.name for p in self.points],
        }


# --------------------------------------------------------------------------
# parsing (the spec schema's checks: one message format, one home for the rules)
# --------------------------------------------------------------------------
#: Top-level scalar keys: type and rule (``name`` and ``description`` as in a spec).
_TOP_FIELDS = {
    "name": _Field("str", check=_spec_name),
    "description": _Field("str"),
    "task": _Field("str", check=_one_of(*TASKS)),
    "base": _Field("str", check=_non_empty),
    "out": _Field("str", check=_non_empty),
}
#: ``[evidence]`` and ``[predict]`` keys (defaults: :class:`EvidenceTask`, :class:`PredictTask`).
_TASK_FIELDS = {
    "evidence": {
        "rungs": _Field("int", check=_ge(1)), "max_rungs": _Field("int", check=_ge(1)),
        "samples": _Field("int", check=_ge(1)), "warmup": _Field("int", check=_ge(0)),
        "svi_steps": _Field("int", check=_ge(1)), "ti": _Field("bool"), "svi": _Field("bool"),
    },
    "predict": {
        "beta": _Field("float", check=_gt(0)), "num_points": _Field("int", check=_ge(2)),
        "seed": _Field("int", check=_SEED), "max_draws": _Field("int", check=_ge(1)),
    },
}


def _top(raw: Mapping, key: str, source: str, default: Any = None):
    """A checked top-level value (``default`` when absent)."""
    return _checked(_TOP_FIELDS[key], raw[key], source, key, SweepError) if key in raw else default


def _task_table(raw: Mapping, table: str, source: str) -> dict:
    """The checked keys given in ``[evidence]`` or ``[predict]``."""
    given = raw.get(table, {})
    if not isinstance(given, Mapping):
        raise SweepError(source, table, f"must be a table [{table}], got {toml_type_name(given)} {given!r}")
    fields = _TASK_FIELDS[table]
    for key in given:
        if key not in fields:
            raise SweepError(source, f"{table}.{key}", f"unknown key{_suggest(key, fields)}; allowed keys: {', '.join(fields)}")
    return {key: _checked(fields[key], value, source, f"{table}.{key}", SweepError) for key, value in given.items()}


def _parse_task(raw: Mapping, source: str) -> Task:
    kind = _top(raw, "task", source)
    for table in _TASK_FIELDS:
        if table in raw and table != kind:
            raise SweepError(source, table, f"[{table}] is only used with task = {table!r}, got task = {kind!r}")
    evidence = EvidenceTask(**_task_table(raw, "evidence", source))
    if evidence.max_rungs < evidence.rungs:
        raise SweepError(source, "evidence.max_rungs", f"must be >= evidence.rungs = {evidence.rungs}, got {evidence.max_rungs}")
    if not (evidence.ti or evidence.svi):
        raise SweepError(source, "evidence.svi", "ti and svi are both false: at least one estimator family must run")
    return Task(kind, evidence, PredictTask(**_task_table(raw, "predict", source)))


def _load_base(raw: Mapping, source: str, base_dir: Path) -> Spec:
    base_path = base_dir / os.path.expanduser(_top(raw, "base", source))
    if not base_path.is_file():
        what = "is a folder, not a spec file" if base_path.is_dir() else "spec file not found"
        raise SweepError(source, "base", f"{what}: {base_path}")
    try:
        return load_spec(base_path)
    except SpecError as exc:
        raise SweepError(source, "base", str(exc)) from None


def _load_bases(raw: Mapping, source: str, base_dir: Path) -> dict[str, Spec]:
    """``[grid] spec = [files]``: name → spec, in file order (names distinct); ``{}`` when the grid has no ``spec``."""
    grid = raw.get("grid")
    if not isinstance(grid, Mapping) or SPEC_GRID_KEY not in grid:
        return {}
    key = f"grid.{SPEC_GRID_KEY}"
    if "base" in raw:
        raise SweepError(source, "base", f"give either base or [grid] {SPEC_GRID_KEY} = [spec files], not both")
    files = grid[SPEC_GRID_KEY]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f.strip() for f in files):
        raise SweepError(source, key, f"must be a non-empty list of spec file names, got {toml_type_name(files)} {files!r}")
    bases: dict[str, Spec] = {}
    for f in files:
        path = base_dir / os.path.expanduser(f)
        if not path.is_file():
            what = "is a folder, not a spec file" if path.is_dir() else "spec file not found"
            raise SweepError(source, key, f"{what}: {path}")
        try:
            spec = load_spec(path)
        except SpecError as exc:
            raise SweepError(source, key, str(exc)) from None
        if spec.name in bases:
            raise SweepError(source, key, f"two spec files have the name {spec.name!r} ({bases[spec.name].path}, {path})")
        bases[spec.name] = spec
    return bases


def _out_folder(raw: Mapping, source: str, base_dir: Path, out: str | os.PathLike | None) -> Path:
    if out is not None:
        out_path = Path(out).resolve()
    elif "out" in raw:
        out_path = (base_dir / os.path.expanduser(_top(raw, "out", source))).resolve()
    else:
        raise SweepError(source, "out", "missing: give out = \"FOLDER\" (relative to the sweep file) or pass --out")
    if out_path.exists() and not out_path.is_dir():
        raise SweepError(source, "out", f"{out_path} exists and is not a folder")
    return out_path


def _dotted_table(raw: Mapping, table: str, source: str) -> dict[str, Any]:
    """``[grid]`` or ``[set]`` as dotted spec key → value (quoted ``"model.N"`` and TOML dotted ``model.N`` alike)."""
    given = raw.get(table, {})
    if not isinstance(given, Mapping):
        raise SweepError(source, table, f"must be a table [{table}], got {toml_type_name(given)} {given!r}")
    flat: dict[str, Any] = {}
    for key, value in given.items():
        items = [(f"{key}.{k}", v) for k, v in value.items()] if isinstance(value, Mapping) and "." not in key else [(key, value)]
        for dotted, v in items:
            if dotted in flat:
                raise SweepError(source, f"{table}.{dotted}", "given twice")
            parts = dotted.split(".")
            if len(parts) != 2 or parts[0] not in SCHEMA:
                tables = ", ".join(SCHEMA)
                raise SweepError(source, f"{table}.{dotted}",
                                 f"must be a spec key 'table.key' with table one of {tables}{_suggest(parts[0], SCHEMA)}")
            if parts[1] not in SCHEMA[parts[0]]:
                raise SweepError(source, f"{table}.{dotted}",
                                 f"unknown spec key{_suggest(parts[1], SCHEMA[parts[0]])}; [{parts[0]}] has {', '.join(SCHEMA[parts[0]])}")
            if isinstance(v, Mapping):
                raise SweepError(source, f"{table}.{dotted}", f"must not be a table, got {v!r}")
            flat[dotted] = v
    return flat


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value)) or "_"


def point_name(values: Mapping[str, Any]) -> str:
    """The folder name of a point: ``key=value`` joined by ``__`` in grid order (``model.N=20__data.seed=0``).

    Floats are written by ``repr`` (``0.5``, ``1e-05``), booleans as
    ``true``/``false``, strings with characters outside ``[A-Za-z0-9.+-]``
    replaced by ``_``. A name longer than :data:`MAX_NAME` is cut and ends in
    ``__`` and 12 hex digits of its SHA-1.
    """
    name = "__".join(f"{key}={_format_value(v)}" for key, v in values.items())
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 14]}__{hashlib.sha1(name.encode()).hexdigest()[:12]}"
    return name


def _raw_grid(raw: Mapping, source: str, spec_count: int = 0) -> dict[str, list]:
    """``[grid]`` as written (without ``spec``, of ``spec_count`` files): spec key → non-empty list; at most :data:`MAX_POINTS` points."""
    if "grid" not in raw:
        raise SweepError(source, "grid", "missing required table [grid]")
    given = raw["grid"]
    if isinstance(given, Mapping) and SPEC_GRID_KEY in given:
        raw = {**raw, "grid": {k: v for k, v in given.items() if k != SPEC_GRID_KEY}}
    grid_raw = _dotted_table(raw, "grid", source)
    if not grid_raw and not spec_count:
        raise SweepError(source, "grid", "must name at least one spec key, e.g. \"model.N\" = [100, 200]")
    for key, values in grid_raw.items():
        if not isinstance(values, list):
            raise SweepError(source, f"grid.{key}", f"must be a list of values, got {toml_type_name(values)} {values!r}")
        if not values:
            raise SweepError(source, f"grid.{key}", "must not be an empty list")
    count = max(spec_count, 1) * math.prod(len(v) for v in grid_raw.values())
    if count > MAX_POINTS:
        raise SweepError(source, "grid", f"{count} points, more than {MAX_POINTS}")
    return grid_raw


def _typed_values(key: str, values: list, fixed_spec: Spec, source: str) -> tuple:
    """The values of a grid key, each checked alone on the base with ``[set]``, typed as the spec types them (1 → 1.0)."""
    table, name = key.split(".")
    typed = []
    for v in values:
        if isinstance(v, (list, Mapping)):
            raise SweepError(source, f"grid.{key}", f"values must be numbers, strings or booleans, got {toml_type_name(v)} {v!r}")
        try:
            fixed_spec.with_overrides({key: v})
        except SpecError as exc:
            if exc.key == key:
                raise SweepError(source, f"grid.{key}", exc.reason) from None
            # else a combination (e.g. N < K + 1 with the base's K) that other grid keys may fix: checked per point
        typed.append(_coerce(SCHEMA[table][name].kind, v)[0])  # the type is right: a wrong one fails above with exc.key == key
    dup = next((v for i, v in enumerate(typed) if v in typed[:i]), None)
    if dup is not None:
        raise SweepError(source, f"grid.{key}", f"repeats the value {dup!r}")
    return tuple(typed)


def parse_sweep(raw: Mapping[str, Any], *, source: str = "<string>", base_dir: str | os.PathLike | None = None,
                default_name: str = "sweep", out: str | os.PathLike | None = None) -> Sweep:
    """Validate a sweep given as a mapping (e.g. parsed TOML).

    Parameters
    ----------
    raw : mapping
        Top-level keys and tables as in the module docstring.
    source : str
        Name used as ``{file}`` in error messages.
    base_dir : path-like, optional
        Folder that ``base`` and ``out`` are relative to (default: the working directory).
    default_name : str
        ``name`` when the mapping has none.
    out : path-like, optional
        Results folder overriding ``out`` (relative to the working directory).

    Raises
    ------
    SweepError
        Unknown or missing key, wrong type, empty or repeated grid list, a
        base spec that cannot be read, or a point whose spec does not validate.
    """
    base_dir = Path.cwd() if base_dir is None else Path(base_dir)
    if not isinstance(raw, Mapping):
        raise SweepError(source, "", f"a sweep must be a table, got {toml_type_name(raw)}")
    for key in raw:
        if key not in TOP_LEVEL:
            raise SweepError(source, str(key), f"unknown key{_suggest(str(key), TOP_LEVEL)}; allowed: {', '.join(TOP_LEVEL)}")
    name = _top(raw, "name", source, default_name)
    description = _top(raw, "description", source, "")
    bases = _load_bases(raw, source, base_dir)
    for key in ("base", "task"):
        if key not in raw and not (key == "base" and bases):
            raise SweepError(source, key, "missing required key" + (f" (or [grid] {SPEC_GRID_KEY} = [spec files])" if key == "base" else ""))
    task = _parse_task(raw, source)
    base = next(iter(bases.values())) if bases else _load_base(raw, source, base_dir)
    out_path = _out_folder(raw, source, base_dir, out)
    grid_raw = _raw_grid(raw, source, len(bases))
    fixed = _dotted_table(raw, "set", source)
    for key in grid_raw:
        if key in fixed:
            raise SweepError(source, f"set.{key}", f"is also a grid key (grid.{key}); give it in one of them")

    def overridden(spec_base: Spec, overrides: dict, what: str) -> Spec:
        try:
            return spec_base.with_overrides(overrides)
        except SpecError as exc:
            key = f"grid.{exc.key}" if exc.key in grid_raw else f"set.{exc.key}" if exc.key in fixed else exc.key or "base"
            raise SweepError(source, key, f"{exc.reason}{what}") from None

    fixed_specs = {name: overridden(b, fixed, f" (spec {name})" if bases else "") for name, b in (bases or {None: base}).items()}
    grid = {SPEC_GRID_KEY: tuple(bases)} if bases else {}
    for key, values in grid_raw.items():
        typed = [_typed_values(key, values, fs, source) for fs in fixed_specs.values()]
        grid[key] = typed[0]
    points = []
    names: dict[str, dict] = {}
    for index in itertools.product(*(range(len(v)) for v in grid.values())):
        values = {key: grid[key][i] for key, i in zip(grid, index)}
        label = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        spec_base = bases[values[SPEC_GRID_KEY]] if bases else base
        spec = overridden(spec_base, {**fixed, **{k: v for k, v in values.items() if k != SPEC_GRID_KEY}}, f" (at the point {label})")
        folder = point_name(values)
        if folder in names:
            raise SweepError(source, "grid", f"the points {names[folder]} and {values} get the same folder name {folder!r}")
        names[folder] = values
        points.append(Point(tuple(index), values, folder, out_path / folder, spec))
    return Sweep(name, description, None, base, grid, fixed, task, out_path, tuple(points), bases)


def load_sweep(path: str | os.PathLike, *, out: str | os.PathLike | None = None) -> Sweep:
    """Read and validate a sweep file (``base`` and ``out`` relative to its folder; ``out`` overrides the file's ``out``).

    Raises
    ------
    SweepError
        The file cannot be read, is not TOML, or does not validate (see :func:`parse_sweep`).
    """
    p = Path(path)
    source = os.fspath(path)
    raw = read_toml_file(p, "sweep", SweepError)
    sweep = parse_sweep(raw, source=source, base_dir=p.resolve().parent, default_name=p.stem, out=out)
    return dataclasses.replace(sweep, path=p.resolve())


# --------------------------------------------------------------------------
# markers and resume
# --------------------------------------------------------------------------
class PointStatus(NamedTuple):
    """A point and where it stands: ``state`` is ``"done"`` (its stored ``row`` is reused), ``"new"``,
    ``"retry"`` (a failed or interrupted earlier attempt) or ``"changed"`` (finished for another spec, task or settings)."""

    point: Point
    state: str
    row: dict | None


def _normal(obj):
    """``obj`` as it reads back from JSON (for comparing with a marker)."""
    return json.loads(json.dumps(obj, default=str))


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _task_files(task: Task) -> tuple[str, ...]:
    run = (f"{RUN_DIR}/meta.json", f"{RUN_DIR}/inference.nc")
    return {"fit": run, "predict": (*run, PREDICT_FILE), "evidence": (EVIDENCE_FILE,)}[task.kind]


def _status(point: Point, task: Task) -> PointStatus:
    marker = _read_marker(point.folder)
    if marker is None:
        return PointStatus(point, "new", None)
    same = (marker.get("task") == task.kind and point.spec.matches(marker.get("spec"))
            and marker.get("settings") == _normal(task.settings(point)))
    if marker.get("status") == "ok" and same and isinstance(marker.get("row"), dict) \
            and all((point.folder / f).is_file() for f in _task_files(task)):
        return PointStatus(point, "done", marker["row"])
    return PointStatus(point, "changed" if marker.get("status") == "ok" and not same else "retry", None)


def plan(sweep: Sweep) -> list[PointStatus]:
    """Where every point stands (reads the ``point.json`` markers; runs nothing)."""
    return [_status(p, sweep.task) for p in sweep.points]


# --------------------------------------------------------------------------
# one point
# --------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _error_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_checks.one_line(exc)}"


def _number(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out


def fit_row(dt, meta: dict) -> dict:
    """Posterior means and MCSE of λ₁, u₁, M, signal₁, μ, (1/N) log Z next to ``meta["theory"]``, and the sampler summary."""
    post = dt["posterior"]
    th = meta.get("theory") if isinstance(meta.get("theory"), dict) else {}
    row: dict[str, Any] = {}
    for name, var, k, key in OBSERVABLES:
        draws = np.asarray(post[var].values, dtype=float)
        if k is not None:
            draws = draws[..., k]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = _stats.mean_mcse(draws.reshape(draws.shape[0], -1))
        ref = th.get(key)
        if k is not None:
            ref = ref[k] if isinstance(ref, list) and len(ref) > k else None
        row |= {f"{name}_mean": m.mean, f"{name}_mcse": m.mcse, f"{name}_theory": _number(ref)}
    ls = meta.get("latent_summary") if isinstance(meta.get("latent_summary"), dict) else {}
    timing = meta.get("timing") if isinstance(meta.get("timing"), dict) else {}
    row |= {
        "phase": th.get("phase"),
        "log_evidence_per_n_theory": _number(th.get("log_evidence_per_n")),
        "method": dt.attrs.get("method", (meta.get("spec") or {}).get("inference", {}).get("method")),
        "divergences": _number(meta.get("divergences")),
        "min_ess_bulk": _number(ls.get("min_ess_bulk")),
        "max_r_hat": _number(ls.get("max_r_hat")),
        "num_warnings": len(meta.get("warnings") or []),
        "fit_s": _number(timing.get("wall_s")),
    }
    return row


def predict_row(result: dict) -> dict:
    """Typical and predictive KLs per N (:func:`bayes_sbm.reports.predict_run`) with their SEs and theory."""
    th = result.get("theory") or {}
    row: dict[str, Any] = {}
    for name, section, direction in DIVERGENCES:
        e = (result.get(section) or {}).get(direction) or {}  # no predictive section: a band run above BAND_PREDICTIVE_MAX_N
        row |= {f"{name}_per_n": _number(e.get("per_n")), f"{name}_se_per_n": _number(e.get("se_per_n")),
                f"{name}_theory": _number(th.get(name))}
    row["predict_num_warnings"] = len(result.get("warnings") or [])
    return row


def evidence_row(report: dict) -> dict:
    """Every estimator's (1/N) log Y and SE (:func:`bayes_sbm.reports.evidence_report`) next to the theory."""
    row: dict[str, Any] = {}
    for name in ESTIMATORS:
        e = (report.get("estimators") or {}).get(name)
        row |= {f"{name}_per_n": _number(e["per_n"]) if e else None, f"{name}_se_per_n": _number(e["se_per_n"]) if e else None}
    row |= {"log_evidence_per_n_theory": _number(report.get("theory_per_n")), "phase": report.get("phase"),
            "num_warnings": len(report.get("warnings") or []), "evidence_s": _number(sum((report.get("seconds") or {}).values()))}
    return row


def _fit(point: Point, progress_bar: bool) -> runs.RunData:
    """The point's run folder: fitted now, or a finished run of the same spec reused."""
    run = point.folder / RUN_DIR
    if (run / "meta.json").is_file() and (run / "inference.nc").is_file():
        dt, meta = runs.load_run(run)
        if not point.spec.matches(meta.get("spec")):
            raise ValueError(f"{run}: holds a finished run of another spec (the base spec or [set] changed since it was fitted); "
                             "remove the point folder or choose another out")
        return runs.RunData(dt, meta)
    return runs.fit_spec(point.spec, run, progress_bar=progress_bar)


def run_point(point: Point, task: Task, *, progress_bar: bool = False, release_compiled: bool = False) -> dict:
    """Run one point and return its result row; never raises for a failure of the point.

    Writes ``point.json`` (status ``running``, then ``ok`` or ``error``) and the
    task's files in the point folder. A failure becomes a row with status
    ``"error"`` and the one-line error (the traceback goes to ``point.json``).
    With ``release_compiled`` the point's compiled programs are dropped
    afterwards (``jax.clear_caches()``): a process that runs many points (an
    evidence ladder compiles dozens of programs) otherwise runs out of memory
    for JIT code ("LLVM ERROR: Unable to allocate section memory", seen here).

    Returns
    -------
    dict
        Grid values, ``point``, ``status``, ``error``, ``seconds`` and the task's columns (:data:`TASK_COLUMNS`).
    """
    status = _status(point, task)
    if status.state == "done":  # idempotent: a task re-sent by Dask (its worker died after finishing it) costs nothing
        return status.row
    t0 = time.perf_counter()
    settings = task.settings(point)
    marker: dict[str, Any] = {"point": point.name, "values": point.values, "task": task.kind, "status": "running",
                              "spec": point.spec.to_dict(), "settings": settings, "started_at": _now(),
                              "host": socket.gethostname(), "pid": os.getpid()}
    row: dict[str, Any] = {}
    error = tb = None
    try:
        point.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(point.folder / MARKER, marker)
        if task.kind == "evidence":
            report = reports.evidence_report(point.spec, ladder=task.evidence.ladder(), svi_steps=task.evidence.svi_steps,
                                             ti=task.evidence.ti, svi=task.evidence.svi, progress_bar=progress_bar)
            write_json_atomic(point.folder / EVIDENCE_FILE, report | {"meta": run_metadata(seed=point.spec.inference.seed, spec=point.spec.to_dict())})
            row = evidence_row(report)
        else:
            dt, meta = _fit(point, progress_bar)
            row = fit_row(dt, meta)
            if task.kind == "predict":
                t1 = time.perf_counter()
                result = reports.predict_run(point.folder / RUN_DIR, settings["beta"], jax.random.key(settings["seed"]), None,
                                             settings["num_points"], max_draws=settings["max_draws"])
                write_json_atomic(point.folder / PREDICT_FILE, result)
                row |= predict_row(result) | {"predict_s": time.perf_counter() - t1}
    except Exception as exc:  # a failed point is recorded, the others go on
        error, tb, row = _error_line(exc), traceback.format_exc(), {}
    finally:
        if release_compiled:
            jax.clear_caches()
    row = {**point.values, "point": point.name, "status": "ok" if error is None else "error", "error": error,
           "seconds": time.perf_counter() - t0, **row}
    marker |= {"status": row["status"], "error": error, "traceback": tb, "finished_at": _now(), "row": row}
    try:
        write_json_atomic(point.folder / MARKER, marker)
    except OSError as exc:
        row |= {"status": "error", "error": _error_line(exc)}
    return row


# --------------------------------------------------------------------------
# the results table
# --------------------------------------------------------------------------
def columns(sweep: Sweep, rows=()) -> list[str]:
    """Table columns: grid keys, :data:`COMMON_COLUMNS`, the task's columns, then any others in the rows (sorted)."""
    cols = [*sweep.grid, *COMMON_COLUMNS, *TASK_COLUMNS[sweep.task.kind]]
    extra = sorted({k for row in rows for k in row} - set(cols))
    return cols + extra


def _missing_row(point: Point, status: str, error: str | None) -> dict:
    return {**point.values, "point": point.name, "status": status, "error": error}


def read_rows(sweep: Sweep) -> list[dict]:
    """The stored row of every point (``status`` ``"not run"`` where no attempt has finished), in point order."""
    rows = []
    for p in sweep.points:
        marker = _read_marker(p.folder)
        row = marker.get("row") if marker and marker.get("task") == sweep.task.kind else None
        rows.append(row if isinstance(row, dict) else _missing_row(p, "not run", None))
    return rows


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_results(sweep: Sweep, rows: list[dict]) -> tuple[Path, Path]:
    """Write ``out/results.csv`` (one row per point) and ``out/results.nc`` (grid keys as dimensions), atomically.

    ``rows`` are in point order (:attr:`Sweep.points`). In ``results.nc``
    every column but the grid keys is a variable over the grid: floats (NaN
    where missing) or text (:data:`TEXT_COLUMNS`).
    """
    if len(rows) != len(sweep.points):
        raise ValueError(f"rows: expected one per point ({len(sweep.points)}), got {len(rows)}")
    cols = columns(sweep, rows)
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in cols])
    csv_path = write_text_atomic(sweep.out / RESULTS_CSV, buf.getvalue())

    dims, shape = list(sweep.grid), sweep.shape
    data_vars = {}
    for col in cols[len(dims):]:
        values = [row.get(col) for row in rows]
        numeric = col not in TEXT_COLUMNS and all(v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool)) for v in values)
        if numeric:
            arr = np.array([math.nan if v is None else float(v) for v in values], dtype=float)
        else:
            arr = np.array(["" if v is None else str(v) for v in values], dtype=object)
        data_vars[col] = (dims, arr.reshape(shape))
    coords = {k: (k, np.asarray(list(v))) for k, v in sweep.grid.items()}
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({
        "sweep": sweep.name, "description": sweep.description, "task": sweep.task.kind,
        "base": ", ".join(sweep.base_files()),
        "sweep_file": "" if sweep.path is None else str(sweep.path),
        "set": json.dumps(sweep.fixed), "settings": json.dumps(sweep.task.settings()),
        "created_at": _now(), "creation_library": "bayes_sbm", "creation_library_version": __version__,
    })
    nc_path = sweep.out / RESULTS_NC
    write_netcdf_atomic(nc_path, ds)
    return csv_path, nc_path


# --------------------------------------------------------------------------
# execution on Dask
# --------------------------------------------------------------------------
class SweepResult(NamedTuple):
    """What :func:`run_sweep` did: every point's row (point order), how many ran, and the two tables."""

    rows: list[dict]
    ran: int
    csv: Path
    netcdf: Path

    @property
    def errors(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") != "ok"]


def pinned_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a single-threaded worker: XLA (``XLA_FLAGS``) and BLAS/OpenMP on one thread."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    extra = [f for f in XLA_SINGLE_THREAD.split() if f.split("=")[0] not in flags]
    return {"XLA_FLAGS": " ".join([flags, *extra]).strip(), **{v: "1" for v in THREAD_VARS}}


def format_progress(row: dict, done: int, total: int) -> str:
    """``[3/12] model.N=20__data.seed=0: ok (12.3 s)`` or ``…: error: ValueError: …``."""
    head = f"[{done}/{total}] {row.get('point')}"
    if row.get("status") == "ok":
        return f"{head}: ok ({row.get('seconds', math.nan):.1f} s)"
    return f"{head}: error: {row.get('error')}"


@contextlib.contextmanager
def _client(client, scheduler, workers, processes, log):
    """The Dask client to use: the given one, one connected to ``scheduler``, or a new LocalCluster's."""
    from dask.distributed import Client, LocalCluster  # heavy (~1 s): imported when a sweep runs, not with the package

    if client is not None:
        yield client
        return
    if scheduler is not None:
        try:
            c = Client(scheduler, timeout="30s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValueError(f"scheduler: cannot connect to {scheduler!r} ({_checks.one_line(exc)})") from None
        with c:
            if workers:
                log(f"waiting for {workers} workers at {scheduler}")
                c.wait_for_workers(workers)
            yield c
        return
    n = int(workers or os.cpu_count() or 1)
    if not processes and n > 1:  # NumPyro's effect-handler stack is one per process: two model traces at once corrupt it
        log(f"workers as threads: 1 worker, not {n} (NumPyro models cannot run in two threads of one process)")
        n = 1
    kwargs = {"env": pinned_env()} if processes else {}
    nanny_log = logging.getLogger("distributed.nanny")
    level = nanny_log.level
    try:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=":0", **kwargs) as cluster:
            try:
                with Client(cluster, set_as_default=False) as c:
                    yield c
            finally:  # a worker whose JAX threads keep it alive over 4 s is killed at shutdown: expected, not worth a warning
                nanny_log.setLevel(logging.ERROR)
    finally:
        nanny_log.setLevel(level)


def run_sweep(sweep: Sweep, *, client=None, scheduler: str | None = None, workers: int | None = None, processes: bool = True,
              progress_bar: bool = False, on_result: Callable[[dict, int, int], None] | None = None,
              log: Callable[[str], None] | None = None) -> SweepResult:
    """Run every unfinished point on Dask distributed and write the results tables.

    Parameters
    ----------
    sweep : Sweep
    client : dask.distributed.Client, optional
        Use this client (left open).
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``), e.g. of a
        dask-jobqueue ``SLURMCluster``; its workers must import ``bayes_sbm``
        and see ``sweep.out``.
    workers : int, optional
        LocalCluster workers (default: one per core); with ``scheduler``,
        wait until this many workers are connected.
    processes : bool
        LocalCluster workers as processes (one thread each, pinned by
        :func:`pinned_env`); False runs one worker as a thread of this
        process (NumPyro's handler stack is per process: never two at once).
    progress_bar : bool
        NumPyro progress bars in the workers.
    on_result : callable, optional
        Called as ``on_result(row, done, total)`` when a point finishes
        (default: print :func:`format_progress`).
    log : callable, optional
        Receives other progress lines (default: print).

    Returns
    -------
    SweepResult
        Rows of every point (skipped points: their stored rows), the number
        of points run now and the paths of ``results.csv`` and ``results.nc``.
        An interrupted sweep still writes the tables (status ``"not run"``
        for the points left) before the exception propagates.
    """
    log = log or (lambda text: print(text, flush=True))
    on_result = on_result or (lambda row, done, total: print(format_progress(row, done, total), flush=True))
    statuses = plan(sweep)
    rows: dict[str, dict] = {s.point.name: s.row for s in statuses if s.state == "done"}
    todo = [s.point for s in statuses if s.state != "done"]
    total, done = len(sweep.points), len(rows)

    def start() -> None:
        sweep.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(sweep.out / SWEEP_FILE, run_metadata(**sweep.to_dict()))

    def finish() -> tuple[list[dict], Path, Path]:
        ordered = [rows.get(p.name) or _missing_row(p, "not run", None) for p in sweep.points]
        return ordered, *write_results(sweep, ordered)

    if not todo:
        start()
        ordered, csv_path, nc_path = finish()
        return SweepResult(ordered, 0, csv_path, nc_path)
    with _client(client, scheduler, workers, processes, log) as c:
        from dask.distributed import as_completed

        start()
        token = uuid.uuid4().hex[:8]
        futures = c.map(run_point, todo, task=sweep.task, progress_bar=progress_bar, release_compiled=True, pure=False,
                        key=[f"sweep-{token}-{i}" for i in range(len(todo))])
        by_key = {f.key: p for f, p in zip(futures, todo)}
        try:
            for future in as_completed(futures, loop=c.loop):
                point = by_key[future.key]
                try:
                    row = future.result()
                except Exception as exc:  # the worker died or the task could not run: record it, go on
                    row = {**_missing_row(point, "error", _error_line(exc)), "seconds": None}
                future.release()  # the row is here: a worker lost later must not make Dask run the point again
                rows[point.name] = row
                done += 1
                on_result(row, done, total)
        finally:  # an interrupted sweep still leaves its tables (the points left: "not run")
            c.cancel([f for f in futures if not f.done()])
            ordered, csv_path, nc_path = finish()
    return SweepResult(ordered, len(todo), csv_path, nc_path)
