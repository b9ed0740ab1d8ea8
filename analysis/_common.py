"""Pieces shared by the studies in ``analysis/*/run.py`` and the benchmarks in ``benchmarks/``.

The scripts run as ``python analysis/<study>/run.py`` (or
``python benchmarks/<bench>.py``); each puts the checkout root on ``sys.path``
in one line and imports ``analysis._common``, which makes ``bayes_sbm``
importable from a checkout without installing it as well.

Only the standard library is imported at module level: thread counts must be
pinned (:func:`pin_threads`, :func:`pin_xla_threads`) *before* NumPy or JAX
are imported, and a script imports this module before it pins them.  NumPy,
JAX and ``bayes_sbm`` are imported inside the functions that need them.

What stays in the scripts is their science: what they fit, what they compare
and how they plot it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "ROOT",
    "OMEGA",
    "C_LIMIT",
    "PHASE_COLORS",
    "NUTS_SEEDS",
    "QUICK_NUTS",
    "pin_threads",
    "pin_xla_threads",
    "float_list",
    "int_list",
    "int_list_via_float",
    "name_list",
    "size_list",
    "study_parser",
    "theory_study_args",
    "add_nuts_options",
    "add_models_option",
    "pick_values",
    "nuts_overrides",
    "fmt_cell",
    "write_csv",
    "read_csv",
    "fmt_num",
    "md_head",
    "md_row",
    "write_bytes_atomic",
    "write_rows_csv",
    "save_png",
    "study_metadata",
    "write_metadata_json",
    "previous_runs",
    "timed",
    "component",
    "saddle_phases",
    "log_evidence_pair",
    "spec_toml",
    "same_spec",
    "fit_or_reuse",
    "nuts_settings",
    "run_spec_nuts",
    "nuts_facts",
    "TeacherFit",
    "teacher_student_fit",
]

#: The checkout (the folder holding ``bayes_sbm/``, ``analysis/``, ``models/``).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

#: Teacher eigenvalue of the K = 2 rank-one teacher of the phase specs (THEORY.md §3, §6).
OMEGA = 2.5
#: N → ∞ data spectrum c = (2 − 1/ω, 1/ω) of that teacher (THEORY.md §3).
C_LIMIT = (2.0 - 1.0 / OMEGA, 1.0 / OMEGA)
#: Plot colour of each posterior phase (THEORY.md §4).
PHASE_COLORS = {"PMo": "#1f77b4", "PMe": "#17becf", "FMo": "#d62728", "FMe": "#ff7f0e", "SG": "#2ca02c"}
#: How the teacher–student studies seed their fits (recorded in metadata.json).
NUTS_SEEDS = "teacher: spec data.seed (0); NUTS: split(key(spec inference.seed))[0] as runs.fit_spec"
#: NUTS sizes of a ``--quick`` run (per chain; one chain).
QUICK_NUTS = {"num_warmup": 100, "num_samples": 100, "num_chains": 1}

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------
# environment (before NumPy / JAX are imported)
# --------------------------------------------------------------------------
def pin_threads(host_devices: int | None = 2) -> None:
    """Default BLAS/OpenMP threads to 1 and select matplotlib's Agg backend; optionally expose CPU devices to JAX.

    Thread counts already in the environment are kept.  Must run before NumPy
    or JAX are imported.

    Parameters
    ----------
    host_devices : int or None, optional
        Number of host (CPU) devices for JAX, set with
        ``numpyro.set_host_device_count`` so that chains can run in parallel
        (default 2).  None leaves JAX's device count alone (and NumPyro
        unimported).
    """
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if host_devices:
        import numpyro

        numpyro.set_host_device_count(host_devices)  # before JAX starts
    import matplotlib

    matplotlib.use("Agg")


def pin_xla_threads(threads: int, *, jax_platforms: str | None = None) -> dict[str, str]:
    """Pin BLAS, OpenMP and XLA to ``threads`` threads in the environment (benchmarks).

    Must run before NumPy or JAX are imported.  XLA flags already set are kept
    except the two thread flags this function sets.

    Parameters
    ----------
    threads : int
        Threads for BLAS, OpenMP and XLA's CPU backend.
    jax_platforms : str or None, optional
        Value for ``JAX_PLATFORMS``; None leaves it unset.

    Returns
    -------
    dict of str to str
        The variables set (recorded with the benchmark results).
    """
    t = str(threads)
    env = {var: t for var in _THREAD_VARS}
    ours = [f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'}", f"intra_op_parallelism_threads={t}"]
    drop = ("multi_thread_eigen", "intra_op_parallelism")
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not any(d in f for d in drop)]
    env["XLA_FLAGS"] = " ".join(kept + ours)
    if jax_platforms is not None:
        env["JAX_PLATFORMS"] = jax_platforms
    os.environ.update(env)
    return env


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
def float_list(text: str) -> list[float]:
    """Comma-separated floats (empty items skipped)."""
    return [float(v) for v in text.split(",") if v.strip()]


def int_list(text: str) -> list[int]:
    """Comma-separated integers (empty items skipped)."""
    return [int(v) for v in text.split(",") if v.strip()]


def int_list_via_float(text: str) -> list[int]:
    """Comma-separated numbers read as floats and truncated to integers (``"100.0"`` → 100)."""
    return [int(v) for v in float_list(text)]


def name_list(text: str) -> list[str]:
    """Comma-separated names (empty items skipped, no stripping)."""
    return [v for v in text.split(",") if v]


def size_list(text: str) -> list[int]:
    """Comma-separated sizes N ≥ 2, for ``argparse`` (raises ``ArgumentTypeError`` otherwise)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 2, got {text!r}")
    return values


def study_parser(doc: str, out_default: Path, quick_help: str, resume_help: str | None = None) -> argparse.ArgumentParser:
    """Parser of a study with ``--out``, ``--quick`` and (with ``resume_help``) ``--resume``.

    Parameters
    ----------
    doc : str
        The script's docstring; its first paragraph is the description.
    out_default : Path
        Default output folder.
    quick_help : str
        Help of ``--quick``.
    resume_help : str or None, optional
        Help of ``--resume``; None adds no ``--resume`` (the script adds it
        where it wants it).

    Returns
    -------
    argparse.ArgumentParser
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=out_default, help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    if resume_help is not None:
        p.add_argument("--resume", action="store_true", help=resume_help)
    return p


def theory_study_args(doc: str, out_default: Path, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the options of a theory-only study: ``--out`` and ``--quick`` (coarse grids).

    Parameters
    ----------
    doc : str
        The script's docstring; its first line is the description.
    out_default : Path
        Default output folder.
    argv : sequence of str or None, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
    """
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--out", type=Path, default=out_default, help="output directory")
    ap.add_argument("--quick", action="store_true", help="coarse grids (smoke test)")
    return ap.parse_args(argv)


def add_nuts_options(p: argparse.ArgumentParser, samples_help: str = "NUTS draws per chain (default: the spec's, 500)") -> None:
    """Add ``--num-warmup``, ``--num-samples`` and ``--num-chains`` (spec overrides; see :func:`nuts_overrides`).

    Parameters
    ----------
    p : argparse.ArgumentParser
    samples_help : str, optional
        Help of ``--num-samples``.
    """
    p.add_argument("--num-warmup", type=int, help="NUTS warm-up per chain (default: the spec's, 500)")
    p.add_argument("--num-samples", type=int, help=samples_help)
    p.add_argument("--num-chains", type=int, help="NUTS chains (default: the spec's, 2)")


def add_models_option(p: argparse.ArgumentParser, what: str = "the specs") -> None:
    """Add ``--models`` (folder of the spec files, default ``<checkout>/models``).

    Parameters
    ----------
    p : argparse.ArgumentParser
    what : str, optional
        What the folder holds, for the help text.
    """
    p.add_argument("--models", type=Path, default=ROOT / "models", help=f"folder of {what} (default: %(default)s)")


def pick_values(given: Sequence | None, quick: bool, quick_values: tuple, full_values: tuple) -> tuple:
    """The values given on the command line, else the quick or the full defaults.

    Parameters
    ----------
    given : sequence or None
        Parsed option (None or empty: not given).
    quick : bool
        Whether ``--quick`` is set.
    quick_values, full_values : tuple
        Defaults of a quick and of a full run.

    Returns
    -------
    tuple
    """
    return tuple(given) if given else (quick_values if quick else full_values)


def nuts_overrides(args: argparse.Namespace, names: Iterable[str] = ("num_warmup", "num_samples", "num_chains")) -> dict:
    """Spec overrides ``{"inference.<name>": int}`` from the NUTS options.

    An option given on the command line overrides the spec; with ``--quick``
    the missing ones take :data:`QUICK_NUTS`; otherwise the spec's value stays.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options with ``quick`` and the attributes in ``names``.
    names : iterable of str, optional
        Which of ``num_warmup``, ``num_samples``, ``num_chains`` to consider
        (in this order in the result).

    Returns
    -------
    dict
    """
    out = {}
    for name in names:
        given = getattr(args, name)
        if given is not None or args.quick:
            out[f"inference.{name}"] = int(given if given is not None else QUICK_NUTS[name])
    return out


# --------------------------------------------------------------------------
# CSV / Markdown (studies that resume from their CSV)
# --------------------------------------------------------------------------
def fmt_cell(v: Any, none: str = "None") -> str:
    """A CSV cell: floats as ``repr`` (round-trips exactly), ``None`` as ``none``, the rest as ``str``."""
    import numpy as np

    if v is None:
        return none
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def write_csv(path: Path, columns: Sequence[str], rows: list[dict], *, none: str = "None") -> None:
    """Write ``rows`` (dicts) as CSV with the given columns, atomically.

    Parameters
    ----------
    path : Path
    columns : sequence of str
        Header and order of the cells; a missing key gives an empty cell.
    rows : list of dict
    none : str, optional
        Cell text of a ``None`` value (default ``"None"``).
    """
    from bayes_sbm.io import write_text_atomic

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([fmt_cell(r.get(c, ""), none) for c in columns])
    write_text_atomic(path, buf.getvalue())


def read_csv(path: Path, *, strings: Iterable[str] = (), ints: Iterable[str] = (), blank_ints: bool = False,
             keep_bad_floats: bool = False) -> list[dict]:
    """Read a CSV written by :func:`write_csv` back into typed dicts (``[]`` if the file is missing).

    Parameters
    ----------
    path : Path
    strings : iterable of str, optional
        Columns kept as text.
    ints : iterable of str, optional
        Columns read as ``int(float(v))``.
    blank_ints : bool, optional
        Keep an empty or ``"nan"`` integer cell as its text instead of raising.
    keep_bad_floats : bool, optional
        Keep a cell of another column that is not a number as its text
        instead of NaN.

    Returns
    -------
    list of dict
    """
    if not path.exists():
        return []
    strings, ints = tuple(strings), tuple(ints)
    with path.open() as fh:
        raw = list(csv.DictReader(fh))
    out = []
    for r in raw:
        row = {}
        for k, v in r.items():
            if k in strings:
                row[k] = v
            elif k in ints:
                row[k] = v if blank_ints and v in ("", "nan") else int(float(v))
            else:
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    row[k] = v if keep_bad_floats else math.nan
        out.append(row)
    return out


def fmt_num(v: Any, digits: int = 4, small: float = 1e-3, large: float = 1e4) -> str:
    """A number for a Markdown table: fixed point, scientific outside [small, large), ``–`` if not finite.

    Parameters
    ----------
    v : Any
        Anything ``float`` accepts; other values are shown with ``str``.
    digits : int, optional
        Decimals in fixed point.
    small, large : float, optional
        Non-zero magnitudes below ``small`` or from ``large`` up use ``.2e``.

    Returns
    -------
    str
    """
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return "–"
    if v != 0 and (abs(v) < small or abs(v) >= large):
        return f"{v:.2e}"
    return f"{v:.{digits}f}"


def md_head(head: Sequence[str]) -> list[str]:
    """Header and separator lines of a Markdown table."""
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]


def md_row(cells: Sequence[str]) -> str:
    """One line of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


# --------------------------------------------------------------------------
# plain output (the theory-only studies)
# --------------------------------------------------------------------------
def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the usual (umask) permissions.

    Parameters
    ----------
    path : Path
        Destination; its folder is created if needed.
    data : bytes
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_rows_csv(path: Path, header: Sequence[str], rows: list[list]) -> None:
    """Write list rows as CSV atomically, Python floats with 17 significant digits.

    Parameters
    ----------
    path : Path
    header : sequence of str
    rows : list of list
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([f"{v:.17g}" if isinstance(v, float) else v for v in row])
    write_bytes_atomic(path, buf.getvalue().encode())


def save_png(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG (130 dpi, tight box) atomically and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : Path
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def study_metadata(study: str, quick: bool, parameters: dict, **extra: Any) -> dict:
    """Metadata of a theory-only study: name, command, UTC time, versions, parameters and ``extra``.

    Parameters
    ----------
    study : str
    quick : bool
    parameters : dict
    **extra
        Further fields, after ``parameters`` in this order.

    Returns
    -------
    dict
    """
    import matplotlib as mpl
    import numpy as np
    import scipy

    import bayes_sbm

    return {
        "study": study,
        "command": [sys.executable, *sys.argv],
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": bool(quick),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "matplotlib": mpl.__version__,
            "bayes_sbm": bayes_sbm.__version__,
        },
        "parameters": parameters,
        **extra,
    }


def write_metadata_json(path: Path, meta: dict) -> None:
    """Write :func:`study_metadata` output as indented JSON (anything else as ``str``), atomically."""
    write_bytes_atomic(path, (json.dumps(meta, indent=2, default=str) + "\n").encode())


def previous_runs(out: Path, resume: bool) -> dict:
    """The ``runs`` of ``out/metadata.json`` when resuming (``{}`` otherwise or if unreadable)."""
    if resume and (out / "metadata.json").exists():
        try:
            return dict(json.loads((out / "metadata.json").read_text()).get("runs", {}))
        except (OSError, ValueError):
            return {}
    return {}


# --------------------------------------------------------------------------
# small numerics and theory lookups
# --------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Call ``fn()``; return its result, wall seconds and CPU seconds (``time.process_time``)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def component(value: Any, index: int | None) -> float:
    """Entry ``index`` of a theory value (the first, or the scalar, when ``index`` is None); NaN if absent."""
    import numpy as np

    if value is None:
        return math.nan
    arr = np.ravel(np.asarray(value, dtype=float))
    i = 0 if index is None else int(index)
    return float(arr[i]) if i < arr.size else math.nan


def saddle_phases(c, gamma: float, eta: float) -> tuple[str, str]:
    """THEORY.md §4 phase at the data spectrum ``c`` and at :data:`C_LIMIT`.

    Parameters
    ----------
    c : array_like
        Data eigenvalues.
    gamma, eta : float

    Returns
    -------
    tuple of str
        ``(phase at c, phase at C_LIMIT)``.
    """
    from bayes_sbm import theory

    return theory.posterior_saddle(c, gamma, eta).phase, theory.posterior_saddle(C_LIMIT, gamma, eta).phase


def log_evidence_pair(c, gamma: float, eta: float) -> tuple[float, float]:
    """THEORY.md §5 (1/N) log Y at the data spectrum ``c`` and at :data:`C_LIMIT`.

    Parameters
    ----------
    c : array_like
        Data eigenvalues.
    gamma, eta : float

    Returns
    -------
    tuple of float
        ``(value at c, value at C_LIMIT)``.
    """
    from bayes_sbm import theory

    return float(theory.log_evidence(c, gamma, eta)), float(theory.log_evidence(C_LIMIT, gamma, eta))


# --------------------------------------------------------------------------
# spec files and run folders (studies that fit with runs.fit_spec)
# --------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=False)


def spec_toml(spec, origin: str) -> str:
    """TOML text of a (possibly overridden) spec; ``load_spec`` reads it back to the same spec.

    Parameters
    ----------
    spec : bayes_sbm.specs.Spec
    origin : str
        Written as a comment on the first line.

    Returns
    -------
    str
    """
    d = spec.to_dict()
    lines = [f"# {origin}", ""]
    for key in ("name", "description"):
        if d.get(key) is not None:
            lines.append(f"{key} = {_toml_value(d[key])}")
    for table in ("model", "data", "inference", "predictive"):
        items = {k: v for k, v in (d.get(table) or {}).items() if v is not None}
        if items:
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in items.items()]
    return "\n".join(lines) + "\n"


def same_spec(meta: dict, spec) -> bool:
    """Whether the run metadata ``meta`` records ``spec`` (compared as JSON)."""
    return json.loads(json.dumps(meta.get("spec", {}))) == json.loads(json.dumps(spec.to_dict()))


def fit_or_reuse(spec, run_dir: Path, resume: bool, script: Path):
    """Fit ``spec`` into ``run_dir`` (or reuse a complete run fitted with the same spec when resuming).

    Parameters
    ----------
    spec : bayes_sbm.specs.Spec
        The spec to fit (overrides applied).
    run_dir : Path
    resume : bool
        Whether a complete run folder with the same spec may be reused.
    script : Path
        The study script (``__file__``), named in the ``spec.toml`` comment.

    Returns
    -------
    tuple
        ``(DataTree, meta dict, reused)``.
    """
    from bayes_sbm.io import write_text_atomic
    from bayes_sbm.runs import fit_spec, load_run

    if resume and (run_dir / "inference.nc").exists() and (run_dir / "meta.json").exists():
        dt, meta = load_run(run_dir)
        if same_spec(meta, spec) and "theory" in meta and "timing" in meta:
            return dt, meta, True
    dt, meta = fit_spec(spec, run_dir, progress_bar=False)
    # fit_spec copies the *base* spec file; record the spec actually fitted (with the overrides) instead
    script = Path(script).resolve()
    origin = f"{spec.path} with overrides, fitted by {script.name} ({script.parent.name})"
    write_text_atomic(run_dir / "spec.toml", spec_toml(spec, origin))
    return dt, meta, False


# --------------------------------------------------------------------------
# NUTS fits done in memory (as runs.fit_spec, without a run folder)
# --------------------------------------------------------------------------
def nuts_settings(spec):
    """``inference.NutsSettings`` of a spec's ``[inference]`` table, without a progress bar."""
    from bayes_sbm import inference

    i = spec.inference
    return inference.NutsSettings(num_warmup=i.num_warmup, num_samples=i.num_samples, num_chains=i.num_chains,
                                  target_accept=i.target_accept, dense_mass=i.dense_mass,
                                  max_tree_depth=i.max_tree_depth, chain_method=i.chain_method, progress_bar=False)


def run_spec_nuts(spec, problem):
    """Run NUTS on ``problem`` with the spec's settings and key (as ``runs.fit_spec``).

    Parameters
    ----------
    spec : bayes_sbm.specs.Spec
    problem : bayes_sbm.model.Problem
        Built from ``spec`` (``runs.problem_from_spec``).

    Returns
    -------
    tuple
        ``(result, latent draws (chain, draw, ...), sampling wall seconds)``.
    """
    import jax

    from bayes_sbm import inference

    settings = nuts_settings(spec)
    key_fit = jax.random.split(jax.random.key(spec.inference.seed))[0]  # as runs.fit_spec
    t0 = time.perf_counter()
    res = inference.run_nuts(key_fit, problem, settings)
    wall = time.perf_counter() - t0
    return res, res.samples[problem.latent_site], wall


def nuts_facts(res, latent) -> dict:
    """Divergences, smallest bulk ESS of the latent coordinates and number of draws of a NUTS fit."""
    import numpy as np

    from bayes_sbm.runs import latent_summary

    return {
        "divergences": int(np.sum(res.sample_stats["diverging"])),
        "latent_min_ess_bulk": latent_summary(latent)["min_ess_bulk"],
        "num_draws": int(latent.shape[0] * latent.shape[1]),
    }


class TeacherFit(NamedTuple):
    """A NUTS fit of teacher–student data (see :func:`teacher_student_fit`)."""

    spec: Any
    problem: Any
    teacher_W: Any
    result: Any
    latent: Any
    W: Any
    wall_s: float


def teacher_student_fit(base_spec, N: int, gamma: float, eta: float, nuts_overrides: dict) -> TeacherFit:
    """NUTS fit of ``base_spec`` at (N, γ, η) on its teacher–student data, as ``bayes-sbm fit`` would make it.

    Parameters
    ----------
    base_spec : bayes_sbm.specs.Spec
    N : int
    gamma, eta : float
    nuts_overrides : dict
        Further spec overrides (``inference.*``).

    Returns
    -------
    TeacherFit
        Spec, problem, teacher coupling W*, NUTS result, latent draws, coupling
        draws W (chain, draw, N, N) and sampling wall seconds.
    """
    import jax
    import numpy as np

    from bayes_sbm import inference, teacher
    from bayes_sbm.runs import problem_from_spec

    spec = base_spec.with_overrides({"model.N": int(N), "model.gamma": float(gamma), "model.eta": float(eta)} | nuts_overrides)
    d = spec.data
    td = teacher.teacher_student_data(jax.random.key(d.seed), spec.model.N, d.K, d.omega)  # as runs.load_spec_data
    problem = problem_from_spec(spec, td.data)
    res, latent, wall = run_spec_nuts(spec, problem)
    W = inference.coupling_draws(problem, latent)
    return TeacherFit(spec, problem, np.asarray(td.teacher.W), res, latent, W, wall)
