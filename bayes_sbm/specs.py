"""Declarative model specs: a strict TOML schema for one posterior fit.

A *spec* names the model (THEORY.md §3: prior strength γ, tempering η,
sampling temperature β), the data (teacher–student samples or a file) and the
inference settings (NUTS or SVI). Specs live in ``models/*.toml``; they are
parsed with :mod:`tomllib`, validated strictly and returned as frozen
dataclasses. Every problem is reported as one :class:`SpecError` whose
message has the form ``"{file}: {table}.{key}: {reason}"``, e.g.
``models/fmo.toml: model.gamma: must be > 0, got -1.0``.

Schema
------
Top level (optional keys):

==================  ======  ======================  ================================
key                 type    default                 rule
==================  ======  ======================  ================================
``name``            string  the file stem           non-empty, no ``/`` or ``\\``
``description``     string  ``""``                  free text
==================  ======  ======================  ================================

``[model]`` — the tempered posterior (THEORY.md §3):

=========================  ======  =============  ============================================
key                        type    default        rule
=========================  ======  =============  ============================================
``N``                      int     required       2 ≤ N ≤ 100000; ≥ K + 1 for teacher data
``gamma``                  float   required       > 0, finite (GOE prior strength γ)
``eta``                    float   required       > 0, finite (tempering η; 1 = Bayes)
``beta``                   float   ``1.0``        > 0, finite (sampling inverse temperature β)
``parametrization``        string  ``"auto"``     ``"auto"``, ``"band"``, ``"aligned"``, ``"noncentred"``,
                                                  ``"centred"`` (auto: band when N ≥ 50 and
                                                  N ≥ 4(r + 1), else aligned)
=========================  ======  =============  ============================================

``[data]`` — where the K data points come from:

================  =========  ==========================  =============================================
key               type       default                     rule
================  =========  ==========================  =============================================
``source``        string     required                    ``"teacher"`` or ``"file"``
``omega``         float      required if source=teacher  > 0, finite (rank-one teacher eigenvalue ω;
                                                         ω ≤ 1 is allowed: a paramagnetic teacher)
``K``             int        required if source=teacher  ≥ 1 (number of teacher samples)
``seed``          int        required if source=teacher  0 ≤ seed ≤ 2³² − 1 (teacher PRNG seed)
``path``          string     required if source=file     ``.npy``, ``.csv`` or ``.txt``, relative to
                                                         the spec file's folder (or absolute); the
                                                         file must exist when source=file
``project``       bool       ``false``                   rescale file rows onto the sphere (after
                                                         centring; overflow-safe)
``center``        bool       ``false``                   source=file only: subtract the per-coordinate
                                                         mean of the training rows before projecting
``train_rows``    int array  none (every row is fitted)  source=file only: row numbers (from 0) of the
                                                         file that are fitted, the other rows are held
                                                         out; non-empty, distinct, ≥ 0 (< rows of the
                                                         file is checked when the file is read)
``heldout_path``  string     none                        source=file only: a data file of held-out rows
                                                         (same formats and N; relative like ``path``);
                                                         not together with ``train_rows``
================  =========  ==========================  =============================================

The transform (the training mean, whether rows are projected, the training
rows' mean norm) is fitted on the training rows only and recorded in the run
folder (``RUN/transform.npz`` and ``meta.json`` ``"transform"``), so that
held-out rows (``RUN/heldout.npy``, in the data file's coordinates) and
generated samples go through, or back through, the same transform
(:class:`bayes_sbm.data.DataTransform`; the projection loses each row's norm:
inverted rows get the training rows' mean norm).

``[inference]`` — the sampler (all keys optional; keys of the other method
are allowed and ignored):

=========================  ======  ===================  ===============================================
key                        type    default              rule
=========================  ======  ===================  ===============================================
``method``                 string  ``"nuts"``           ``"nuts"`` or ``"svi"``
``num_warmup``             int     ``500``              ≥ 0 (NUTS warm-up draws per chain)
``num_samples``            int     ``500``              ≥ 1 (NUTS draws per chain)
``num_chains``             int     ``2``                1 ≤ num_chains ≤ 64
``seed``                   int     ``0``                0 ≤ seed ≤ 2³² − 1 (inference PRNG seed)
``target_accept``          float   ``0.8``              0 < target_accept < 1
``dense_mass``             bool    ``false``            dense instead of diagonal mass matrix
``max_tree_depth``         int     ``10``               1 ≤ max_tree_depth ≤ 30
``chain_method``           string  ``"auto"``           ``"auto"``, ``"parallel"``, ``"sequential"``,
                                                        ``"vectorized"``
``checkpoint_every``       int     ``0``                ≥ 0 (draws per saved segment; 0 = none)
``svi_guide``              string  ``"structured"``     ``"normal"``, ``"lowrank"``, ``"structured"``
``svi_steps``              int     ``3000``             ≥ 1
``svi_learning_rate``      float   ``0.01``             > 0, finite (initial Adam step size)
``svi_num_particles``      int     ``1``                ≥ 1 (ELBO particles per step)
``svi_draws``              int     ``1000``             ≥ 1 (draws from the fitted guide)
``svi_final_lr_fraction``  float   ``0.1``              in (0, 1] (Adam step size decays to this fraction)
``svi_rank``               int     ⌈√dim⌉               ≥ 1 (rank of the ``"lowrank"`` guide)
=========================  ======  ===================  ===============================================

``[predictive]`` — optional, the posterior predictive (THEORY.md §3):

==================  ======  ============================  ==============================
key                 type    default                       rule
==================  ======  ============================  ==============================
``beta``            float   ``model.beta``                > 0, finite (sampling β of P_pp)
``num_points``      int     ``data.K`` (teacher data;     ≥ 1 (predictive points per draw)
                            unset for file data: the
                            number of rows is used)
==================  ======  ============================  ==============================

Type rules: an ``int`` key rejects floats (also ``100.0``), booleans and
strings; a ``float`` key accepts integers and rejects booleans, strings, NaN
and ±inf; a ``bool`` key accepts only ``true``/``false``; an ``int array``
key accepts only an array of integers. Unknown tables and
keys are rejected (with a "did you mean" suggestion when one is close).

Example (``models/fmo.toml``)::

    name = "fmo"
    description = "FMo: condensed on the data outlier"

    [model]
    N = 100
    gamma = 0.5
    eta = 3.0

    [data]
    source = "teacher"
    omega = 2.5
    K = 2
    seed = 0

    [inference]
    method = "nuts"
    num_warmup = 500
    num_samples = 500
    num_chains = 2
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import numbers
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _checks
from .settings import CHAIN_METHODS, GUIDES, MAX_CHAINS, MAX_TREE_DEPTH, NutsSettings, SviSettings

_NUTS = NutsSettings()
_SVI = SviSettings()

__all__ = [
    "SpecError",
    "read_toml_file",
    "toml_type_name",
    "ModelSpec",
    "DataSpec",
    "InferenceSpec",
    "PredictiveSpec",
    "Spec",
    "SCHEMA",
    "TOP_LEVEL_KEYS",
    "load_spec",
    "parse_spec",
]

#: Largest seed accepted (one bound for specs, CLI and API: :data:`bayes_sbm._checks.MAX_SEED`).
MAX_SEED = _checks.MAX_SEED
#: Largest dimension accepted: the dense parametrisations hold N(N+1)/2 latents and the band one (m+1)N;
#: beyond 10^5 neither fits a workstation's memory (and N = 1e23 is a typo, not a model).
MAX_N = 100_000
#: Data-file suffixes understood by :func:`bayes_sbm.teacher.load_data`.
DATA_SUFFIXES = (".npy", ".csv", ".txt")


class SpecError(ValueError):
    """A spec that cannot be used; the message is ``"{file}: {table}.{key}: {reason}"``.

    Attributes
    ----------
    file : str
        The spec file (or the ``source`` given to :func:`parse_spec`).
    key : str
        Dotted key (``"model.gamma"``), a table name (``"predictive"``), a
        top-level key (``"name"``), or ``""`` for a problem with the whole
        file (unreadable, not TOML); the message is then ``"{file}: {reason}"``.
    reason : str
        What is wrong, including the offending value where there is one.
    """

    def __init__(self, file: str, key: str, reason: str):
        self.file = str(file)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.file}: {key}: {reason}" if key else f"{self.file}: {reason}")


# --------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------
_MISSING = object()


@dataclass(frozen=True)
class _Field:
    """One schema key: type, default (``_MISSING`` = required), range check, doc."""

    kind: str  # "int" | "float" | "bool" | "str" | "int_list"
    default: Any = _MISSING
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


def _gt(lo):
    return lambda v: None if v > lo else f"must be > {lo}, got {v!r}"


def _ge(lo):
    return lambda v: None if v >= lo else f"must be >= {lo}, got {v!r}"


def _between(lo, hi):
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v!r}"


def _open_unit(v):
    return None if 0.0 < v < 1.0 else f"must be in the open interval (0, 1), got {v!r}"


def _unit_right_closed(v):
    return None if 0.0 < v <= 1.0 else f"must be in the interval (0, 1], got {v!r}"


def _one_of(*choices):
    def check(v):
        if v in choices:
            return None
        near = difflib.get_close_matches(v, choices, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return f"must be one of {', '.join(repr(c) for c in choices)}, got {v!r}{hint}"

    return check


def _row_list(v):
    if not v:
        return "must list at least one row number"
    neg = [r for r in v if r < 0]
    if neg:
        return f"row numbers must be >= 0, got {neg[0]}"
    seen: set[int] = set()
    for r in v:
        if r in seen:
            return f"row {r} is listed twice"
        seen.add(r)
    return None


def _non_empty(v):
    return None if v.strip() else "must not be empty"


def _spec_name(v):
    if not v.strip():
        return "must not be empty"
    if "/" in v or "\\" in v:
        return f"must not contain a path separator, got {v!r}"
    return None


_SEED = _between(0, MAX_SEED)

#: Top-level scalar keys (all optional).
TOP_LEVEL_KEYS: dict[str, _Field] = {
    "name": _Field("str", None, _spec_name, "spec name (default: the file stem)"),
    "description": _Field("str", "", None, "free text"),
}

#: The tables of a spec and their keys (see the module docstring).
SCHEMA: dict[str, dict[str, _Field]] = {
    "model": {
        "N": _Field("int", _MISSING, _between(2, MAX_N), "dimension"),
        "gamma": _Field("float", _MISSING, _gt(0), "prior strength γ"),
        "eta": _Field("float", _MISSING, _gt(0), "tempering η"),
        "beta": _Field("float", 1.0, _gt(0), "sampling inverse temperature β"),
        "parametrization": _Field("str", "auto", _one_of("auto", "band", "aligned", "noncentred", "centred"), "latent parametrisation"),
    },
    "data": {
        "source": _Field("str", _MISSING, _one_of("teacher", "file"), "data source"),
        "omega": _Field("float", None, _gt(0), "teacher eigenvalue ω"),
        "K": _Field("int", None, _ge(1), "number of teacher samples"),
        "seed": _Field("int", None, _SEED, "teacher seed"),
        "path": _Field("str", None, _non_empty, "data file"),
        "project": _Field("bool", False, None, "rescale rows onto the sphere"),
        "center": _Field("bool", False, None, "subtract the training rows' mean (file data)"),
        "train_rows": _Field("int_list", None, _row_list, "training rows of the file; the rest is held out"),
        "heldout_path": _Field("str", None, _non_empty, "data file of held-out rows"),
    },
    "inference": {
        "method": _Field("str", "nuts", _one_of("nuts", "svi"), "inference method"),
        "num_warmup": _Field("int", _NUTS.num_warmup, _ge(0), "NUTS warm-up draws per chain"),
        "num_samples": _Field("int", _NUTS.num_samples, _ge(1), "NUTS draws per chain"),
        "num_chains": _Field("int", _NUTS.num_chains, _between(1, MAX_CHAINS), "chains"),
        "seed": _Field("int", 0, _SEED, "inference seed"),
        "target_accept": _Field("float", _NUTS.target_accept, _open_unit, "NUTS target acceptance"),
        "dense_mass": _Field("bool", _NUTS.dense_mass, None, "dense mass matrix"),
        "max_tree_depth": _Field("int", _NUTS.max_tree_depth, _between(1, MAX_TREE_DEPTH), "NUTS tree depth"),
        "chain_method": _Field("str", _NUTS.chain_method, _one_of(*CHAIN_METHODS), "chain method"),
        "checkpoint_every": _Field("int", _NUTS.checkpoint_every, _ge(0), "draws per checkpoint segment"),
        "svi_guide": _Field("str", _SVI.guide, _one_of(*GUIDES), "SVI guide"),
        "svi_steps": _Field("int", _SVI.num_steps, _ge(1), "SVI steps"),
        "svi_learning_rate": _Field("float", _SVI.learning_rate, _gt(0), "initial Adam step size"),
        "svi_final_lr_fraction": _Field("float", _SVI.final_lr_fraction, _unit_right_closed, "final/initial Adam step size"),
        "svi_num_particles": _Field("int", _SVI.num_particles, _ge(1), "ELBO particles"),
        "svi_draws": _Field("int", _SVI.num_draws, _ge(1), "draws from the guide"),
        "svi_rank": _Field("int", _SVI.rank, _ge(1), "rank of the low-rank guide (default ceil(sqrt(dim)))"),
    },
    "predictive": {
        "beta": _Field("float", None, _gt(0), "predictive β (default model.beta)"),
        "num_points": _Field("int", None, _ge(1), "predictive points (default K)"),
    },
}

_REQUIRED_TABLES = ("model", "data")
_REQUIRED_BY_SOURCE = {"teacher": ("omega", "K", "seed"), "file": ("path",)}


# --------------------------------------------------------------------------
# dataclasses
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """``[model]``: the tempered posterior of THEORY.md §3.

    Attributes
    ----------
    N : int
        Dimension (≥ 2).
    gamma : float
        GOE prior strength γ > 0.
    eta : float
        Tempering η > 0 (1 = Bayes).
    beta : float
        Sampling inverse temperature β > 0 of the likelihood ``p(x | βW)``.
    parametrization : {"auto", "band", "aligned", "noncentred", "centred"}
        Latent parametrisation used by the NumPyro model.
    """

    N: int
    gamma: float
    eta: float
    beta: float = 1.0
    parametrization: str = "auto"


@dataclass(frozen=True)
class DataSpec:
    """``[data]``: teacher–student samples or a data file.

    Attributes
    ----------
    source : {"teacher", "file"}
    omega : float or None
        Rank-one teacher eigenvalue ω (teacher data).
    K : int or None
        Number of teacher samples.
    seed : int or None
        Teacher PRNG seed.
    path : str or None
        The data file as written in the spec.
    project : bool
        Rescale file rows onto the sphere instead of rejecting them.
    center : bool
        Subtract the per-coordinate mean of the training rows first.
    train_rows : tuple of int or None
        Row numbers of the file that are fitted (the rest is held out); None: every row.
    heldout_path : str or None
        A data file of held-out rows, as written in the spec.
    resolved_path : str or None
        ``path`` made absolute against the spec file's folder (None if no path).
    resolved_heldout_path : str or None
        ``heldout_path`` made absolute likewise.
    """

    source: str
    omega: float | None = None
    K: int | None = None
    seed: int | None = None
    path: str | None = None
    project: bool = False
    center: bool = False
    train_rows: tuple[int, ...] | None = None
    heldout_path: str | None = None
    resolved_path: str | None = None
    resolved_heldout_path: str | None = None


@dataclass(frozen=True)
class InferenceSpec:
    """``[inference]``: NUTS or SVI settings (see the module docstring for ranges).

    Attributes
    ----------
    method : {"nuts", "svi"}
    num_warmup, num_samples, num_chains : int
        NUTS draws per chain and number of chains.
    seed : int
        PRNG seed of the fit.
    target_accept : float
    dense_mass : bool
    max_tree_depth : int
    chain_method : {"auto", "parallel", "sequential", "vectorized"}
    checkpoint_every : int
        Draws per saved NUTS segment (0 = no checkpoints).
    svi_guide : {"normal", "lowrank", "structured"}
    svi_steps, svi_num_particles, svi_draws : int
    svi_learning_rate, svi_final_lr_fraction : float
    svi_rank : int or None

    Defaults are those of :class:`~bayes_sbm.settings.NutsSettings` and
    :class:`~bayes_sbm.settings.SviSettings` (their single home).
    """

    method: str = "nuts"
    num_warmup: int = _NUTS.num_warmup
    num_samples: int = _NUTS.num_samples
    num_chains: int = _NUTS.num_chains
    seed: int = 0
    target_accept: float = _NUTS.target_accept
    dense_mass: bool = _NUTS.dense_mass
    max_tree_depth: int = _NUTS.max_tree_depth
    chain_method: str = _NUTS.chain_method
    checkpoint_every: int = _NUTS.checkpoint_every
    svi_guide: str = _SVI.guide
    svi_steps: int = _SVI.num_steps
    svi_learning_rate: float = _SVI.learning_rate
    svi_final_lr_fraction: float = _SVI.final_lr_fraction
    svi_num_particles: int = _SVI.num_particles
    svi_draws: int = _SVI.num_draws
    svi_rank: int | None = _SVI.rank

    def nuts_settings(self, progress_bar: bool = True) -> NutsSettings:
        """The :class:`~bayes_sbm.settings.NutsSettings` this table describes."""
        return NutsSettings(**{f: getattr(self, key) for key, f in _NUTS_KEYS.items()}, progress_bar=progress_bar)

    def svi_settings(self, progress_bar: bool = True) -> SviSettings:
        """The :class:`~bayes_sbm.settings.SviSettings` this table describes."""
        return SviSettings(**{f: getattr(self, key) for key, f in _SVI_KEYS.items()}, progress_bar=progress_bar)


#: ``[inference]`` key → :class:`~bayes_sbm.settings.NutsSettings` field (every field but ``progress_bar``; same names).
_NUTS_KEYS = {f.name: f.name for f in dataclasses.fields(NutsSettings) if f.name != "progress_bar"}
#: ``[inference]`` key → :class:`~bayes_sbm.settings.SviSettings` field (every field but ``progress_bar``).
_SVI_KEYS = {
    "svi_guide": "guide", "svi_steps": "num_steps", "svi_learning_rate": "learning_rate",
    "svi_final_lr_fraction": "final_lr_fraction", "svi_num_particles": "num_particles", "svi_draws": "num_draws",
    "svi_rank": "rank",
}


@dataclass(frozen=True)
class PredictiveSpec:
    """``[predictive]``: posterior-predictive settings, defaults resolved.

    Attributes
    ----------
    beta : float or None
        Sampling β of the predictive (``model.beta`` when not given).
    num_points : int or None
        Points per posterior draw (``data.K`` for teacher data when not
        given; None for file data: the number of data rows is used).
    """

    beta: float | None = None
    num_points: int | None = None


@dataclass(frozen=True)
class Spec:
    """A validated model spec.

    Attributes
    ----------
    name : str
    path : pathlib.Path or None
        The spec file (None when parsed from a mapping).
    model : ModelSpec
    data : DataSpec
    inference : InferenceSpec
    predictive : PredictiveSpec
    description : str
    """

    name: str
    path: Path | None
    model: ModelSpec
    data: DataSpec
    inference: InferenceSpec
    predictive: PredictiveSpec
    description: str = ""
    _raw: dict = field(default_factory=dict, compare=False, repr=False)
    _source: str = field(default="<string>", compare=False, repr=False)
    _base_dir: str = field(default=".", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON- and TOML-representable dict of the resolved spec.

        Keys that are None are left out; ``data.path`` is the resolved
        absolute path, so ``parse_spec(spec.to_dict())`` reproduces the spec
        from any working directory.

        Returns
        -------
        dict
            ``{"name", "description", "model", "data", "inference", "predictive"}``.
        """
        def table(obj, keys) -> dict[str, Any]:
            return {k: getattr(obj, k) for k in keys if getattr(obj, k) is not None}

        data = table(self.data, SCHEMA["data"])
        if self.data.resolved_path is not None:
            data["path"] = self.data.resolved_path
        if self.data.resolved_heldout_path is not None:
            data["heldout_path"] = self.data.resolved_heldout_path
        if "train_rows" in data:
            data["train_rows"] = list(data["train_rows"])
        if not data.get("center"):  # left out at its default: specs without a transform serialise as before
            data.pop("center", None)
        return {
            "name": self.name,
            "description": self.description,
            "model": table(self.model, SCHEMA["model"]),
            "data": data,
            "inference": table(self.inference, SCHEMA["inference"]),
            "predictive": table(self.predictive, SCHEMA["predictive"]),
        }

    def matches(self, stored: Any) -> bool:
        """True when ``stored`` — a spec dict read back from JSON (a run's ``meta["spec"]``, a sweep marker) — is this spec."""
        return stored == json.loads(json.dumps(self.to_dict()))

    def to_toml(self) -> str:
        """The resolved spec as TOML text (``load_spec`` of it gives an equal spec)."""

        def value(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return repr(v)
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return json.dumps(str(v))

        d = self.to_dict()
        lines = [f"name = {value(d['name'])}", f"description = {value(d['description'])}", ""]
        for table in ("model", "data", "inference", "predictive"):
            lines.append(f"[{table}]")
            lines += [f"{k} = {value(v)}" for k, v in d[table].items()]
            lines.append("")
        return "\n".join(lines)

    def with_overrides(self, overrides: Mapping[str, Any] | None = None, /, **dotted: Any) -> Spec:
        """A new validated spec with some keys replaced.

        Parameters
        ----------
        overrides : mapping, optional
            Dotted keys to new values, e.g. ``{"model.N": 100,
            "inference.num_samples": 50}``; a top-level key (``"name"``) has
            no dot. A value of None removes the key (back to its default).
        **dotted
            More overrides, e.g. ``spec.with_overrides(**{"model.N": 30})``.

        Returns
        -------
        Spec
            Validated like a spec file (defaults that depend on other keys,
            such as ``predictive.beta``, follow the new values); relative
            data paths stay relative to the original spec's folder.

        Raises
        ------
        SpecError
            An override key that is not ``table.key`` or ``key``, or a
            resulting spec that does not validate.
        """
        items = dict(overrides or {})
        items.update(dotted)
        raw = copy.deepcopy(self._raw)
        for dotted_key, value in items.items():
            parts = str(dotted_key).split(".")
            if len(parts) > 2 or not all(parts):
                raise SpecError(self._source, str(dotted_key), "override keys must be 'table.key' or a top-level 'key'")
            if len(parts) == 1:
                target, key = raw, parts[0]
            else:
                tbl = raw.setdefault(parts[0], {})
                if not isinstance(tbl, dict):
                    raise SpecError(self._source, parts[0], f"must be a table, got {toml_type_name(tbl)}")
                target, key = tbl, parts[1]
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
        default_name = self.name if "name" not in raw else None
        new = _parse(raw, source=self._source, base_dir=Path(self._base_dir), default_name=default_name)
        return dataclasses.replace(new, path=self.path)


# --------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------
def toml_type_name(v) -> str:
    """The TOML word for a value's type (for error messages: "got string 'x'")."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, numbers.Integral):
        return "int"
    if isinstance(v, numbers.Real):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "table"
    if isinstance(v, (list, tuple)):
        return "array"
    return type(v).__name__


_KIND_WORD = {"int": "an integer", "float": "a number", "bool": "a boolean (true/false)", "str": "a string",
              "int_list": "an array of integers"}


def _coerce(kind: str, value: Any) -> tuple[Any, str | None]:
    """Type check; returns ``(value, None)`` or ``(None, reason)``."""
    bad = f"expected {_KIND_WORD[kind]}, got {toml_type_name(value)} {value!r}"
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, bad)
    if kind == "str":
        return (value, None) if isinstance(value, str) else (None, bad)
    if kind == "int_list":
        if not isinstance(value, (list, tuple)):
            return None, bad
        wrong = [v for v in value if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
        if wrong:
            return None, f"expected {_KIND_WORD[kind]}, got {toml_type_name(wrong[0])} {wrong[0]!r} in the array"
        return tuple(int(v) for v in value), None
    if isinstance(value, bool):
        return None, bad
    if kind == "int":
        return (int(value), None) if isinstance(value, numbers.Integral) else (None, bad)
    # float
    if not isinstance(value, numbers.Real):
        return None, bad
    try:
        v = float(value)
    except OverflowError:
        return None, f"must be finite, got {value!r}"
    if not math.isfinite(v):
        return None, f"must be finite, got {v!r}"
    return v, None


def _checked(f: _Field, value: Any, source: str, key: str, error: type[ValueError] = SpecError) -> Any:
    """``value`` type-checked (:func:`_coerce`) and range-checked by ``f``, else ``error(source, key, reason)``.

    The one validation step of every spec key, and of the sweep files' keys (``error`` = ``SweepError``).
    """
    value, reason = _coerce(f.kind, value)
    if reason is None and f.check is not None:
        reason = f.check(value)
    if reason is not None:
        raise error(source, key, reason)
    return value


def _suggest(word: str, choices) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _check_unknown(raw: Mapping, source: str) -> None:
    for key, value in raw.items():
        if key in SCHEMA:
            if not isinstance(value, Mapping):
                raise SpecError(source, key, f"must be a table [{key}], got {toml_type_name(value)} {value!r}")
            for sub in value:
                if sub not in SCHEMA[key]:
                    allowed = ", ".join(SCHEMA[key])
                    raise SpecError(
                        source, f"{key}.{sub}", f"unknown key{_suggest(sub, SCHEMA[key])}; allowed keys: {allowed}"
                    )
        elif key not in TOP_LEVEL_KEYS:
            known = list(SCHEMA) + list(TOP_LEVEL_KEYS)
            what = "table" if isinstance(value, Mapping) else "key"
            raise SpecError(
                source, str(key),
                f"unknown {what}{_suggest(str(key), known)}; allowed: tables "
                f"{', '.join('[' + t + ']' for t in SCHEMA)} and keys {', '.join(TOP_LEVEL_KEYS)}",
            )


def _read_table(raw: Mapping, table: str, source: str) -> dict[str, Any]:
    """Type- and range-checked values of one table (absent optional keys → default)."""
    given = raw.get(table, {})
    out: dict[str, Any] = {}
    for key, f in SCHEMA[table].items():
        if key not in given:
            if f.default is _MISSING:
                raise SpecError(source, f"{table}.{key}", "missing required field")
            out[key] = f.default
            continue
        out[key] = _checked(f, given[key], source, f"{table}.{key}")
    return out


def _parse(raw: Mapping, *, source: str, base_dir: Path, default_name: str | None) -> Spec:
    if not isinstance(raw, Mapping):
        raise SpecError(source, "", f"a spec must be a table of tables, got {toml_type_name(raw)}")
    raw = _plain(raw)
    _check_unknown(raw, source)
    for table in _REQUIRED_TABLES:
        if table not in raw:
            raise SpecError(source, table, f"missing required table [{table}]")

    top = {key: _checked(f, raw[key], source, key) if key in raw else f.default for key, f in TOP_LEVEL_KEYS.items()}
    name = top["name"] if top["name"] is not None else (default_name or "spec")

    model = _read_table(raw, "model", source)
    data = _read_table(raw, "data", source)
    inference = _read_table(raw, "inference", source)
    predictive = _read_table(raw, "predictive", source)

    src = data["source"]
    for key in _REQUIRED_BY_SOURCE[src]:
        if data[key] is None:
            raise SpecError(source, f"data.{key}", f"missing required field for source = {src!r}")
    if src == "teacher" and model["N"] < data["K"] + 1:
        raise SpecError(
            source, "model.N",
            f"must be >= K + 1 = {data['K'] + 1} for teacher data with data.K = {data['K']}, got {model['N']}",
        )
    file_only = [k for k in ("center", "train_rows", "heldout_path") if k in raw.get("data", {})]
    if src != "file" and file_only and (data["center"] or data["train_rows"] is not None or data["heldout_path"] is not None):
        key = next(k for k in file_only if data[k] not in (False, None))
        raise SpecError(source, f"data.{key}", f"only for source = 'file' (teacher samples are drawn on the sphere), got source = {src!r}")
    if data["train_rows"] is not None and data["heldout_path"] is not None:
        raise SpecError(source, "data.heldout_path", "give either heldout_path (a held-out file) or train_rows (held-out rows of the data file), not both")
    resolved_heldout = None
    if data["heldout_path"] is not None:
        resolved_heldout = _data_file(data["heldout_path"], base_dir, source, "data.heldout_path", "held-out data file")
    resolved = None
    if data["path"] is not None:
        if src == "file":
            resolved = _data_file(data["path"], base_dir, source, "data.path", "data file")
        else:  # kept (resolved) but not read: teacher data
            resolved = str((Path(base_dir) / os.path.expanduser(data["path"])).resolve())
    if predictive["beta"] is None:
        predictive["beta"] = model["beta"]
    if predictive["num_points"] is None and src == "teacher":
        predictive["num_points"] = data["K"]

    return Spec(
        name=name,
        path=None,
        model=ModelSpec(**model),
        data=DataSpec(**data, resolved_path=resolved, resolved_heldout_path=resolved_heldout),
        inference=InferenceSpec(**inference),
        predictive=PredictiveSpec(**predictive),
        description=top["description"],
        _raw=raw,
        _source=source,
        _base_dir=str(base_dir),
    )


def _data_file(text: str, base_dir: Path, source: str, key: str, what: str) -> str:
    """The absolute path of a data file named in the spec; it must exist and have a :data:`DATA_SUFFIXES` suffix."""
    resolved = str((Path(base_dir) / os.path.expanduser(text)).resolve())
    suffix = Path(resolved).suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise SpecError(
            source, key, f"unknown data format {suffix or '(no suffix)'!r} for {resolved} (use {', '.join(DATA_SUFFIXES)})"
        )
    if not Path(resolved).is_file():
        raise SpecError(source, key, f"{what} not found: {resolved}")
    return resolved


def _plain(obj):
    """Deep copy of nested mappings as plain dicts (so overrides never alias the input)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def parse_spec(mapping: Mapping[str, Any], *, source: str = "<string>", base_dir: str | os.PathLike | None = None) -> Spec:
    """Validate a spec given as a mapping (e.g. parsed TOML or ``Spec.to_dict()``).

    Parameters
    ----------
    mapping : mapping
        Top-level keys and tables as described in the module docstring.
    source : str
        Name used as ``{file}`` in error messages.
    base_dir : path-like, optional
        Folder that a relative ``data.path`` is resolved against (default:
        the current working directory).

    Returns
    -------
    Spec
        With ``path = None`` and ``name`` defaulting to ``"spec"``.

    Raises
    ------
    SpecError
        Unknown table or key, missing field, wrong type, out-of-range value,
        NaN/inf, or a missing data file.
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    return _parse(mapping, source=source, base_dir=base, default_name=None)


def read_toml_file(path: Path, kind: str, error: type[SpecError]) -> dict:
    """The table of a TOML file; ``error(file, "", reason)`` when it is missing, unreadable, not UTF-8 or not TOML.

    ``kind`` names the file in messages ("spec", "sweep"); a folder is refused.
    """
    source = os.fspath(path)
    if path.is_dir():
        raise error(source, "", f"is a folder, not a {kind} file")
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise error(source, "", f"{kind} file not found") from None
    except OSError as exc:
        raise error(source, "", f"cannot read {kind} file ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(source, "", f"not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(source, "", f"invalid TOML: {exc}") from None


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a TOML spec file.

    Parameters
    ----------
    path : path-like
        The ``.toml`` file. It is named as written in error messages.

    Returns
    -------
    Spec
        ``name`` defaults to the file stem; a relative ``data.path`` is
        resolved against the file's folder.

    Raises
    ------
    SpecError
        The file cannot be read, is not valid TOML, or does not validate.
    """
    p = Path(path)
    source = os.fspath(path)
    raw = read_toml_file(p, "spec", SpecError)
    spec = _parse(raw, source=source, base_dir=p.resolve().parent, default_name=p.stem)
    return dataclasses.replace(spec, path=p)
