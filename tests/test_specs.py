"""Tests of ``bayes_sbm.specs`` and of the spec files in ``models/``.

Every rejection is a :class:`SpecError` whose message is
``"{file}: {table}.{key}: {reason}"``; the case tables below check the file
name, the dotted key and the reason for each kind of mistake. The phase specs
are checked against the large-N theory (THEORY.md §4) at the data eigenvalues
c = (1.6, 0.4) of the K = 2, ω = 2.5 teacher.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from bayes_sbm import specs, theory
from bayes_sbm.specs import SCHEMA, Spec, SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
#: Large-N data eigenvalues of K = 2 samples of the ω = 2.5 rank-one teacher (THEORY.md §3).
C_TEACHER = (1.6, 0.4)
PHASE_FILES = {"pmo": "PMo", "pme": "PMe", "fmo": "FMo", "fme": "FMe", "sg": "SG"}

BASE = {
    "name": "base",
    "description": "a valid spec the cases below break",
    "model": {"N": 20, "gamma": 0.5, "eta": 3.0, "beta": 1.0, "parametrization": "aligned"},
    "data": {"source": "teacher", "omega": 2.5, "K": 2, "seed": 0},
    "inference": {"method": "nuts", "num_warmup": 10, "num_samples": 10, "num_chains": 2, "seed": 0},
}

_DELETE = object()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(mapping: dict) -> str:
    """Minimal TOML writer for the test mappings (scalars, then one level of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in mapping.items() if not isinstance(v, dict)]
    for k, v in mapping.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def patched(changes: dict) -> dict:
    """BASE with dotted-key changes; ``_DELETE`` removes a key or table."""
    m = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        parts = dotted.split(".")
        target = m
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        if value is _DELETE:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
    return m


def write_spec(folder: Path, mapping: dict, name: str = "case.toml") -> Path:
    path = folder / name
    path.write_text(to_toml(mapping), encoding="utf-8")
    return path


def assert_spec_error(exc: SpecError, file: str, key: str, reason: str) -> None:
    msg = str(exc)
    assert msg.startswith(f"{file}: {key}: "), msg
    assert reason in msg, msg
    assert exc.file == file and exc.key == key


# --------------------------------------------------------------------------
# rejections: (changes, dotted key, reason substring)
# --------------------------------------------------------------------------
UNKNOWN = [
    pytest.param({"model.gama": 0.5}, "model.gama", "unknown key (did you mean 'gamma'?)", id="model-key-typo"),
    pytest.param({"inference.num_sample": 5}, "inference.num_sample", "did you mean 'num_samples'?", id="inference-key-typo"),
    pytest.param({"data.colour": "red"}, "data.colour", "unknown key; allowed keys: source", id="data-key-no-hint"),
    pytest.param({"predictive.betta": 1.0}, "predictive.betta", "did you mean 'beta'?", id="predictive-key-typo"),
    pytest.param({"modle.N": 3}, "modle", "unknown table (did you mean 'model'?)", id="table-typo"),
    pytest.param({"sampler.x": 1}, "sampler", "unknown table", id="table-unknown"),
    pytest.param({"nme": "x"}, "nme", "unknown key (did you mean 'name'?)", id="top-level-key-typo"),
]

MISSING = [
    pytest.param({"model.N": _DELETE}, "model.N", "missing required field", id="N"),
    pytest.param({"model.gamma": _DELETE}, "model.gamma", "missing required field", id="gamma"),
    pytest.param({"model.eta": _DELETE}, "model.eta", "missing required field", id="eta"),
    pytest.param({"data.source": _DELETE}, "data.source", "missing required field", id="source"),
    pytest.param({"data.omega": _DELETE}, "data.omega", "missing required field for source = 'teacher'", id="teacher-omega"),
    pytest.param({"data.K": _DELETE}, "data.K", "missing required field for source = 'teacher'", id="teacher-K"),
    pytest.param({"data.seed": _DELETE}, "data.seed", "missing required field for source = 'teacher'", id="teacher-seed"),
    pytest.param({"data.source": "file"}, "data.path", "missing required field for source = 'file'", id="file-path"),
    pytest.param({"model": _DELETE}, "model", "missing required table [model]", id="table-model"),
    pytest.param({"data": _DELETE}, "data", "missing required table [data]", id="table-data"),
]

WRONG_TYPE = [
    pytest.param({"model.N": 100.0}, "model.N", "expected an integer, got float 100.0", id="int-from-float"),
    pytest.param({"model.N": True}, "model.N", "expected an integer, got bool True", id="int-from-bool"),
    pytest.param({"model.N": "100"}, "model.N", "expected an integer, got string '100'", id="int-from-string"),
    pytest.param({"inference.num_chains": 2.5}, "inference.num_chains", "expected an integer", id="chains-float"),
    pytest.param({"data.seed": 1.0}, "data.seed", "expected an integer", id="seed-float"),
    pytest.param({"model.gamma": "0.5"}, "model.gamma", "expected a number, got string '0.5'", id="float-from-string"),
    pytest.param({"model.eta": False}, "model.eta", "expected a number, got bool False", id="float-from-bool"),
    pytest.param({"model.beta": [1.0]}, "model.beta", "expected a number, got array", id="float-from-array"),
    pytest.param({"data.project": 1}, "data.project", "expected a boolean (true/false), got int 1", id="bool-from-int"),
    pytest.param({"inference.dense_mass": "yes"}, "inference.dense_mass", "expected a boolean", id="bool-from-string"),
    pytest.param({"inference.method": 1}, "inference.method", "expected a string, got int 1", id="str-from-int"),
    pytest.param({"data.path": 3}, "data.path", "expected a string", id="path-from-int"),
    pytest.param({"name": 3}, "name", "expected a string, got int 3", id="name-int"),
    pytest.param({"description": True}, "description", "expected a string", id="description-bool"),
    pytest.param({"inference": 3}, "inference", "must be a table [inference], got int 3", id="table-not-table"),
]

OUT_OF_RANGE = [
    pytest.param({"model.N": 1}, "model.N", "must be between 2 and 100000, got 1", id="N-lt-2"),
    pytest.param({"model.N": 10**23}, "model.N", "must be between 2 and 100000, got 100000000000000000000000", id="N-huge"),
    pytest.param({"model.N": 2}, "model.N", "must be >= K + 1 = 3 for teacher data with data.K = 2, got 2", id="N-le-K"),
    pytest.param({"model.gamma": -1.0}, "model.gamma", "must be > 0, got -1.0", id="gamma-negative"),
    pytest.param({"model.gamma": 0}, "model.gamma", "must be > 0, got 0.0", id="gamma-zero"),
    pytest.param({"model.eta": 0.0}, "model.eta", "must be > 0, got 0.0", id="eta-zero"),
    pytest.param({"model.beta": -0.5}, "model.beta", "must be > 0, got -0.5", id="beta-negative"),
    pytest.param({"model.parametrization": "centered"}, "model.parametrization",
                 "must be one of 'auto', 'band', 'aligned', 'noncentred', 'centred', got 'centered' (did you mean 'centred'?)", id="parametrization"),
    pytest.param({"data.source": "teachers"}, "data.source", "must be one of 'teacher', 'file', got 'teachers'", id="source"),
    pytest.param({"data.omega": 0.0}, "data.omega", "must be > 0, got 0.0", id="omega-zero"),
    pytest.param({"data.K": 0}, "data.K", "must be >= 1, got 0", id="K-zero"),
    pytest.param({"data.seed": -1}, "data.seed", "must be between 0 and 4294967295, got -1", id="data-seed-negative"),
    pytest.param({"data.seed": 2**32}, "data.seed", "must be between 0 and 4294967295", id="data-seed-too-big"),
    pytest.param({"data.path": ""}, "data.path", "must not be empty", id="path-empty"),
    pytest.param({"inference.method": "mcmc"}, "inference.method", "must be one of 'nuts', 'svi', got 'mcmc'", id="method"),
    pytest.param({"inference.num_warmup": -1}, "inference.num_warmup", "must be >= 0, got -1", id="warmup-negative"),
    pytest.param({"inference.num_samples": 0}, "inference.num_samples", "must be >= 1, got 0", id="samples-zero"),
    pytest.param({"inference.num_chains": 0}, "inference.num_chains", "must be between 1 and 64, got 0", id="chains-zero"),
    pytest.param({"inference.num_chains": 20000}, "inference.num_chains", "must be between 1 and 64, got 20000", id="chains-too-many"),
    pytest.param({"inference.svi_final_lr_fraction": 0.0}, "inference.svi_final_lr_fraction", "must be in the interval (0, 1], got 0.0", id="svi-lr-fraction"),
    pytest.param({"inference.svi_rank": 0}, "inference.svi_rank", "must be >= 1, got 0", id="svi-rank"),
    pytest.param({"inference.seed": -3}, "inference.seed", "must be between 0 and 4294967295, got -3", id="inference-seed"),
    pytest.param({"inference.target_accept": 1.0}, "inference.target_accept", "must be in the open interval (0, 1), got 1.0", id="accept-one"),
    pytest.param({"inference.target_accept": 0}, "inference.target_accept", "open interval (0, 1), got 0.0", id="accept-zero"),
    pytest.param({"inference.max_tree_depth": 0}, "inference.max_tree_depth", "must be between 1 and 30, got 0", id="tree-depth"),
    pytest.param({"inference.chain_method": "threads"}, "inference.chain_method", "must be one of 'auto', 'parallel'", id="chain-method"),
    pytest.param({"inference.checkpoint_every": -1}, "inference.checkpoint_every", "must be >= 0, got -1", id="checkpoint"),
    pytest.param({"inference.svi_guide": "lowrnak"}, "inference.svi_guide", "(did you mean 'lowrank'?)", id="svi-guide"),
    pytest.param({"inference.svi_steps": 0}, "inference.svi_steps", "must be >= 1, got 0", id="svi-steps"),
    pytest.param({"inference.svi_learning_rate": 0.0}, "inference.svi_learning_rate", "must be > 0, got 0.0", id="svi-lr"),
    pytest.param({"inference.svi_num_particles": 0}, "inference.svi_num_particles", "must be >= 1, got 0", id="svi-particles"),
    pytest.param({"inference.svi_draws": 0}, "inference.svi_draws", "must be >= 1, got 0", id="svi-draws"),
    pytest.param({"predictive.beta": 0.0}, "predictive.beta", "must be > 0, got 0.0", id="predictive-beta"),
    pytest.param({"predictive.num_points": 0}, "predictive.num_points", "must be >= 1, got 0", id="predictive-points"),
    pytest.param({"name": ""}, "name", "must not be empty", id="name-empty"),
    pytest.param({"name": "a/b"}, "name", "must not contain a path separator", id="name-slash"),
]

NON_FINITE = [
    pytest.param({"model.gamma": math.nan}, "model.gamma", "must be finite, got nan", id="gamma-nan"),
    pytest.param({"model.eta": math.inf}, "model.eta", "must be finite, got inf", id="eta-inf"),
    pytest.param({"model.beta": -math.inf}, "model.beta", "must be finite, got -inf", id="beta-minus-inf"),
    pytest.param({"data.omega": math.nan}, "data.omega", "must be finite, got nan", id="omega-nan"),
    pytest.param({"inference.target_accept": math.nan}, "inference.target_accept", "must be finite", id="accept-nan"),
    pytest.param({"inference.svi_learning_rate": math.inf}, "inference.svi_learning_rate", "must be finite", id="lr-inf"),
    pytest.param({"predictive.beta": math.nan}, "predictive.beta", "must be finite", id="predictive-beta-nan"),
]


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [*UNKNOWN, *MISSING, *WRONG_TYPE, *OUT_OF_RANGE, *NON_FINITE],
)
def test_rejections_name_file_key_and_reason(tmp_path, changes, key, reason):
    path = write_spec(tmp_path, patched(changes))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert_spec_error(info.value, str(path), key, reason)


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [*UNKNOWN[:2], *MISSING[:3], *WRONG_TYPE[:2], *OUT_OF_RANGE[2:4], *NON_FINITE[:1]],
)
def test_rejections_from_a_mapping_name_the_source(changes, key, reason):
    with pytest.raises(SpecError) as info:
        parse_spec(patched(changes), source="inline-spec")
    assert_spec_error(info.value, "inline-spec", key, reason)


def test_example_message_is_exact(tmp_path):
    path = write_spec(tmp_path, patched({"model.gamma": -1.0}), name="fmo.toml")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: model.gamma: must be > 0, got -1.0"


def test_relative_spec_path_is_named_as_given(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    write_spec(tmp_path / "models", patched({"model.gamma": -1.0}), name="fmo.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=re.escape("models/fmo.toml: model.gamma: must be > 0, got -1.0")):
        load_spec("models/fmo.toml")


def test_spec_error_is_a_value_error():
    err = SpecError("f.toml", "model.N", "bad")
    assert isinstance(err, ValueError)
    assert (err.file, err.key, err.reason, str(err)) == ("f.toml", "model.N", "bad", "f.toml: model.N: bad")


# --------------------------------------------------------------------------
# data files
# --------------------------------------------------------------------------
def _sphere_data(K: int, N: int) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(K, N))
    return x * (np.sqrt(N) / np.linalg.norm(x, axis=1))[:, None]


def test_missing_data_file_names_the_resolved_path(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    path = write_spec(spec_dir, patched({"data.source": "file", "data.path": "../data/missing.npy"}))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    resolved = str((tmp_path / "data" / "missing.npy").resolve())
    assert_spec_error(info.value, str(path), "data.path", f"data file not found: {resolved}")


def test_unknown_data_format_is_rejected(tmp_path):
    (tmp_path / "x.dat").write_text("1,2\n")
    path = write_spec(tmp_path, patched({"data.source": "file", "data.path": "x.dat"}))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert_spec_error(info.value, str(path), "data.path", "unknown data format '.dat'")


def test_file_data_resolves_relative_to_the_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "x.npy", _sphere_data(3, 20))
    changes = {"data.source": "file", "data.path": "../data/x.npy", "data.project": True,
               "data.omega": _DELETE, "data.K": _DELETE, "data.seed": _DELETE}
    path = write_spec(tmp_path / "specs", patched(changes))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(path)
    assert spec.data.source == "file"
    assert spec.data.path == "../data/x.npy"
    assert spec.data.resolved_path == str((tmp_path / "data" / "x.npy").resolve())
    assert Path(spec.data.resolved_path).is_absolute()
    assert spec.data.project is True
    assert (spec.data.omega, spec.data.K, spec.data.seed) == (None, None, None)
    # The number of predictive points is left to the data (its number of rows).
    assert spec.predictive.num_points is None


def test_parse_spec_resolves_against_base_dir(tmp_path):
    np.save(tmp_path / "x.npy", _sphere_data(2, 20))
    spec = parse_spec(patched({"data.source": "file", "data.path": "x.npy"}), base_dir=tmp_path)
    assert spec.data.resolved_path == str((tmp_path / "x.npy").resolve())


# --------------------------------------------------------------------------
# accepted inputs and defaults
# --------------------------------------------------------------------------
def test_minimal_spec_gets_documented_defaults(tmp_path):
    minimal = {"model": {"N": 10, "gamma": 1, "eta": 2}, "data": {"source": "teacher", "omega": 2.5, "K": 2, "seed": 7}}
    spec = load_spec(write_spec(tmp_path, minimal, name="tiny.toml"))
    assert spec.name == "tiny"
    assert spec.description == ""
    assert spec.model == specs.ModelSpec(N=10, gamma=1.0, eta=2.0, beta=1.0, parametrization="auto")
    assert isinstance(spec.model.gamma, float) and isinstance(spec.model.N, int)
    assert spec.inference == specs.InferenceSpec()
    assert spec.inference.method == "nuts"
    assert (spec.inference.num_warmup, spec.inference.num_samples, spec.inference.num_chains) == (500, 500, 2)
    assert spec.predictive == specs.PredictiveSpec(beta=1.0, num_points=2)
    assert spec.data.project is False and spec.data.resolved_path is None
    assert spec.path == write_spec(tmp_path, minimal, name="tiny.toml")


def test_predictive_defaults_follow_model_and_data():
    spec = parse_spec(patched({"model.beta": 0.5, "data.K": 3}))
    assert spec.predictive == specs.PredictiveSpec(beta=0.5, num_points=3)
    spec = parse_spec(patched({"predictive.beta": 2.0, "predictive.num_points": 5}))
    assert spec.predictive == specs.PredictiveSpec(beta=2.0, num_points=5)
    assert spec.name == "base"
    assert parse_spec(patched({"name": _DELETE})).name == "spec"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"data.omega": 0.8}, id="paramagnetic-teacher"),
        pytest.param({"data.omega": 1.0}, id="critical-teacher"),
        pytest.param({"inference.svi_steps": 10, "inference.svi_guide": "normal"}, id="svi-keys-with-nuts"),
        pytest.param({"inference.num_warmup": 0}, id="no-warmup"),
        pytest.param({"data.path": "not-used.npy"}, id="path-with-teacher-data"),
        pytest.param({"model.N": 3}, id="N-equals-K-plus-1"),
        pytest.param({"model.gamma": 2, "model.eta": 1}, id="ints-for-floats"),
        pytest.param({"inference.method": "svi"}, id="svi"),
        pytest.param({"model.parametrization": "noncentred", "inference.chain_method": "vectorized"}, id="choices"),
        pytest.param({"data.seed": 2**32 - 1}, id="largest-seed"),
    ],
)
def test_valid_variants_are_accepted(changes):
    spec = parse_spec(patched(changes))
    for dotted, value in changes.items():
        table, key = dotted.split(".")
        assert getattr(getattr(spec, table), key) == value


def test_invalid_toml_and_missing_spec_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nN = 3\n")
    with pytest.raises(SpecError, match=re.escape(f"{bad}: invalid TOML")):
        load_spec(bad)
    missing = tmp_path / "nope.toml"
    with pytest.raises(SpecError, match=re.escape(f"{missing}: spec file not found")):
        load_spec(missing)


# --------------------------------------------------------------------------
# to_dict and with_overrides
# --------------------------------------------------------------------------
def test_to_dict_round_trip_json(tmp_path):
    spec = load_spec(write_spec(tmp_path, patched({"predictive.beta": 0.7})))
    d = spec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"name", "description", "model", "data", "inference", "predictive"}
    again = parse_spec(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    assert (again.model, again.data, again.inference, again.predictive) == (
        spec.model, spec.data, spec.inference, spec.predictive)
    assert again.name == spec.name and again.description == spec.description
    # The dict is also valid TOML input.
    assert load_spec(write_spec(tmp_path, d, name="again.toml")).to_dict() == d


def test_to_dict_round_trip_file_data_from_anywhere(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", _sphere_data(2, 20))
    changes = {"data.source": "file", "data.path": "x.npy", "data.omega": _DELETE, "data.K": _DELETE, "data.seed": _DELETE}
    spec = load_spec(write_spec(tmp_path, patched(changes)))
    d = spec.to_dict()
    assert d["data"] == {"source": "file", "path": str((tmp_path / "x.npy").resolve()), "project": False}
    assert "num_points" not in d["predictive"]
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert parse_spec(d).to_dict() == d


def test_with_overrides_returns_a_new_validated_spec(tmp_path):
    path = write_spec(tmp_path, BASE)
    spec = load_spec(path)
    small = spec.with_overrides({"model.N": 100, "inference.num_samples": 50})
    assert isinstance(small, Spec)
    assert small.model.N == 100 and small.inference.num_samples == 50
    assert spec.model.N == 20 and spec.inference.num_samples == 10  # original untouched
    assert small.path == spec.path and small.name == spec.name
    assert small.model.gamma == spec.model.gamma and small.data == spec.data
    assert spec.with_overrides(**{"model.gamma": 2}).model.gamma == 2.0
    assert spec.with_overrides().to_dict() == spec.to_dict()
    assert spec.with_overrides({"name": "renamed"}).name == "renamed"


def test_with_overrides_resolves_dependent_defaults():
    spec = parse_spec(BASE)
    hot = spec.with_overrides({"model.beta": 0.5, "data.K": 3})
    assert hot.predictive == specs.PredictiveSpec(beta=0.5, num_points=3)
    pinned = spec.with_overrides({"predictive.beta": 2.0})
    assert pinned.with_overrides({"model.beta": 0.5}).predictive.beta == 2.0
    assert pinned.with_overrides({"predictive.beta": None}).predictive.beta == 1.0  # None: back to the default
    assert spec.with_overrides({"model.parametrization": None}).model.parametrization == "auto"


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        pytest.param({"model.N": 0}, "model.N", "must be between 2 and 100000, got 0", id="range"),
        pytest.param({"model.N": 2.5}, "model.N", "expected an integer", id="type"),
        pytest.param({"model.gamma": None}, "model.gamma", "missing required field", id="remove-required"),
        pytest.param({"model.Nn": 30}, "model.Nn", "did you mean 'N'?", id="unknown-key"),
        pytest.param({"inferenc.num_samples": 5}, "inferenc", "did you mean 'inference'?", id="unknown-table"),
        pytest.param({"model.N.x": 5}, "model.N.x", "override keys must be 'table.key'", id="too-deep"),
        pytest.param({"data.K": 30}, "model.N", "must be >= K + 1 = 31", id="cross-field"),
    ],
)
def test_with_overrides_rejects_bad_values(tmp_path, overrides, key, reason):
    path = write_spec(tmp_path, BASE)
    with pytest.raises(SpecError) as info:
        load_spec(path).with_overrides(overrides)
    assert_spec_error(info.value, str(path), key, reason)


def test_with_overrides_keeps_data_paths_relative_to_the_spec(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", _sphere_data(2, 20))
    spec = load_spec(write_spec(tmp_path, patched({"data.source": "file", "data.path": "x.npy"})))
    monkeypatch.chdir(tmp_path.parent)
    moved = spec.with_overrides({"model.N": 20, "data.project": True})
    assert moved.data.resolved_path == spec.data.resolved_path
    assert moved.data.project is True


# --------------------------------------------------------------------------
# documentation of the schema
# --------------------------------------------------------------------------
def _documented_keys():
    for table, fields in SCHEMA.items():
        for key in fields:
            yield table, key


@pytest.mark.parametrize(("table", "key"), list(_documented_keys()), ids=lambda v: str(v))
def test_every_schema_key_is_documented(table, key):
    doc = specs.__doc__
    readme = (MODELS / "README.md").read_text(encoding="utf-8")
    assert f"[{table}]" in doc and f"[{table}]" in readme
    assert f"``{key}``" in doc
    assert f"`{key}`" in readme


def test_dataclass_defaults_match_the_schema():
    for table, cls in [("model", specs.ModelSpec), ("inference", specs.InferenceSpec), ("predictive", specs.PredictiveSpec)]:
        fields = {f.name: f.default for f in specs.dataclasses.fields(cls)}
        for key, f in SCHEMA[table].items():
            if f.default is not specs._MISSING:
                assert fields[key] == f.default, (table, key)


def test_inference_table_maps_onto_every_settings_field():
    """nuts_settings/svi_settings carry every NutsSettings/SviSettings field (but the progress bar) from a spec key."""
    from bayes_sbm.settings import NutsSettings, SviSettings

    inf = specs.InferenceSpec(num_warmup=7, num_chains=3, max_tree_depth=5, checkpoint_every=2, svi_guide="lowrank",
                              svi_steps=11, svi_draws=13, svi_rank=4, svi_final_lr_fraction=0.5)
    for settings, keys, cls in [(inf.nuts_settings(False), specs._NUTS_KEYS, NutsSettings),
                                (inf.svi_settings(False), specs._SVI_KEYS, SviSettings)]:
        assert set(keys.values()) == {f.name for f in specs.dataclasses.fields(cls)} - {"progress_bar"}
        assert set(keys) <= set(SCHEMA["inference"])
        assert all(getattr(settings, field) == getattr(inf, key) for key, field in keys.items())
        assert settings.progress_bar is False


def test_matches_compares_with_a_spec_read_back_from_json():
    spec = load_spec(MODELS / "fmo.toml")
    stored = json.loads(json.dumps(spec.to_dict()))
    assert spec.matches(stored) and not spec.matches(spec.with_overrides({"model.N": 50}).to_dict())
    assert not spec.matches(None)


# --------------------------------------------------------------------------
# the spec files in models/
# --------------------------------------------------------------------------
MODEL_FILES = sorted(MODELS.glob("*.toml"))


def test_models_folder_has_every_phase_and_the_demos():
    stems = {p.stem for p in MODEL_FILES}
    assert set(PHASE_FILES) | {"demo", "demo_svi"} <= stems


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_files_load(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.description
    assert spec.data.source == "teacher"
    assert (spec.data.K, spec.data.omega) == (2, 2.5)
    assert spec.data.seed is not None
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("#")


@pytest.mark.parametrize(("stem", "phase"), list(PHASE_FILES.items()), ids=list(PHASE_FILES))
def test_phase_specs_sit_in_their_phase(stem, phase):
    spec = load_spec(MODELS / f"{stem}.toml")
    assert spec.model.N == 100
    assert spec.inference.method == "nuts"
    sol = theory.posterior_saddle(C_TEACHER, spec.model.gamma, spec.model.eta)
    assert sol.phase == phase
    text = (MODELS / f"{stem}.toml").read_text(encoding="utf-8")
    assert f"phase = {phase}," in text  # the header states the theory values
    assert f"μ = {sol.mu:.4f}" in text and f"λ_1 = {sol.lam[0]:.4f}" in text


@pytest.mark.parametrize(("stem", "phase"), list(PHASE_FILES.items()), ids=list(PHASE_FILES))
def test_phase_specs_keep_their_phase_under_finite_n_fluctuations(stem, phase):
    """Margin from the boundaries: c_1 ∈ [1.4, 1.8] (N = 100 teacher data, seeds 0–39: c_1 within it), γ, η × [1/1.5, 1.5]."""
    spec = load_spec(MODELS / f"{stem}.toml")
    g, e = spec.model.gamma, spec.model.eta
    for c1 in np.linspace(1.4, 1.8, 9):
        for fg in (1 / 1.5, 1.0, 1.5):
            for fe in (1 / 1.5, 1.0, 1.5):
                assert theory.posterior_saddle((c1, 2.0 - c1), g * fg, e * fe).phase == phase, (c1, fg, fe)


def test_demo_specs():
    demo = load_spec(MODELS / "demo.toml")
    svi = load_spec(MODELS / "demo_svi.toml")
    assert (demo.model.N, demo.model.gamma, demo.model.eta) == (30, 0.5, 3.0)
    assert (demo.inference.method, demo.inference.num_warmup, demo.inference.num_samples,
            demo.inference.num_chains) == ("nuts", 300, 300, 2)
    assert svi.inference.method == "svi"
    assert svi.model == demo.model and svi.data == demo.data
    assert theory.posterior_saddle(C_TEACHER, demo.model.gamma, demo.model.eta).phase == "FMo"


# --------------------------------------------------------------------------
# data preparation keys: center, train_rows, heldout_path
# --------------------------------------------------------------------------
_FILE = {"data.source": "file", "data.path": "x.npy", "data.omega": _DELETE, "data.K": _DELETE, "data.seed": _DELETE}


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        pytest.param({"data.center": True}, "data.center", "only for source = 'file'", id="center-with-teacher"),
        pytest.param({"data.train_rows": [0, 1]}, "data.train_rows", "only for source = 'file'", id="rows-with-teacher"),
        pytest.param({**_FILE, "data.center": 1}, "data.center", "expected a boolean (true/false), got int 1", id="center-int"),
        pytest.param({**_FILE, "data.train_rows": 3}, "data.train_rows", "expected an array of integers, got int 3", id="rows-scalar"),
        pytest.param({**_FILE, "data.train_rows": [0, 1.5]}, "data.train_rows", "got float 1.5 in the array", id="rows-float"),
        pytest.param({**_FILE, "data.train_rows": [0, True]}, "data.train_rows", "got bool True in the array", id="rows-bool"),
        pytest.param({**_FILE, "data.train_rows": []}, "data.train_rows", "must list at least one row number", id="rows-empty"),
        pytest.param({**_FILE, "data.train_rows": [0, -1]}, "data.train_rows", "row numbers must be >= 0, got -1", id="rows-negative"),
        pytest.param({**_FILE, "data.train_rows": [2, 0, 2]}, "data.train_rows", "row 2 is listed twice", id="rows-duplicate"),
        pytest.param({**_FILE, "data.train_rows": [0], "data.heldout_path": "x.npy"}, "data.heldout_path",
                     "either heldout_path", id="rows-and-heldout-file"),
        pytest.param({**_FILE, "data.heldout_path": "h.dat"}, "data.heldout_path", "unknown data format '.dat'", id="heldout-suffix"),
        pytest.param({**_FILE, "data.heldout_path": "missing.npy"}, "data.heldout_path", "held-out data file not found", id="heldout-missing"),
        pytest.param({**_FILE, "data.heldout_path": ""}, "data.heldout_path", "must not be empty", id="heldout-empty"),
    ],
)
def test_data_preparation_keys_are_validated(tmp_path, changes, key, reason):
    np.save(tmp_path / "x.npy", _sphere_data(4, 20))
    path = write_spec(tmp_path, patched(changes))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert_spec_error(info.value, str(path), key, reason)


def test_data_preparation_keys_round_trip(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", _sphere_data(4, 20))
    np.save(tmp_path / "h.npy", _sphere_data(2, 20))
    spec = load_spec(write_spec(tmp_path, patched({**_FILE, "data.center": True, "data.project": True, "data.train_rows": [3, 0]})))
    assert spec.data.center is True and spec.data.train_rows == (3, 0)
    d = spec.to_dict()
    assert d["data"]["train_rows"] == [3, 0] and d["data"]["center"] is True
    assert load_spec(write_spec(tmp_path, d, name="again.toml")).to_dict() == d
    assert "train_rows = [3, 0]" in spec.to_toml()
    held = load_spec(write_spec(tmp_path, patched({**_FILE, "data.heldout_path": "h.npy"}), name="held.toml"))
    assert held.data.resolved_heldout_path == str((tmp_path / "h.npy").resolve())
    assert held.to_dict()["data"]["heldout_path"] == held.data.resolved_heldout_path
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert parse_spec(held.to_dict()).data.resolved_heldout_path == held.data.resolved_heldout_path
    assert spec.with_overrides({"data.train_rows": [1, 2]}).data.train_rows == (1, 2)


def test_train_rows_beyond_the_file_fail_when_the_data_are_read(tmp_path):
    from bayes_sbm import runs

    np.save(tmp_path / "x.npy", _sphere_data(4, 20))
    spec = load_spec(write_spec(tmp_path, patched({**_FILE, "data.train_rows": [0, 4]})))
    with pytest.raises(ValueError, match=r"data\.train_rows: row 4 is out of range: .*x\.npy has 4 rows \(0 to 3\)"):
        runs.load_spec_data(spec)
