"""What the studies in ``analysis/*/run.py`` and the benchmarks in ``benchmarks/`` need on top of ``bayes_sbm``.

The scripts run as ``python analysis/<study>/run.py`` (or
``python benchmarks/<bench>.py``); each puts the checkout root on ``sys.path``
in one line and imports ``analysis._common``, which makes ``bayes_sbm``
importable from a checkout without installing it as well.

Fitting, key derivation, atomic writing, run metadata and spec files are the
library's (``runs.fit_spec``, ``inference.run_nuts`` with
``spec.inference.nuts_settings``, ``settings.derive_keys``, ``io``,
``Spec.to_toml``); this module only glues them together for the scripts:

* :func:`pin_threads` — the one place where threads (and JAX's CPU devices)
  are pinned, before NumPy or JAX are imported;
* command-line helpers (:func:`study_parser`, list types, NUTS overrides);
* CSV/Markdown tables and :func:`finish_study` (``table.md``,
  ``metadata.json`` and the closing line every study writes);
* fits as the studies make them: :func:`fit_or_reuse` (a run folder),
  :func:`run_spec_nuts` / :func:`teacher_student_fit` (in memory, the same
  draws as ``bayes-sbm fit``) and :func:`evidence_group` (the evidence
  estimators, timed).

Only the standard library is imported at module level: a script imports this
module before it pins the threads.  NumPy, JAX and ``bayes_sbm`` are imported
inside the functions that need them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
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
    "float_list",
    "int_list",
    "int_list_via_float",
    "name_list",
    "size_list",
    "study_parser",
    "start_study",
    "pick_values",
    "nuts_overrides",
    "QUICK_LADDER",
    "LADDER_OPTIONS",
    "ladder_settings",
    "FULL_PRECISION_CSV",
    "write_csv",
    "read_csv",
    "complete_groups",
    "fmt_num",
    "md_head",
    "md_row",
    "save_png",
    "finish_study",
    "previous_runs",
    "timed",
    "component",
    "summary_row",
    "theory_pair",
    "fit_or_reuse",
    "run_spec_nuts",
    "nuts_facts",
    "TeacherFit",
    "teacher_student_fit",
    "EvidenceGroup",
    "evidence_group",
    "FINITE_SIZE_LAWS",
    "size_points",
    "fit_finite_size_law",
    "extrapolations",
    "sweep_from_file",
    "headline_table",
    "law_band_table",
    "two_size_limit",
    "run_study_sweep",
    "print_extrapolations",
    "TEACHER_STUDENT_SWEEP",
    "add_teacher_student_options",
    "teacher_student_sweep",
    "teacher_student_facts",
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
NUTS_SEEDS = "teacher: spec data.seed (0); NUTS: settings.derive_keys(spec inference.seed).fit, as bayes-sbm fit"
#: NUTS sizes of a ``--quick`` run (per chain; one chain).
QUICK_NUTS = {"num_warmup": 100, "num_samples": 100, "num_chains": 1}
#: TI ladder of a ``--quick`` run (a full run takes ``LadderSettings``' defaults).
QUICK_LADDER = {"num_rungs": 4, "max_rungs": 4, "num_samples": 100, "num_warmup": 50, "first_warmup": 100, "prior_draws": 1000}
#: Ladder options (``--rungs`` …, argparse names) → ``LadderSettings`` fields.
LADDER_OPTIONS = {"rungs": "num_rungs", "max_rungs": "max_rungs", "samples": "num_samples", "warmup": "num_warmup",
                  "first_warmup": "first_warmup", "prior_draws": "prior_draws"}
#: :func:`write_csv` options of the theory studies: floats with 17 significant digits, ``None`` as an empty cell.
FULL_PRECISION_CSV = {"none": "", "float_format": lambda v: f"{v:.17g}"}

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------
# environment (before NumPy / JAX are imported)
# --------------------------------------------------------------------------
def pin_threads(threads: int | None = None, *, host_devices: int | None = None,
                jax_platforms: str | None = None) -> dict[str, str]:
    """Pin threads and JAX's CPU devices in the environment; must run before NumPy or JAX are imported.

    Parameters
    ----------
    threads : int or None, optional
        None (the studies): BLAS and OpenMP default to one thread, values
        already in the environment are kept.  An integer (the benchmarks):
        BLAS, OpenMP and XLA's CPU backend get exactly that many threads
        (other ``XLA_FLAGS`` are kept).
    host_devices : int or None, optional
        Number of CPU devices JAX exposes (``JAX_NUM_CPU_DEVICES``), so that
        chains can run in parallel; None or 1 leaves it alone.
    jax_platforms : str or None, optional
        Value of ``JAX_PLATFORMS``; None leaves it alone.

    Returns
    -------
    dict of str to str
        The variables set (the benchmarks record them with their results).
    """
    env: dict[str, str] = {}
    if threads is None:
        for var in _THREAD_VARS:
            env[var] = os.environ.get(var, "1")
    else:
        t = str(int(threads))
        env.update({var: t for var in _THREAD_VARS})
        ours = [f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'}", f"intra_op_parallelism_threads={t}"]
        drop = ("multi_thread_eigen", "intra_op_parallelism")
        kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not any(d in f for d in drop)]
        env["XLA_FLAGS"] = " ".join(kept + ours)
    if host_devices is not None and host_devices > 1:
        env["JAX_NUM_CPU_DEVICES"] = str(int(host_devices))
    if jax_platforms is not None:
        env["JAX_PLATFORMS"] = jax_platforms
    os.environ.update(env)
    os.environ["MPLBACKEND"] = "Agg"  # the scripts only write PNG files
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
        values = int_list(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 2, got {text!r}")
    return values


_NUTS_HELP = {
    "num_warmup": "NUTS warm-up per chain (default: the spec's, 500)",
    "num_samples": "NUTS draws per chain (default: the spec's, 500)",
    "num_chains": "NUTS chains (default: the spec's, 2)",
}


def study_parser(doc: str, out_default: Path, quick_help: str, resume_help: str | None = None, *,
                 nuts: Sequence[str] = (), samples_help: str | None = None,
                 models: str | None = None) -> argparse.ArgumentParser:
    """Parser of a study: ``--out``, ``--quick`` and the shared options it asks for.

    Parameters
    ----------
    doc : str
        The script's docstring; its first paragraph is the description.
    out_default : Path
        Default output folder.
    quick_help : str
        Help of ``--quick``.
    resume_help : str or None, optional
        Help of ``--resume``; None adds no ``--resume``.
    nuts : sequence of str, optional
        NUTS spec overrides to offer, among ``num_warmup``, ``num_samples``,
        ``num_chains`` (options ``--num-warmup`` …; see :func:`nuts_overrides`).
    samples_help : str or None, optional
        Help of ``--num-samples`` (default: the spec's).
    models : str or None, optional
        What the spec folder holds; adds ``--models`` (default ``<checkout>/models``).

    Returns
    -------
    argparse.ArgumentParser
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=out_default, help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    if resume_help is not None:
        p.add_argument("--resume", action="store_true", help=resume_help)
    for name in nuts:
        text = samples_help if name == "num_samples" and samples_help else _NUTS_HELP[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=text)
    if models is not None:
        p.add_argument("--models", type=Path, default=ROOT / "models", help=f"folder of {models} (default: %(default)s)")
    return p


def start_study(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, Path, float]:
    """Parse a study's options and create its ``--out`` folder; returns ``(args, out, t_start)`` (``time.perf_counter``)."""
    t_start = time.perf_counter()
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out, t_start


def pick_values(given: Sequence | None, quick: bool, quick_values: tuple, full_values: tuple) -> tuple:
    """The values given on the command line, else the quick or the full defaults."""
    return tuple(given) if given else (quick_values if quick else full_values)


def nuts_overrides(args: argparse.Namespace, names: Iterable[str] = ("num_warmup", "num_samples", "num_chains")) -> dict:
    """Spec overrides ``{"inference.<name>": int}`` from the NUTS options.

    An option given on the command line overrides the spec; with ``--quick``
    the missing ones take :data:`QUICK_NUTS`; otherwise the spec's value stays.
    """
    out = {}
    for name in names:
        given = getattr(args, name)
        if given is not None or args.quick:
            out[f"inference.{name}"] = int(given if given is not None else QUICK_NUTS[name])
    return out


def ladder_settings(args: argparse.Namespace):
    """The TI ladder (``LadderSettings``, no progress bar) of the options in :data:`LADDER_OPTIONS`.

    An option given on the command line wins; with ``--quick`` the missing
    ones take :data:`QUICK_LADDER`, otherwise ``LadderSettings``' defaults.
    ``max_rungs`` is raised to ``num_rungs`` when below it.  Imports
    ``bayes_sbm``: call it after :func:`pin_threads`.
    """
    import dataclasses

    from bayes_sbm.settings import LadderSettings

    values = {}
    for option, name in LADDER_OPTIONS.items():
        given = getattr(args, option)
        if given is not None or args.quick:
            values[name] = int(given if given is not None else QUICK_LADDER[name])
    ladder = dataclasses.replace(LadderSettings(progress_bar=False), **values)
    return dataclasses.replace(ladder, max_rungs=max(ladder.num_rungs, ladder.max_rungs))


# --------------------------------------------------------------------------
# CSV / Markdown
# --------------------------------------------------------------------------
def write_csv(path: Path, columns: Sequence[str], rows: Sequence, *, none: str = "None",
              float_format: Callable[[float], str] = repr) -> None:
    """Write ``rows`` as CSV atomically (``bayes_sbm.io.write_text_atomic``).

    Parameters
    ----------
    path : Path
    columns : sequence of str
        Header; for dict rows also the order of the cells (a missing key
        gives an empty cell).
    rows : sequence of dict or of sequences
    none : str, optional
        Cell text of a ``None`` value.
    float_format : callable, optional
        Text of a float cell (default ``repr``: round-trips exactly).
    """
    import numpy as np

    from bayes_sbm.io import write_text_atomic

    def cell(v: Any) -> str:
        if v is None:
            return none
        return float_format(float(v)) if isinstance(v, (float, np.floating)) else str(v)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([cell(v) for v in ([r.get(c, "") for c in columns] if isinstance(r, dict) else r)])
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


def complete_groups(rows: list[dict], key: Callable[[dict], Hashable], size: int) -> tuple[list[dict], set]:
    """The rows of the groups (``key(row)``) that hold exactly ``size`` rows, and those keys (``--resume``)."""
    counts = Counter(key(r) for r in rows)
    done = {k for k, n in counts.items() if n == size}
    return [r for r in rows if key(r) in done], done


def fmt_num(v: Any, digits: int = 4, small: float = 1e-3, large: float = 1e4) -> str:
    """A number for a Markdown table: fixed point, scientific outside [small, large), ``–`` if not finite."""
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


def save_png(fig, path: Path) -> Path:
    """Save a matplotlib figure as PNG (130 dpi, tight box) atomically and close it (the theory studies)."""
    import matplotlib.pyplot as plt

    from bayes_sbm.io import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------
# the end of every study
# --------------------------------------------------------------------------
def finish_study(out: Path, study: str, t_start: float, *, files: Sequence[str] = (), table: str | None = None,
                 figures: Sequence[Path] = (), seed: int | None = None, **fields: Any) -> dict:
    """Write ``table.md`` and ``metadata.json`` and print the closing line of a study.

    Parameters
    ----------
    out : Path
        The study's output folder.
    study : str
        Its name (``metadata.json`` ``"study"``).
    t_start : float
        ``time.perf_counter()`` at its start (``"wall_s"``).
    files : sequence of str, optional
        Files the study wrote into ``out`` (CSV …), listed first in ``"outputs"``.
    table : str or None, optional
        Markdown text written to ``out/table.md``.
    figures : sequence of Path, optional
        Figures written below ``out`` (listed relative to it).
    seed : int or None, optional
    **fields
        Further metadata, in this order after ``"study"`` (``checks``,
        ``quick``, ``settings`` …).

    Returns
    -------
    dict
        The metadata written (``bayes_sbm.io.run_metadata`` with the fields,
        ``"outputs"`` and ``"wall_s"``).
    """
    from bayes_sbm.io import run_metadata, write_json_atomic, write_text_atomic

    out = Path(out)
    outputs = list(files)
    if table is not None:
        write_text_atomic(out / "table.md", table)
        outputs.append("table.md")
    outputs += [Path(os.path.relpath(p, out)).as_posix() for p in figures]
    meta = run_metadata(seed=seed, study=study, **fields, outputs=outputs, wall_s=time.perf_counter() - t_start)
    write_json_atomic(out / "metadata.json", meta)
    print(f"wrote {', '.join(outputs)} and metadata.json in {out} ({meta['wall_s']:.1f} s)", flush=True)
    return meta


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


def summary_row(table, var: str, index: int | None) -> dict:
    """Row of component ``index`` (0-based position; None: a scalar) of ``var`` in a ``diagnostics.summary_table``.

    By position, whatever the labels (``lam_top[1]`` is λ_1 where the run's
    DataTree numbers modes from 1).
    """
    labels = [lab for lab in table.labels if lab == var or lab.startswith(f"{var}[")]
    return table.row(labels[0 if index is None else int(index)])


def theory_pair(c, gamma: float, eta: float):
    """``bayes_sbm.theory.observable_reference`` at the data spectrum ``c`` and at :data:`C_LIMIT`.

    Returns
    -------
    tuple of ObservableReference
        ``(at c, at C_LIMIT)``: phase, λ, u, M, (1/N) log Y … (THEORY.md §4–5).
    """
    from bayes_sbm.theory import observable_reference

    return observable_reference(c, gamma, eta), observable_reference(C_LIMIT, gamma, eta)


# --------------------------------------------------------------------------
# fits
# --------------------------------------------------------------------------
def fit_or_reuse(spec, run_dir: Path, resume: bool):
    """Fit ``spec`` into ``run_dir`` with ``runs.fit_spec`` (or reuse the run there fitted with the same spec when resuming).

    A finished run of another spec (or any run when not resuming) is replaced
    as a whole; a folder that holds something else is refused (``ValueError``).

    Returns
    -------
    tuple
        ``(DataTree, meta dict, reused)``.
    """
    from bayes_sbm.runs import fit_spec, load_run

    if resume:
        try:
            dt, meta = load_run(run_dir)
        except (FileNotFoundError, ValueError):
            pass
        else:
            if spec.matches(meta.get("spec")):
                return dt, meta, True
    dt, meta = fit_spec(spec, run_dir, progress_bar=False, overwrite=True)
    return dt, meta, False


def run_spec_nuts(spec, problem):
    """NUTS on ``problem`` in memory with the spec's settings and key: the draws of ``bayes-sbm fit``.

    Parameters
    ----------
    spec : bayes_sbm.specs.Spec
    problem : bayes_sbm.inference.PosteriorProblem
        Built from ``spec`` (``runs.problem_from_spec``).

    Returns
    -------
    tuple
        ``(result, latent draws (chain, draw, ...), sampling wall seconds)``.
    """
    from bayes_sbm import inference
    from bayes_sbm.settings import derive_keys

    key = derive_keys(spec.inference.seed).fit
    t0 = time.perf_counter()
    res = inference.run_nuts(key, problem, spec.inference.nuts_settings(progress_bar=False))
    return res, res.samples[problem.latent_site], time.perf_counter() - t0


def nuts_facts(res, latent) -> dict:
    """Divergences, smallest bulk ESS of the latent coordinates (``runs.latent_summary``) and number of draws."""
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
    """NUTS fit of ``base_spec`` at (N, γ, η) on its teacher–student data, the draws ``bayes-sbm fit`` makes.

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
    # runs.load_spec_data draws these data; the teacher couplings come with them
    td = teacher.teacher_student_data(jax.random.key(d.seed), spec.model.N, d.K, d.omega)
    problem = problem_from_spec(spec, td.data)
    res, latent, wall = run_spec_nuts(spec, problem)
    W = inference.coupling_draws(problem, latent)
    return TeacherFit(spec, problem, np.asarray(td.teacher.W), res, latent, W, wall)


class EvidenceGroup(NamedTuple):
    """Estimates of one evidence group with its cost (see :func:`evidence_group`)."""

    estimates: dict
    wall_s: float
    cpu_s: float
    facts: dict


def evidence_group(group: str, spec, problem, *, seed: int | None = None, ladder=None, svi_steps: int | None = None,
                   svi_draws: int = 4000, svi_learning_rate: float | None = None) -> EvidenceGroup:
    """The evidence estimators of ``bayes-sbm evidence`` for one group, timed (wall and CPU seconds).

    Parameters
    ----------
    group : {"ti", "svi"}
        ``"ti"``: one NUTS ladder → ``ti`` and ``stepping_stone``;
        ``"svi"``: one SVI fit (the spec's guide, ``"normal"`` unless
        aligned or band) and guide draws → ``elbo``, ``importance``, ``iwae``.
    spec : bayes_sbm.specs.Spec
    problem : bayes_sbm.inference.PosteriorProblem
    seed : int or None, optional
        Seed of the keys (``settings.derive_keys``; default the spec's).
    ladder : bayes_sbm.settings.LadderSettings, optional
    svi_steps : int or None, optional
        SVI steps (default the spec's).
    svi_draws : int, optional
        Guide draws for the evidence.
    svi_learning_rate : float or None, optional
        Adam step size (default the spec's).

    Returns
    -------
    EvidenceGroup
        ``facts`` — ti: ``num_rungs``, ``min_rung_ess``, ``ladder`` (the
        rungs' t), ``quadrature_correction_per_n``; svi: fit and draw seconds,
        ``guide``, ``elbo_trace_final`` (per N), ``importance_ess``.
    """
    import dataclasses

    from bayes_sbm import evidence, inference
    from bayes_sbm.settings import LadderSettings, derive_keys

    keys = derive_keys(spec.inference.seed if seed is None else seed)
    if group == "ti":
        ladder = dataclasses.replace(ladder or LadderSettings(), progress_bar=False)
        res, wall, cpu = timed(lambda: evidence.thermodynamic_integration(keys.ti, problem, ladder))
        rung_ess = [float(r.ess) for r in res.rungs[1:]]
        facts = {"num_rungs": len(res.rungs), "min_rung_ess": min(rung_ess) if rung_ess else math.nan,
                 "ladder": [float(r.t) for r in res.rungs],
                 "quadrature_correction_per_n": float(res.ti.info.get("quadrature_correction", math.nan)) / problem.N}
        return EvidenceGroup({"ti": res.ti, "stepping_stone": res.stepping_stone}, wall, cpu, facts)
    if group != "svi":
        raise ValueError(f"group: must be 'ti' or 'svi', got {group!r}")
    base = spec.inference.svi_settings(progress_bar=False)
    guide = base.guide if problem.parametrization in ("aligned", "band") else "normal"  # as reports.evidence_report
    settings = dataclasses.replace(base, guide=guide, num_steps=svi_steps or base.num_steps, num_draws=10,
                                   learning_rate=base.learning_rate if svi_learning_rate is None else svi_learning_rate)
    fit, wall_fit, cpu_fit = timed(lambda: inference.run_svi(keys.svi, problem, settings))
    est, wall_is, cpu_is = timed(lambda: evidence.svi_evidence(keys.importance, fit, num_draws=svi_draws))
    facts = {"svi_fit_wall_s": wall_fit, "svi_fit_cpu_s": cpu_fit, "svi_draws_wall_s": wall_is, "svi_draws_cpu_s": cpu_is,
             "guide": guide, "elbo_trace_final": float(fit.elbo[-max(1, len(fit.elbo) // 10):].mean()) / problem.N,
             "importance_ess": float(est["importance"].info.get("ess", math.nan))}
    return EvidenceGroup({k: est[k] for k in ("elbo", "importance", "iwae")}, wall_fit + wall_is, cpu_fit + cpu_is, facts)


# --------------------------------------------------------------------------
# finite-size scaling (the large-N studies)
# --------------------------------------------------------------------------
#: Finite-size laws d(N) = a + b N^(−p) tried on a difference from theory: name → p.
#: 1/N: outlier phases and self-averaging sums; N^(−2/3): an eigenvalue at a bulk edge; slower ones near transitions.
FINITE_SIZE_LAWS = {"1/N": 1.0, "N^-2/3": 2.0 / 3.0, "N^-1/2": 0.5, "N^-1/3": 1.0 / 3.0}


def size_points(rows: Sequence[dict], select: Callable[[dict], bool], *, value: str = "diff", se: str = "mcse"):
    """(N, d(N), SE) over sizes of the selected rows: the mean over seeds at each N.

    The SE is the combined per-row SE (one seed), or the seed-to-seed
    standard error when that is larger (several seeds).
    """
    import numpy as np

    by_n: dict[int, list[dict]] = {}
    for r in rows:
        if select(r) and math.isfinite(float(r[value])) and math.isfinite(float(r[se])):
            by_n.setdefault(int(r["N"]), []).append(r)
    Ns, ds, ses = [], [], []
    for N in sorted(by_n):
        d = np.array([float(r[value]) for r in by_n[N]])
        e = np.array([float(r[se]) for r in by_n[N]])
        err = math.sqrt(float(np.sum(e**2))) / d.size
        if d.size > 1:
            err = max(err, float(np.std(d, ddof=1)) / math.sqrt(d.size))
        Ns.append(N)
        ds.append(float(d.mean()))
        ses.append(err)
    return np.array(Ns, float), np.array(ds), np.array(ses)


def _law_basis(N, p):
    """``N^(−p)``, or ``N^(−p) log N`` for ``p = (exponent, "log")``."""
    import numpy as np

    if isinstance(p, tuple):
        return N ** (-p[0]) * np.log(N)
    return N ** (-p)


def _law_order(p) -> tuple[float, int]:
    """Decay order of a law for "fastest": the exponent, a log factor just slower (log N/N between 1/N and N^-2/3)."""
    return (p[0], -1) if isinstance(p, tuple) else (p, 0)


def fit_finite_size_law(N, d, se, p) -> dict:
    """Weighted least squares of ``d = a + b N^(−p)`` (weights 1/SE²); ``p = (q, "log")`` fits ``a + b N^(−q) log N``.

    Returns ``a`` (the N → ∞ limit of d), ``se_a`` (scaled by √(χ²/dof)
    when χ²/dof > 1: scatter beyond the SEs widens the extrapolation, never
    narrows it), ``b``, ``chi2_dof`` and ``num_sizes``; NaNs with fewer than
    three sizes (no degree of freedom left to judge the law).
    """
    import numpy as np

    N, d, se = (np.asarray(a, float) for a in (N, d, se))
    ok = np.isfinite(d) & np.isfinite(se) & (se > 0)
    N, d, se = N[ok], d[ok], se[ok]
    out = {"a": math.nan, "se_a": math.nan, "b": math.nan, "chi2_dof": math.nan, "num_sizes": int(N.size)}
    if N.size < 3:
        return out
    X = np.stack([np.ones_like(N), _law_basis(N, p)], axis=1) / se[:, None]
    y = d / se
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    cov = np.linalg.inv(X.T @ X)
    chi2_dof = float(np.sum((X @ coef - y) ** 2) / (N.size - 2))
    return {"a": float(coef[0]), "se_a": float(math.sqrt(cov[0, 0] * max(1.0, chi2_dof))), "b": float(coef[1]),
            "chi2_dof": chi2_dof, "num_sizes": int(N.size)}


#: A law is accepted when its χ² is below this quantile of the χ² law of its degrees of freedom (1 %: a law that
#: holds is rejected once in a hundred studies).
LAW_ACCEPT_QUANTILE = 0.99


def extrapolations(N, d, se, laws: dict | None = None) -> list[dict]:
    """Every law of ``laws`` (default :data:`FINITE_SIZE_LAWS`) fitted to d(N): rows with ``law``, ``p``, the fit,
    ``z = a/SE(a)``, ``accepted`` and ``best``.

    A law is accepted when its χ² is below the :data:`LAW_ACCEPT_QUANTILE`
    quantile for its degrees of freedom.  The best law is the fastest decay
    (largest p; a log N factor counts as just slower) among the accepted:
    among laws the data cannot tell apart, the one that assumes the least
    slow correction; the smallest χ² when none is acceptable.  The spread of
    a over the accepted laws is the extrapolation's law uncertainty.
    """
    from scipy.stats import chi2

    laws = FINITE_SIZE_LAWS if laws is None else laws
    fits = [{"law": name, "p": p[0] if isinstance(p, tuple) else p, "_order": _law_order(p), **fit_finite_size_law(N, d, se, p)}
            for name, p in laws.items()]
    finite = [f for f in fits if math.isfinite(f["chi2_dof"])]
    accepted = [f for f in finite if f["chi2_dof"] * (f["num_sizes"] - 2) <= chi2.ppf(LAW_ACCEPT_QUANTILE, f["num_sizes"] - 2)]
    for f in fits:
        f["accepted"] = any(f is g for g in accepted)
    if accepted:
        best = max(accepted, key=lambda f: f["_order"])["law"]
    else:
        best = min(finite, key=lambda f: f["chi2_dof"])["law"] if finite else None
    for f in fits:
        f.pop("_order")
        f["z"] = f["a"] / f["se_a"] if math.isfinite(f["se_a"]) and f["se_a"] > 0 else math.nan
        f["best"] = f["law"] == best
    return fits


def sweep_from_file(path: Path, out: Path, *, specs: Sequence[str] | None = None, grid: dict | None = None,
                    fixed: dict | None = None, tables: dict | None = None):
    """A study's sweep: the sweep file ``path`` with its ``[grid] spec`` narrowed to ``specs`` (spec file stems),
    grid keys and ``[set]`` keys replaced (dotted key → value), task tables updated, and point folders under ``out``."""
    import tomllib

    from bayes_sbm import sweep

    raw = tomllib.loads(Path(path).read_text())

    def flat(table: dict) -> dict:  # TOML dotted keys come back nested; quoted "table.key" ones flat
        out: dict = {}
        for k, v in (table or {}).items():
            out |= {f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v}
        return out

    raw_grid = dict(raw["grid"])
    spec_files = raw_grid.pop("spec", None)
    new_grid: dict = {}
    if spec_files is not None:
        by_stem = {Path(f).stem: f for f in spec_files}
        new_grid["spec"] = [by_stem[s] for s in specs] if specs else spec_files
    new_grid |= {k: v for k, v in flat(raw_grid).items()} | {k: list(v) for k, v in (grid or {}).items() if v is not None}
    raw["grid"] = new_grid
    raw["set"] = flat(raw.get("set", {})) | dict(fixed or {})
    for table, values in (tables or {}).items():
        raw[table] = {**raw.get(table, {}), **values}
    raw.pop("out", None)
    return sweep.parse_sweep(raw, source=str(path), base_dir=Path(path).parent, default_name=Path(path).stem, out=out)


def headline_table(csv_path: Path, key: str, names: Sequence[str], labels: dict[str, str] | None = None) -> str:
    """The README headline of a finite-size study: per phase (row) and quantity (column), the extrapolated N → ∞
    value, the theory and z = (value − theory)/SE with the law, from the best law of each fit in
    ``finite_size.csv`` (``key``: the column naming the quantity, ``observable`` or ``estimator``)."""
    rows = [r for r in read_csv(csv_path, strings=("spec", "phase", key, "law", "best")) if r["best"] == "True"]
    labels = labels or {}
    head = ["spec (phase)", *(labels.get(n, n) for n in names)]
    lines = md_head(head)
    for spec in dict.fromkeys(r["spec"] for r in rows):
        cells = [f"{spec} ({next(r['phase'] for r in rows if r['spec'] == spec)})"]
        for n in names:
            r = next((r for r in rows if r["spec"] == spec and r[key] == n), None)
            cells.append("–" if r is None else f"{r['extrapolated']:.4f} vs {r['theory_limit']:.4f} ({r['z']:+.1f} SE, {r['law']})")
        lines.append(md_row(cells))
    return "\n".join(lines)


def two_size_limit(n1: float, d1: float, se1: float, n2: float, d2: float, se2: float, p: float) -> tuple[float, float]:
    """N → ∞ limit a (and its SE) of ``d = a + b N^(−p)`` through two sizes: ``a = (n2^p d2 − n1^p d1)/(n2^p − n1^p)``.

    No degree of freedom is left to test the law: use it to compare laws (1/N
    against N^(−1/2)), not to select one.
    """
    w1, w2 = n1**p, n2**p
    return (w2 * d2 - w1 * d1) / (w2 - w1), math.hypot(w2 * se2, w1 * se1) / (w2 - w1)


def law_band_table(csv_path: Path, key: str, name: str, label: str) -> str:
    """README table of one quantity of a finite-size study: per phase spec, the best law's N → ∞ value vs theory
    (z, law) and z under every accepted law (the extrapolation's law uncertainty), from ``finite_size.csv``."""
    rows = [r for r in read_csv(csv_path, strings=("spec", "phase", key, "law", "best", "accepted")) if r[key] == name]
    lines = md_head(["spec (phase)", f"{label}: N → ∞ value vs theory (z, fastest accepted law)", "z under every accepted law"])
    for spec in dict.fromkeys(r["spec"] for r in rows):
        mine = [r for r in rows if r["spec"] == spec]
        b = next(r for r in mine if r["best"] == "True")
        acc = ", ".join(f"{r['law']}: {r['z']:+.1f}" for r in mine if r["accepted"] == "True") or "none"
        lines.append(md_row([f"{spec} ({b['phase']})", f"{b['extrapolated']:.4f} vs {b['theory_limit']:.4f} ({b['z']:+.1f} SE, {b['law']})", acc]))
    return "\n".join(lines)


def run_study_sweep(sw, *, analyse_only: bool, scheduler: str | None, workers: int | None, processes: bool):
    """Run a study's sweep on Dask (or, ``analyse_only``, read what is finished).

    Returns
    -------
    tuple
        ``(finished, failed, point_seconds, wall_s)``: the finished points
        (in grid order), ``{"point", "status", "error"}`` of the others, each
        point's seconds and the wall time of the sweep.
    """
    from bayes_sbm import sweep

    t0 = time.perf_counter()
    rows = sweep.read_rows(sw) if analyse_only else sweep.run_sweep(sw, scheduler=scheduler, workers=workers, processes=processes).rows
    finished, failed = [], []
    for point, row in zip(sw.points, rows):
        if row.get("status") == "ok":
            finished.append(point)
        else:
            failed.append({"point": point.name, "status": row.get("status"), "error": row.get("error")})
            print(f"[failed] {point.name}: {row.get('error')}", flush=True)
    return finished, failed, {p.name: r.get("seconds") for p, r in zip(sw.points, rows)}, time.perf_counter() - t0


def print_extrapolations(fss: Sequence[dict], key: str, labels: dict[str, str] | None = None, digits: int = 4) -> None:
    """One line per best finite-size law: ``spec quantity: N→∞ value ± SE (law), theory, z``."""
    labels = labels or {}
    for f in fss:
        if f["best"]:
            print(f"{f['spec']:>4s} {labels.get(f[key], f[key]):>15s}: N→∞ {f['extrapolated']:+.{digits}f} ± {f['se_a']:.{digits}f} "
                  f"({f['law']}), theory {f['theory_limit']:+.{digits}f}, z = {f['z']:+.2f}", flush=True)


#: The teacher–student fits shared by the double-descent, temperature-tuning and tempered-posterior studies.
TEACHER_STUDENT_SWEEP = ROOT / "models" / "sweeps" / "teacher_student.toml"
#: ``--quick`` points of the teacher–student studies: tiny NUTS runs of the band model (the large-N code path), two chains
#: so that R-hat is defined.
QUICK_TEACHER_STUDENT_SET = {"inference.num_warmup": 100, "inference.num_samples": 100, "inference.num_chains": 2,
                             "model.parametrization": "band"}


def add_teacher_student_options(p: argparse.ArgumentParser, sizes: str, etas: str, gammas: str) -> None:
    """``--sizes --etas --gammas`` (narrowing :data:`TEACHER_STUDENT_SWEEP`), ``--runs``, ``--scheduler``,
    ``--workers``, ``--analyse-only``."""
    p.add_argument("--sizes", type=int_list_via_float, help=f"values of N (default {sizes})")
    p.add_argument("--etas", type=float_list, help=f"values of eta (default {etas})")
    p.add_argument("--gammas", type=float_list, help=f"values of gamma (default {gammas})")
    p.add_argument("--runs", type=Path, help="the sweep folder of the fits (default: the sweep file's out, shared by the "
                                             "teacher-student studies; --quick: OUT/runs)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, help="LocalCluster workers (default: one per core)")
    p.add_argument("--analyse-only", action="store_true", help="no fitting: analyse the points already finished")


def teacher_student_sweep(args: argparse.Namespace, out: Path, grid: dict):
    """:data:`TEACHER_STUDENT_SWEEP` narrowed to ``grid`` (spec key → values); ``--quick`` runs tiny aligned fits."""
    import tomllib

    if args.runs is not None:
        runs = args.runs
    elif args.quick:
        runs = out / "runs"
    else:
        runs = (TEACHER_STUDENT_SWEEP.parent / tomllib.loads(TEACHER_STUDENT_SWEEP.read_text())["out"]).resolve()
    return sweep_from_file(TEACHER_STUDENT_SWEEP, runs, grid=grid, fixed=QUICK_TEACHER_STUDENT_SET if args.quick else None)


def teacher_student_facts(point) -> dict:
    """N, η, γ, ω, the data spectrum, the phase at it and the sampler facts of a finished teacher–student point."""
    import numpy as np

    from bayes_sbm import sweep
    from bayes_sbm.runs import load_run

    dt, meta = load_run(point.folder / sweep.RUN_DIR)
    row = sweep.fit_row(dt, meta)
    m = point.spec.model
    c = [*list(meta.get("c", [])), math.nan, math.nan]
    return {"N": int(m.N), "eta": float(m.eta), "gamma": float(m.gamma), "omega": float(np.ravel(point.spec.data.omega)[0]),
            "c_1": float(c[0]), "c_2": float(c[1]), "phase": row["phase"], "divergences": row["divergences"],
            "latent_min_ess_bulk": row["min_ess_bulk"], "max_r_hat": row["max_r_hat"], "fit_wall_s": row["fit_s"],
            "num_draws": int(dt["posterior"].sizes["chain"] * dt["posterior"].sizes["draw"]), "run": point.folder / sweep.RUN_DIR}
