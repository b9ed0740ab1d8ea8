"""Command-line interface: ``bayes-sbm SUBCOMMAND ...``.

Each subcommand lives in its own ``_cmd_*`` function registered in
:func:`build_parser`. Errors a user can cause (bad arguments, bad or missing
files, numbers that cannot be computed) are raised as :class:`UserError`,
``ValueError`` or ``OSError`` and printed as one line naming the argument or
file and the value, with exit status 2; no traceback, and nothing written.
Output paths are checked before any computing; results that come out NaN or
infinite are errors naming the input, never printed as numbers.

Orientation: long commands print stage headers (``== stage ==``) and their
timings (``(12.3 s)``) on stdout, and every command that writes files ends
with a ``wrote …`` list of them. ``--quiet`` drops the progress (timings,
progress bars, headers of stages with no result under them) but never a
result or a warning. Output cites the theory note shipped with the
repository, ``docs/theory.md``, by section anchor (:data:`THEORY_DOC`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from . import __version__, _checks, diagnostics, plots, reports, sweep, teacher, theory
from .data import DATA_SUFFIXES, data_spectrum, read_data, save_data
from .io import load_npy, run_metadata, save_npy_atomic, write_json_atomic
from .runs import check_run_folder, fit_spec, load_run
from .settings import LadderSettings
from .specs import load_spec

__all__ = ["main", "build_parser", "UserError", "THEORY_DOC", "theory_ref"]

#: The theory note the CLI output cites (relative to the repository root).
THEORY_DOC = "docs/theory.md"
#: Anchors of docs/theory.md by THEORY section number (the ``§n`` of the docstrings).
THEORY_ANCHORS = {
    1: "1-model",
    2: "2-partition-function",
    3: "3-data-and-posterior",
    4: "4-phases",
    5: "5-evidence",
    6: "6-divergences",
    7: "7-checks",
    8: "8-band-representation",
}


def theory_ref(section: int) -> str:
    """``docs/theory.md#4-phases``: where the output of a command is explained (THEORY section ``§section``)."""
    return f"{THEORY_DOC}#{THEORY_ANCHORS[section]}"


class UserError(Exception):
    """An error caused by the user's input, reported as one line."""


class _UsageError(Exception):
    """A command line argparse rejects (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: no usage block, no ``SystemExit`` from :func:`main`."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bayes-sbm",
        description="Bayesian inference in spherical Boltzmann machines (SBMs).",
    )
    parser.add_argument("--version", action="version", version=f"bayes-sbm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in _REGISTRY:
        register(sub)
    return parser


_REGISTRY: list = []


def _register(fn):
    _REGISTRY.append(fn)
    return fn


# argparse ``type=`` functions: their messages follow "argument --name: " (the _checks format without the name)
def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must be at least one number, got {text!r}")
    return values


def _positive_list(text: str) -> list[float]:
    values = _float_list(text)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be finite numbers > 0, got {text}")
    return values


def _positive_int(text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
    return value


def _num_points(text: str) -> int:
    """At least 2 points (a standard error needs two)."""
    return _positive_int(text, minimum=2)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {_checks.MAX_SEED}], got {text!r}") from None
    if not 0 <= value <= _checks.MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {_checks.MAX_SEED}], got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text}")
    return value


# ---------------------------------------------------------------------------
# checks made before any computing
# ---------------------------------------------------------------------------
def _check_output_file(path: str, what: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Fail before any computing when an output file has the wrong suffix or cannot be written.

    The folder must exist (nothing is created for a file output).
    """
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise UserError(f"{what}: must end in {', '.join(suffixes)}, got {path!r}")
    if p.is_dir():
        raise UserError(f"{what}: {path!r} is a folder, not a file")
    folder = p.resolve().parent
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{what}: cannot write {path!r}: folder {str(folder)!r} {why}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{what}: cannot write {path!r}: folder {str(folder)!r} is not writable")
    return p


def _run_output_folder(out: str | None, run: Path, default: str) -> Path:
    """``--out`` when given, else ``RUN/<default>``, checked by :func:`_check_output_folder` before any computing."""
    return _check_output_folder(out, "--out") if out else _check_output_folder(run / default, "RUN")


def _check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """Fail before any computing when an output folder is a file or cannot be created (its parents may be created)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what}: {str(p)!r} exists and is not a folder")
    ancestor = p.resolve()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what}: cannot create {str(p)!r}: {str(ancestor)!r} is not a folder")
    if not os.access(ancestor, os.W_OK):
        raise UserError(f"{what}: cannot create or write {str(p)!r}: {str(ancestor)!r} is not writable")
    return p


def _physical_memory() -> int | None:
    """Bytes of physical memory, or None when unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits_in_memory(spec) -> None:
    """Refuse a model whose single N x N coupling matrix exceeds the machine's memory (it could never run)."""
    N = spec.model.N
    need, have = 8 * N * N, _physical_memory()
    if have is not None and need > have:
        raise UserError(f"{spec.path}: model.N: N = {N} needs {need / 2**30:.3g} GiB for one N x N coupling matrix, "
                        f"more than this machine's {have / 2**30:.3g} GiB of memory; choose a smaller N")


def _load_spec(path: str, what: str = "spec"):
    """A spec (:func:`bayes_sbm.specs.load_spec`) that fits in memory; its errors name the file."""
    if Path(path).is_dir():
        raise UserError(f"{what}: {path!r} is a folder, not a spec file")
    spec = load_spec(path)
    _check_fits_in_memory(spec)
    return spec


@_register
def _add_teacher(sub) -> None:
    p = sub.add_parser("teacher", help=f"draw teacher-student data from a planted SBM ({theory_ref(3)})")
    p.add_argument("--N", type=_positive_int, required=True, help="dimension")
    p.add_argument("--K", type=_positive_int, required=True, help="number of samples")
    p.add_argument("--omega", type=_positive_list, default=[2.5], help="spike strength(s), comma separated (default 2.5)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="sampling inverse temperature (default 1)")
    p.add_argument("--seed", type=_seed, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", required=True,
                   help="output data file: .npy, or .csv/.txt (comma separated, one point per row), written atomically; "
                        "the settings go to OUT.json")
    p.add_argument("--teacher-out", help="also save W* (.npy)")
    p.set_defaults(func=_cmd_teacher)


def _cmd_teacher(args) -> int:
    out = _check_output_file(args.out, "--out", DATA_SUFFIXES)
    _check_output_file(str(out) + ".json", "--out")
    if args.teacher_out:
        w_out = _check_output_file(args.teacher_out, "--teacher-out", (".npy",))
        if w_out.resolve() == out.resolve():
            raise UserError(f"--teacher-out: must differ from --out, got {args.teacher_out!r} for both")
    if args.N > _teacher_max_n():
        raise UserError(f"--N: must be an integer <= {_teacher_max_n()} (one N x N matrix must fit in memory), got {args.N}")
    td = teacher.teacher_student_data(jax.random.key(args.seed), args.N, args.K, args.omega, args.beta)
    out = save_data(out, td.data)
    if args.teacher_out:
        save_npy_atomic(args.teacher_out, td.teacher.W)
    meta = run_metadata(seed=args.seed, N=args.N, K=args.K, omega=args.omega, beta=args.beta)
    write_json_atomic(str(out) + ".json", meta)
    spec = data_spectrum(td.data)
    fmt = "NumPy .npy" if out.suffix.lower() == ".npy" else "comma-separated text"
    print(f"wrote {out} ({fmt}): K = {args.K} points on the sphere |x|^2 = N = {args.N} (seed {args.seed})")
    print("data-correlation eigenvalues c_k: " + ", ".join(f"{c:.6f}" for c in spec.c))
    if len(args.omega) == 1 and args.K == 2 and args.omega[0] > 1:
        w = args.omega[0]
        print(f"large-N prediction ({theory_ref(3)}): c = ({2 - 1 / w:.6f}, {1 / w:.6f})")
    _print_wrote([out, str(out) + ".json", *([args.teacher_out] if args.teacher_out else [])])
    return 0


def _teacher_max_n() -> int:
    """Largest N whose N x N float64 matrix fits in physical memory (a large number when unknown)."""
    have = _physical_memory()
    return int(math.isqrt(have // 8)) if have else 10**9


@_register
def _add_logz(sub) -> None:
    p = sub.add_parser("logz", help="exact and saddle-point log Z of a coupling matrix W (.npy)")
    p.add_argument("W", help="symmetric N x N matrix saved with numpy (.npy)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="inverse temperature (default 1)")
    p.set_defaults(func=_cmd_logz)


def _load_matrix(path: str, what: str) -> np.ndarray:
    """A finite square matrix from a .npy file; UserError naming the option and the file otherwise."""
    name = f"{what} {path}"
    try:
        W = load_npy(path, name)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.size == 0:
        raise UserError(f"{name}: must hold a square N x N matrix, got shape {W.shape}")
    try:
        return _checks.finite_array(name, W, ndim=2)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _cmd_logz(args) -> int:
    W = _load_matrix(args.W, "W")
    try:
        s = reports.partition_summary(W, args.beta)
    except ValueError as exc:
        text = _checks.one_line(exc)
        if text.startswith("beta:"):  # name the option and the file it applies to
            text = f"--beta {args.beta!r} with W {args.W}:" + text[len("beta:"):]
        elif text.startswith("W:"):
            text = f"W {args.W}:" + text[len("W:"):]
        raise UserError(text) from None
    print(f"N = {s.N}, beta = {s.beta}")
    print(f"exact log Z          = {s.log_z:.12g}   ({s.log_z_per_n:.10f} per N)")
    print(f"saddle log Z         = {s.log_z_saddle:.12g}   (error {s.log_z_saddle - s.log_z:+.3e})")
    print(f"saddle + Gaussian    = {s.log_z_saddle_gaussian:.12g}   (error {s.log_z_saddle_gaussian - s.log_z:+.3e})")
    print(f"Lagrange multiplier mu = {s.mu:.10g} (top eigenvalue of beta W {s.top_eigenvalue:.10g})")
    print(f"condensate E[y_1^2]/N = {s.condensate:.8f}")
    print(f"exact sampler acceptance = {s.sampler_acceptance:.4f}")
    return 0


@_register
def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit the posterior of a model spec (NUTS or SVI) into a run folder")
    p.add_argument("spec", help="model spec (.toml), see models/README.md")
    p.add_argument("--out", required=True, help="run folder (must be new or empty; an interrupted checkpointed NUTS run resumes)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out as a whole")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the NUTS checkpoint in RUN/checkpoint after success")
    p.add_argument("--quiet", action="store_true", help="no progress bars (results and warnings are still printed)")
    p.add_argument("--store-W", action="store_true", help="also store the N x N coupling draws in inference.nc")
    p.set_defaults(func=_cmd_fit)


def _use_host_devices(num_chains: int) -> None:
    """Expose one XLA host device per chain (up to the cores) so chains run in parallel.

    Effective only before JAX starts its backend (the first computation);
    afterwards chains fall back to sequential, which is still correct.
    """
    n = max(1, min(int(num_chains), os.cpu_count() or 1))
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except (AttributeError, RuntimeError, ValueError):  # backend already started, or an older JAX
        pass


def _cmd_fit(args) -> int:
    _check_output_folder(args.out, "--out")
    spec = _load_spec(args.spec)
    _use_host_devices(spec.inference.num_chains)
    dt, meta = fit_spec(spec, args.out, progress_bar=not args.quiet, store_W=args.store_W, overwrite=args.overwrite,
                        keep_checkpoint=args.keep_checkpoint)
    print(f"fitted {args.spec} into {args.out} ({spec.inference.method}, N = {spec.model.N}, seed {spec.inference.seed}, "
          f"{meta['timing']['wall_s']:.1f} s); posterior vs theory ({theory_ref(4)}):")
    print(reports.posterior_table(dt, meta))
    _print_wrote([(Path(args.out), None)])
    if not args.quiet:
        print(f"next: bayes-sbm diagnose {args.out}   (plots and sampler checks)")
    return 0


@_register
def _add_evidence(sub) -> None:
    p = sub.add_parser("evidence", help="log evidence by TI, stepping stone and SVI bounds, against theory")
    p.add_argument("spec", help="model spec (.toml)")
    p.add_argument("--json", dest="json_out", help="write the estimates and their warnings as JSON (atomic)")
    p.add_argument("--rungs", type=_positive_int, default=12, help="initial TI rungs (default 12)")
    p.add_argument("--max-rungs", type=_positive_int, default=20, help="TI rungs after adaptive bisection (default 20)")
    p.add_argument("--samples", type=_positive_int, default=500, help="NUTS draws per rung (default 500)")
    p.add_argument("--svi-steps", type=_positive_int, help="SVI steps (default: the spec's)")
    p.add_argument("--no-ti", action="store_true", help="skip thermodynamic integration / stepping stone")
    p.add_argument("--no-svi", action="store_true", help="skip the SVI estimators")
    p.add_argument("--quiet", action="store_true", help="no stage headers or timings (the table and warnings are still printed)")
    p.set_defaults(func=_cmd_evidence)


def _ladder(rungs: int, max_rungs: int, samples: int) -> LadderSettings:
    return LadderSettings(num_rungs=rungs, max_rungs=max(rungs, max_rungs), num_samples=samples)


def _cmd_evidence(args) -> int:
    if args.json_out:
        _check_output_file(args.json_out, "--json")
    if args.no_ti and args.no_svi:
        raise UserError("--no-ti, --no-svi: must leave at least one estimator, got both")
    spec = _load_spec(args.spec)
    ladder = _ladder(args.rungs, args.max_rungs, args.samples)
    progress = _Progress(args.quiet)
    progress.note(f"log evidence of {args.spec} (N = {spec.model.N}, gamma = {spec.model.gamma:g}, eta = {spec.model.eta:g})")
    titles = {
        "ti": f"thermodynamic integration and stepping stone ({ladder.num_rungs} rungs, up to {ladder.max_rungs}, "
              f"{ladder.num_samples} draws each)",
        "svi": f"SVI: ELBO, importance sampling, IWAE ({args.svi_steps or spec.inference.svi_steps} steps)",
    }
    report = reports.evidence_report(spec, ladder=ladder, svi_steps=args.svi_steps, ti=not args.no_ti, svi=not args.no_svi,
                                     stage=lambda family: progress.stage(titles[family], titled=False))
    if "warnings" not in report:  # evidence_report always lists them; a stand-in report may not
        report["warnings"] = reports.evidence_warnings(report)
    progress.note(f"\n== log evidence vs theory ({theory_ref(5)}) ==")
    print(reports.format_evidence(report))
    if args.json_out:
        write_json_atomic(args.json_out, report | {"meta": run_metadata(seed=spec.inference.seed, spec=spec.to_dict())})
    progress.total()
    if args.json_out:
        _print_wrote([args.json_out])
    return 0


#: ``demo --quick``: every stage once at tiny settings (a smoke test; the numbers are far from the large-N theory).
#: Its time is almost all JAX compilation, not sampling: halving N, draws, rungs or SVI steps does not shorten it.
QUICK_DEMO = {"N": 8, "num_warmup": 100, "num_samples": 100, "svi_steps": 300, "svi_draws": 100,
              "rungs": 4, "rung_samples": 100, "predict_points": 200}
#: Evidence ladder and predictive points of the full demo.
DEMO = {"rungs": 10, "max_rungs": 14, "rung_samples": 400, "predict_points": 1000}


@_register
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on a small default problem (fit, evidence, divergences vs theory)")
    p.add_argument("--spec", default=None, help="NUTS spec (default: models/demo.toml, shipped with the package)")
    p.add_argument("--svi-spec", default=None, help="SVI spec (default: models/demo_svi.toml, shipped with the package)")
    p.add_argument("--out", default="runs/demo", help="folder for the demo runs (default runs/demo)")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny settings, a smoke test of every stage (N = {QUICK_DEMO['N']}, "
                        f"{QUICK_DEMO['num_warmup']} + {QUICK_DEMO['num_samples']} NUTS draws, {QUICK_DEMO['svi_steps']} SVI steps)")
    p.add_argument("--quiet", action="store_true", help="no timings (the stage titles, tables and warnings are still printed)")
    p.set_defaults(func=_cmd_demo)


def _default_spec_path(name: str) -> str:
    """A spec shipped with the package: the installed package data ``bayes_sbm/models/NAME`` first, else the checkout's ``models/``."""
    candidates = []
    try:
        candidates.append(Path(str(importlib.resources.files("bayes_sbm") / "models" / name)))
    except (ModuleNotFoundError, TypeError, ValueError):  # not importable as a package with files: use the checkout
        pass
    candidates.append(Path(__file__).resolve().parent.parent / "models" / name)
    for here in candidates:
        if here.is_file():
            return str(here)
    raise UserError(f"cannot find models/{name}; pass --spec")


def _cmd_demo(args) -> int:
    out = _check_output_folder(args.out, "--out")
    for name in ("nuts", "svi"):  # the demo replaces its own runs, never anything else
        check_run_folder(out / name, overwrite=True)
    spec = _load_spec(args.spec or _default_spec_path("demo.toml"), "--spec")
    svi_spec = _load_spec(args.svi_spec or _default_spec_path("demo_svi.toml"), "--svi-spec")
    q = QUICK_DEMO if args.quick else DEMO
    if args.quick:
        spec = spec.with_overrides({"model.N": q["N"], "inference.num_warmup": q["num_warmup"], "inference.num_samples": q["num_samples"]})
        svi_spec = svi_spec.with_overrides({"model.N": q["N"], "inference.svi_steps": q["svi_steps"], "inference.svi_draws": q["svi_draws"]})
    _use_host_devices(spec.inference.num_chains)
    progress = _Progress(args.quiet)
    m, inf = spec.model, spec.inference
    print(f"bayes_sbm demo{' --quick' if args.quick else ''}: K = {spec.data.K} samples of a rank-one teacher (omega = {spec.data.omega}), "
          f"N = {m.N}, gamma = {m.gamma}, eta = {m.eta}")
    progress.note(f"4 stages: NUTS fit, SVI fit, log evidence, teacher-student divergences; runs go to {out}/nuts and {out}/svi; "
                  f"every table compares with the large-N theory ({THEORY_DOC})")
    with progress.stage(f"posterior by NUTS ({inf.num_chains} chains x {inf.num_warmup} + {inf.num_samples} draws) "
                        f"vs theory ({theory_ref(4)})"):
        dt, meta = fit_spec(spec, out / "nuts", progress_bar=False, overwrite=True)
        print(reports.posterior_table(dt, meta))
    with progress.stage(f"posterior by SVI ({svi_spec.inference.svi_guide} guide, {svi_spec.inference.svi_steps} steps) "
                        f"vs theory ({theory_ref(4)})"):
        dt_svi, meta_svi = fit_spec(svi_spec, out / "svi", progress_bar=False, overwrite=True)
        print(reports.posterior_table(dt_svi, meta_svi))

    ladder = _ladder(q["rungs"], q.get("max_rungs", q["rungs"]), q["rung_samples"])
    with progress.stage(f"log evidence: TI, stepping stone ({ladder.num_rungs} rungs x {ladder.num_samples} draws), "
                        f"ELBO, importance, IWAE vs theory ({theory_ref(5)})"):
        report = reports.evidence_report(spec, ladder=ladder, svi_steps=svi_spec.inference.svi_steps)
        print(reports.format_evidence(report))

    with progress.stage(f"teacher-student divergences per N vs theory ({theory_ref(6)})"):
        if spec.data.source == "teacher" and spec.data.K == 2:
            res = reports.predict_run(out / "nuts", m.beta, jax.random.key(spec.inference.seed + 1), None, q["predict_points"])
            print(reports.format_predict(res))
        else:
            print("(theory needs K = 2 samples of a rank-one teacher)")
    progress.total()
    _print_wrote([(out / "nuts", None), (out / "svi", None)])
    if not args.quiet:
        print(f"next: bayes-sbm diagnose {out / 'nuts'}   (trace, rank, energy, ESS and R-hat plots)")
    return 0


@_register
def _add_theory(sub) -> None:
    p = sub.add_parser(
        "theory",
        help=f"large-N theory: posterior saddle and evidence (--c) or teacher-student KLs (--omega), {THEORY_DOC} sections 4-6",
    )
    p.add_argument("--c", help=f"data eigenvalues, comma separated: print the saddle ({theory_ref(4)}) and the evidence ({theory_ref(5)})")
    p.add_argument("--omega", type=_positive_float, help=f"rank-one teacher eigenvalue > 1: print the divergences of {theory_ref(6)} (K = 2)")
    p.add_argument("--gamma", type=_positive_float, required=True, help="prior precision gamma > 0")
    p.add_argument("--eta", type=_positive_float, required=True, help="posterior power eta > 0")
    p.add_argument("--beta", type=_positive_float, help="sampling inverse temperature for --omega (default 1)")
    p.set_defaults(func=_cmd_theory)


def _theory_inputs(args, *names) -> str:
    """``--c 1e300, --gamma 0.5, --eta 3``: the inputs a theory result depends on, as given."""
    parts = []
    for name in names:
        value = getattr(args, name)
        if value is not None:
            parts.append(f"--{name} {value if isinstance(value, str) else repr(value)}")
    return ", ".join(parts)


def _theory_values(args, names: tuple[str, ...], compute):
    """Run a theory computation; UserError naming the inputs when it overflows or gives a non-finite number.

    ``compute()`` returns ``(result, printed)``: ``printed`` maps a label to
    every number (or array) that will be printed; ``result`` is returned.
    """
    try:
        with np.errstate(all="ignore"):
            result, printed = compute()
    except (OverflowError, ZeroDivisionError, FloatingPointError) as exc:
        what = {OverflowError: "overflow", ZeroDivisionError: "division by zero"}.get(type(exc), "floating-point error")
        raise UserError(f"{_theory_inputs(args, *names)}: the theory cannot be evaluated in double precision ({what}); "
                        "these inputs are outside the range the formulas handle") from None
    bad = [label for label, v in printed.items() if not np.all(np.isfinite(np.asarray(v, dtype=float)))]
    if bad:
        shown = ", ".join(f"{b} = {np.asarray(printed[b]).tolist()}" for b in bad[:3])
        raise UserError(f"{_theory_inputs(args, *names)}: the theory is not finite here ({shown}); "
                        "these inputs are outside the range the formulas handle")
    return result


def _cmd_theory(args) -> int:
    if args.c is None and args.omega is None:
        raise UserError("--c, --omega: give --c (posterior saddle and evidence) and/or --omega (teacher-student divergences), got neither")
    if args.beta is not None and args.omega is None:
        raise UserError(f"--beta {args.beta!r}: needs --omega (it sets the sampler of the typical student)")
    if args.c is not None:
        try:
            c = [float(v) for v in args.c.split(",")]
        except ValueError:
            raise UserError(f"--c: must be comma-separated numbers, got {args.c!r}") from None

        def saddle_and_evidence():
            ev = theory.evidence_terms(c, args.gamma, args.eta)
            sd = ev.saddle
            printed = {k: getattr(sd, k) for k in ("c", "kappa", "mu", "M", "edge", "g", "u", "xi", "lam")}
            return ev, printed | {"log_evidence": ev.log_evidence}

        ev = _theory_values(args, ("c", "gamma", "eta"), saddle_and_evidence)
        s = ev.saddle
        print(f"posterior saddle ({theory_ref(4)}): c = ({', '.join(f'{v:g}' for v in s.c)}), "
              f"gamma = {args.gamma:g}, eta = {args.eta:g}, gamma*eta = {s.kappa:.12g}")
        print(f"phase = {s.phase}")
        for name in ("mu", "M", "edge"):
            print(f"{name} = {getattr(s, name):.12g}")
        print(f"d = {s.d}")
        print(f"o = {s.o}")
        print(f"{'k':>3s} {'c_k':>14s} {'g':>20s} {'u':>20s} {'xi':>20s} {'lam':>20s}")
        for k in range(s.c.size):
            print(f"{k + 1:3d} {s.c[k]:14.8g} {s.g[k]:20.12g} {s.u[k]:20.12g} {s.xi[k]:20.12g} {s.lam[k]:20.12g}")
        print(f"log_evidence = {ev.log_evidence:.12g}   ((1/N) log Y, {theory_ref(5)}, K = sum(c))")
    if args.omega is not None:
        beta = 1.0 if args.beta is None else args.beta

        def divergences():
            r = theory.teacher_student_kls(args.gamma, args.eta, args.omega)
            st = theory.sampling_state(args.gamma, args.eta, args.omega, beta)
            c12 = theory.teacher_data_eigenvalues(args.omega)
            printed = {"c": c12, **{k: getattr(r, k) for k in ("fwd_typ", "rev_typ", "fwd_pp", "rev_pp")}, "fwd_typ_beta": st.forward_kl}
            return (r, st, c12), printed

        r, st, (c1, c2) = _theory_values(args, ("omega", "gamma", "eta", "beta"), divergences)
        if args.c is not None:
            print()
        print(f"teacher-student divergences per N ({theory_ref(6)}): omega = {args.omega:g}, K = 2, "
              f"c = ({c1:.12g}, {c2:.12g}), gamma = {args.gamma:g}, eta = {args.eta:g}")
        print(f"phase = {r.phase}")
        for name in ("fwd_typ", "rev_typ", "fwd_pp", "rev_pp"):
            print(f"{name} = {getattr(r, name):.12g}")
        print(f"beta = {beta:g}")
        print(f"sampling_phase = {st.phase}")
        print(f"fwd_typ_beta = {st.forward_kl:.12g}")
    return 0


#: meta.json keys that must hold JSON objects when present (read as dicts by the reports).
_META_OBJECTS = ("spec", "theory", "latent_summary", "timing")


def _check_run_path(path: str, what: str = "RUN") -> Path:
    """A run folder argument that exists and is a folder (before anything is loaded)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what}: run folder not found: {path}")
    if not p.is_dir():
        raise UserError(f"{what}: {path!r} is not a folder (expected a run folder with inference.nc and meta.json)")
    return p


def _load_run_folder(path: str, what: str = "RUN"):
    """``(datatree, meta)`` of a run folder (:func:`bayes_sbm.runs.load_run`); UserError naming the file if unusable.

    The boundary where run files are read: unreadable JSON or NetCDF, and a
    ``meta.json`` whose sections have the wrong JSON type, become one line.
    """
    run = _check_run_path(path, what)
    try:
        dt, meta = load_run(run)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        raise UserError(_checks.one_line(exc)) from None
    for key in _META_OBJECTS:
        if key in meta and not isinstance(meta[key], dict):
            raise UserError(f"{run / 'meta.json'}: {key}: must be a JSON object, got {type(meta[key]).__name__} {_checks.one_line(repr(meta[key]))[:60]}")
    return dt, meta


@_register
def _add_diagnose(sub) -> None:
    p = sub.add_parser("diagnose", help=f"posterior summary vs theory ({theory_ref(4)}), sampler diagnostics and plots of a run")
    p.add_argument("run", metavar="RUN", help="run folder (inference.nc and meta.json)")
    p.add_argument("--out", help="output folder for summary.csv and the PNGs (default RUN/diagnostics)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or timings (the tables and warnings are still printed)")
    p.set_defaults(func=_cmd_diagnose)


def _cmd_diagnose(args) -> int:
    run = _check_run_path(args.run)
    out = _run_output_folder(args.out, run, "diagnostics")
    dt, meta = _load_run_folder(args.run)
    progress = _Progress(args.quiet)
    with progress.stage(f"summary and sampler diagnostics of {args.run}", titled=False):
        reference = diagnostics.theory_from_datatree(dt, meta)
        table = diagnostics.summary_table(dt, theory=reference or {})
        report = diagnostics.sampling_report(dt, meta=meta, table=table)
    with progress.stage(f"plots into {out}", titled=False):
        csv_path = diagnostics.write_summary_csv(table, out / "summary.csv")
        elbo = np.load(run / "elbo.npy", allow_pickle=False) if (run / "elbo.npy").is_file() else None
        pngs = plots.diagnostic_plots(dt, out, theory=reference or {}, table=table, elbo=elbo)
    if not args.quiet:
        print()
    try:
        c, gamma, eta = diagnostics.run_parameters(dt, meta)
        params = f"gamma = {gamma:g}, eta = {eta:g}, c = ({', '.join(f'{v:.6g}' for v in c)})"
    except ValueError:
        params = "gamma, eta, c unknown"
    phase = f"theory phase {reference['phase']} ({theory_ref(4)})" if reference else "no theory values"
    print(f"run {args.run}: {report['method']}, {params}; {phase}")
    print()
    print(diagnostics.format_table(table))
    print(f"(lam_top[k] is the k-th largest eigenvalue lambda_k, u[k] and signal[k] belong to data mode k; "
          f"theory = large-N value, diff = mean - theory; every label: {THEORY_DOC}#glossary)")
    print()
    print(diagnostics.format_report(report))
    print()
    _print_wrote([(Path(csv_path).parent, [Path(csv_path).name, *(Path(p).name for p in pngs)])])
    return 0


@_register
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help=f"compare lambda_1, u_1 and M across runs, with theory values ({theory_ref(4)})")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (inference.nc and meta.json)")
    p.add_argument("--out", help="output folder for comparison.csv, forest.png, density.png (default: 'compare' next to the first run)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or timings (the table is still printed)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    seen: dict[Path, str] = {}
    for run in args.runs:
        resolved = _check_run_path(run).resolve()
        if resolved in seen:
            raise UserError(f"RUN: the same run folder is given twice: {seen[resolved]!r} and {run!r}")
        seen[resolved] = run
    out = Path(args.out) if args.out else Path(args.runs[0]).resolve().parent / "compare"
    _check_output_folder(out, "--out")
    progress = _Progress(args.quiet)
    loaded = [(run, *_load_run_folder(run)) for run in args.runs]
    names = [Path(run).resolve().name or str(run) for run in args.runs]
    if len(set(names)) < len(names):  # same folder names: label by the paths as given
        names = [str(run) for run in args.runs]
    dts = {name: dt for name, (_, dt, _) in zip(names, loaded)}
    metas = {name: meta for name, (_, _, meta) in zip(names, loaded)}
    theories = {name: diagnostics.theory_from_datatree(dts[name], metas[name]) for name in names}
    table = diagnostics.comparison_table(dts, metas, theories)
    with progress.stage(f"comparison of {len(names)} runs into {out}", titled=False):
        csv_path = diagnostics.write_summary_csv(table, out / "comparison.csv")
        pngs = plots.compare_plots(dts, out, theories={k: v for k, v in theories.items() if v is not None})
    if not args.quiet:
        print()

    def cell(row, key):
        mean, sd, th = row[f"{key}_mean"], row[f"{key}_sd"], row[f"{key}_theory"]
        text = f"{mean:.4f} ± {sd:.4f}" if math.isfinite(mean) else "-"
        return text + (f" [{th:.4f}]" if math.isfinite(th) else " [-]")

    w = max(len("run"), *(len(n) for n in names))
    print(f"{'run':<{w}s} {'N':>6s} {'gamma':>8s} {'eta':>8s} {'method':>6s} {'phase':>5s}  "
          f"{'lambda_1: mean ± sd [theory]':>30s}  {'u_1: mean ± sd [theory]':>30s}  {'M: mean ± sd [theory]':>30s}")
    for row in table.rows:
        n = f"{row['N']:.0f}" if math.isfinite(row["N"]) else "-"
        print(f"{row['run']:<{w}s} {n:>6s} {row['gamma']:8.4g} {row['eta']:8.4g} {row['method']:>6s} {row['phase']:>5s}  "
              f"{cell(row, 'lam_1'):>30s}  {cell(row, 'u_1'):>30s}  {cell(row, 'M'):>30s}")
    print()
    _print_wrote([(Path(csv_path).parent, [Path(csv_path).name, *(Path(p).name for p in pngs)])])
    return 0


@_register
def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help=f"typical and predictive KLs of a run to its teacher, vs theory ({theory_ref(6)}); "
                                       "held-out log-likelihood over beta (--heldout)")
    p.add_argument("run", metavar="RUN", help="run folder (inference.nc, data.npy, meta.json)")
    p.add_argument("--beta", type=_positive_list, default=[1.0],
                   help="sampling inverse temperature (default 1); with --heldout a comma-separated grid, e.g. 0.5,1,1.5")
    p.add_argument("--heldout", metavar="FILE",
                   help="held-out rows (.npy/.csv/.txt, the data file's coordinates; the run's transform is applied): "
                        "per-point log E_W[p(x|beta W)] and the plug-in log p(x|beta W-bar) instead of the teacher KLs")
    p.add_argument("--max-draws", type=_positive_int, default=None, help="thin the posterior draws evenly to at most this many")
    p.add_argument("--out", help="with --heldout: output folder for heldout.png (default RUN/heldout)")
    p.add_argument("--num-points", type=_num_points, default=2000, help="Monte Carlo points per predictive KL, >= 2 (default 2000)")
    p.add_argument("--seed", type=_seed, default=0, help="PRNG seed of the Monte Carlo (default 0)")
    p.add_argument("--teacher", help="teacher couplings W* (.npy); default: RUN/teacher.npy, else regenerated from the spec's data seed")
    p.add_argument("--json", metavar="OUT", help="also write the full result as JSON (atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or timings (the table and warnings are still printed)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    if args.heldout is not None:
        return _cmd_predict_heldout(args)
    if args.out is not None:
        raise UserError("--out: only used with --heldout (the folder of heldout.png)")
    if len(args.beta) != 1:
        raise UserError(f"--beta: the teacher KLs take one beta, got {len(args.beta)} ({','.join(f'{b:g}' for b in args.beta)}); a grid needs --heldout")
    args.beta = args.beta[0]
    if args.json:
        _check_output_file(args.json, "--json")
    _check_run_path(args.run)
    teacher_W = _load_matrix(args.teacher, "--teacher") if args.teacher else None
    progress = _Progress(args.quiet)
    with progress.stage(f"typical KLs over the draws of {args.run}, predictive KLs with {args.num_points} Monte Carlo points", titled=False):
        r = reports.predict_run(args.run, args.beta, jax.random.key(args.seed), teacher_W, args.num_points,
                                teacher_name=f"--teacher {args.teacher}", max_draws=args.max_draws)
    if not args.quiet:
        print()
    print(f"run {args.run}: N = {r['N']}, K = {r['K']}, gamma = {r['gamma']:g}, eta = {r['eta']:g}, beta = {r['beta']:g}, "
          f"{r['num_draws']} draws ({r['num_chains']} chains), teacher {r['teacher']}")
    print()
    print(f"per N, vs theory ({theory_ref(6)}):")
    print(reports.format_predict(r))
    print()
    if r["predictive"] is None:
        print(f"note: {r['predictive_note']}")
    else:
        pf, pr = r["predictive"]["forward"], r["predictive"]["reverse"]
        print(f"Jensen bias of log-mean-exp (delta method, per N): forward {pf['bias_per_n']:+.2e}, reverse {pr['bias_per_n']:+.2e} "
              f"(corrected: {pf['corrected_per_n']:.6f}, {pr['corrected_per_n']:.6f}); "
              f"median weight ESS {pf['weight_ess']:.1f} / {pr['weight_ess']:.1f}")
    for w in r.get("warnings", []):
        print(f"warning: {w}")
    if r["theory_note"]:
        print(f"note: {r['theory_note']}")
    if args.json:
        write_json_atomic(args.json, r)
        _print_wrote([args.json])
    return 0


def _cmd_predict_heldout(args) -> int:
    """``predict RUN --heldout FILE``: held-out log posterior-predictive density over the --beta grid, table + JSON + heldout.png."""
    if args.teacher:
        raise UserError("--teacher: not used with --heldout (held-out data need no teacher)")
    if args.json:
        _check_output_file(args.json, "--json")
    run = _check_run_path(args.run)
    out = _run_output_folder(args.out, run, "heldout")
    heldout = read_data(args.heldout)
    betas = sorted(set(args.beta))
    progress = _Progress(args.quiet)
    with progress.stage(f"held-out log density of {args.heldout} ({heldout.shape[0]} rows) over the draws of {args.run}, "
                        f"beta = {','.join(f'{b:g}' for b in betas)}", titled=False):
        report = reports.heldout_report(args.run, heldout, betas, jax.random.key(args.seed), args.max_draws,
                                        heldout_name=f"--heldout {args.heldout}")
    r = report.as_dict()
    if not args.quiet:
        print()
    t = r["transform"]
    print(f"run {args.run}: N = {r['N']}, {r['num_points']} held-out points, {r['num_draws']} draws "
          f"(effective {r['effective_draws']:.0f}); transform: center = {str(t['center']).lower()}, project = {str(t['project']).lower()}")
    print()
    print("mean held-out log density per point (nats; uniform on the sphere = 0); * = best beta:")
    print(reports.format_heldout(r))
    for w in r["warnings"]:
        print(f"warning: {w}")
    out.mkdir(parents=True, exist_ok=True)
    png = plots.heldout_plot(r, out / "heldout.png")
    wrote = [png]
    if args.json:
        write_json_atomic(args.json, r)
        wrote.append(Path(args.json))
    print()
    _print_wrote(wrote)
    return 0


#: ``generate --image-shape``: generated.png shows at most this many samples (generated.npy holds them all).
MAX_GRID_IMAGES = 100


def _image_shape(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``8x8``): the shape of one image, two integers >= 1."""
    parts = text.lower().split("x")
    try:
        h, w = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH with two integers >= 1, e.g. 8x8, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH with two integers >= 1, e.g. 8x8, got {text!r}")
    return h, w


@_register
def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help=f"draw new samples from a run's posterior predictive at beta ({theory_ref(3)}), "
                                        "mapped back to the data's coordinates; an image grid with --image-shape")
    p.add_argument("run", metavar="RUN", help="run folder (inference.nc, data.npy, meta.json; transform.npz when the spec centres or projects)")
    p.add_argument("--num", type=_positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="sampling inverse temperature (default 1), e.g. the best beta of predict --heldout")
    p.add_argument("--image-shape", type=_image_shape, metavar="HxW",
                   help=f"the data rows are images of this shape (e.g. 8x8): also write generated.png, a grid of the samples "
                        f"(the first {MAX_GRID_IMAGES})")
    p.add_argument("--max-draws", type=_positive_int, default=None, help="thin the posterior draws evenly to at most this many")
    p.add_argument("--seed", type=_seed, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", help="output folder for generated.npy (and generated.png) (default RUN/generated)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or timings (the summary is still printed)")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    run = _check_run_path(args.run)
    out = _run_output_folder(args.out, run, "generated")
    _load_run_folder(args.run)  # unreadable run files: one line before any computing
    data_path = run / "data.npy"
    if args.image_shape is not None and data_path.is_file():
        N = int(load_npy(data_path, str(data_path)).shape[-1])
        h, w = args.image_shape
        if h * w != N:
            raise UserError(f"--image-shape: {h}x{w} has {h * w} pixels, the run {args.run} has N = {N} columns")
    progress = _Progress(args.quiet)
    with progress.stage(f"{args.num} samples from the posterior predictive of {args.run} at beta = {args.beta:g}", titled=False):
        g = reports.generate_samples(run, jax.random.key(args.seed), args.num, args.beta, max_draws=args.max_draws)
    if not args.quiet:
        print()
    t = g.transform
    back = (f"mapped back to the data's coordinates (centre {'added' if t['center'] else 'none'}; "
            + (f"each row scaled to the training rows' mean norm {t['mean_norm']:.4g})" if t["project"] else "no rescaling)"))
    print(f"run {args.run}: N = {g.N}, {args.num} samples at beta = {g.beta:g} from {g.num_draws} posterior draws (seed {args.seed}); {back}")
    lo, hi = float(np.min(g.data)), float(np.max(g.data))
    print(f"values of the samples: min {lo:.4g}, max {hi:.4g}")
    out.mkdir(parents=True, exist_ok=True)
    wrote = [save_npy_atomic(out / "generated.npy", g.data)]
    if args.image_shape is not None:
        h, w = args.image_shape
        shown = min(args.num, MAX_GRID_IMAGES)
        wrote.append(plots.image_grid(g.data[:shown], out / "generated.png", (h, w),
                                      title=f"{shown} samples of {Path(args.run).name}, beta = {g.beta:g}"))
    print()
    _print_wrote(wrote)
    return 0


@_register
def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of spec overrides (fit, evidence or predict) on Dask into one results table")
    p.add_argument("sweep_file", metavar="SWEEP", help="sweep file (.toml): base spec, [grid], task, out (see the README's Sweeps section)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler, e.g. tcp://host:8786 (default: a LocalCluster of single-threaded worker processes)")
    p.add_argument("--workers", type=_positive_int,
                   help="LocalCluster workers (default: one per core); with --scheduler: wait until this many workers are connected")
    p.add_argument("--out", help="results folder (default: the sweep file's out)")
    p.add_argument("--dry-run", action="store_true", help="list the points and which are finished; run nothing, write nothing")
    p.add_argument("--quiet", action="store_true", help="no line per finished point (failed points and the summary are still printed)")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    if args.out:
        _check_output_folder(args.out, "--out")
    sw = sweep.load_sweep(args.sweep_file, out=args.out)
    _check_output_folder(sw.out, "--out" if args.out else f"{args.sweep_file}: out")
    statuses = sweep.plan(sw)
    counts = {state: sum(s.state == state for s in statuses) for state in ("done", "new", "retry", "changed")}
    where = f"scheduler {args.scheduler}" if args.scheduler else f"a LocalCluster of {args.workers or os.cpu_count() or 1} workers"
    todo = len(statuses) - counts["done"]
    print(f"sweep {sw.name}: task {sw.task.kind}, {len(statuses)} points over {', '.join(f'{k} ({len(v)})' for k, v in sw.grid.items())}; "
          f"{counts['done']} finished, {todo} to run" + (f" on {where}" if todo and not args.dry_run else "") + f"; out {sw.out}")
    if args.dry_run:
        for s in statuses:
            print(f"  {s.state:8s} {s.point.name}")
        return 0

    def on_result(row, done, total):
        if not args.quiet or row.get("status") != "ok":
            print(sweep.format_progress(row, done, total), flush=True)

    result = sweep.run_sweep(sw, scheduler=args.scheduler, workers=args.workers, on_result=on_result,
                             log=lambda text: None if args.quiet else print(text, flush=True))
    failed = result.errors
    print(f"{len(result.rows) - len(failed)} of {len(result.rows)} points ok ({result.ran} run now, "
          f"{len(result.rows) - result.ran} finished before)" + (f"; {len(failed)} failed:" if failed else ""))
    for row in failed:
        print(f"  {row['point']}: {row.get('status')}: {row.get('error')}")
    _print_wrote([(sw.out, [sweep.SWEEP_FILE, sweep.RESULTS_CSV, sweep.RESULTS_NC])])
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# progress and orientation
# ---------------------------------------------------------------------------
class _Progress:
    """Stage headers with timings on stdout; ``quiet`` keeps results and warnings only.

    :meth:`stage` prints ``== title ==`` before the work and ``(12.3 s)``
    after it. A stage that heads a result (``titled=True``) keeps its header
    under ``--quiet`` (the title labels the table below it); its timing and
    every untitled stage are progress and disappear.
    """

    def __init__(self, quiet: bool = False):
        self.quiet = bool(quiet)
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, title: str, *, titled: bool = True):
        if titled or not self.quiet:
            print(f"\n== {title} ==", flush=True)
        t0 = time.perf_counter()
        yield
        if not self.quiet:
            print(f"({time.perf_counter() - t0:.1f} s)", flush=True)

    def note(self, text: str) -> None:
        """A progress line (dropped under ``--quiet``)."""
        if not self.quiet:
            print(text, flush=True)

    def total(self) -> None:
        if not self.quiet:
            print(f"\ntotal {time.perf_counter() - self.start:.1f} s", flush=True)


def _folder_entry(path: Path, names=None) -> str:
    """``runs/fmo/ (data.npy, inference.nc, …)``: a folder and the files in it (``names``, else all of them)."""
    if names is None:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()) if path.is_dir() else []
    return f"{path}/ ({', '.join(names)})" if names else f"{path}/"


def _print_wrote(entries) -> None:
    """The closing list of every file or folder a command wrote.

    ``entries`` holds paths (files) and ``(folder, names)`` pairs (``names``
    None: everything in the folder). One file prints ``wrote FILE``; more
    print ``wrote:`` and one indented line each.
    """
    lines = [_folder_entry(Path(e[0]), e[1]) if isinstance(e, tuple) else str(e) for e in entries]
    if len(lines) == 1 and not isinstance(entries[0], tuple):
        print(f"wrote {lines[0]}")
    elif lines:
        print("wrote:")
        for line in lines:
            print(f"  {line}")


def _error_line(command: str | None, exc) -> str:
    text = exc if isinstance(exc, str) else _checks.one_line(exc)
    return text if command is None else f"bayes-sbm {command}: error: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 success, 2 a user error printed as one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, OSError) as exc:  # ValueError includes json.JSONDecodeError and specs.SpecError
        print(_error_line(args.command, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_error_line(args.command, "interrupted"), file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
