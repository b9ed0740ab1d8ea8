"""Command-line interface: ``bayes-sbm SUBCOMMAND ...``.

Each subcommand lives in its own ``_cmd_*`` function registered in
:func:`build_parser`. Errors a user can cause (bad arguments, bad files) are
raised as :class:`UserError` or ``ValueError`` and printed as one line, with
exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser", "UserError"]


class UserError(Exception):
    """An error caused by the user's input, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-sbm",
        description="Bayesian inference in spherical Boltzmann machines (SBMs).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in _REGISTRY:
        register(sub)
    return parser


_REGISTRY: list = []


def _register(fn):
    _REGISTRY.append(fn)
    return fn


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


@_register
def _add_teacher(sub) -> None:
    p = sub.add_parser("teacher", help="draw teacher-student data from a planted SBM (THEORY.md §3)")
    p.add_argument("--N", type=_positive_int, required=True, help="dimension")
    p.add_argument("--K", type=_positive_int, required=True, help="number of samples")
    p.add_argument("--omega", type=_float_list, default=[2.5], help="spike strength(s), comma separated (default 2.5)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="sampling inverse temperature (default 1)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", required=True, help="output data file (.npy or .csv), written atomically")
    p.add_argument("--teacher-out", help="also save W* (.npy)")
    p.set_defaults(func=_cmd_teacher)


def _cmd_teacher(args) -> int:
    import jax
    import numpy as np

    from . import teacher
    from .io import save_npy_atomic, write_json_atomic, run_metadata

    td = teacher.teacher_student_data(jax.random.key(args.seed), args.N, args.K, args.omega, args.beta)
    out = teacher.save_data(args.out, td.data)
    if args.teacher_out:
        save_npy_atomic(args.teacher_out, td.teacher.W)
    meta = run_metadata(seed=args.seed, N=args.N, K=args.K, omega=args.omega, beta=args.beta)
    write_json_atomic(str(out) + ".json", meta)
    spec = teacher.data_spectrum(td.data)
    print(f"wrote {out}: K = {args.K} points on the sphere |x|^2 = N = {args.N} (seed {args.seed})")
    print("data-correlation eigenvalues c_k: " + ", ".join(f"{c:.6f}" for c in spec.c))
    if len(args.omega) == 1 and args.K == 2 and args.omega[0] > 1:
        w = args.omega[0]
        print(f"large-N prediction (THEORY.md §3): c = ({2 - 1 / w:.6f}, {1 / w:.6f})")
    return 0


@_register
def _add_logz(sub) -> None:
    p = sub.add_parser("logz", help="exact and saddle-point log Z of a coupling matrix W (.npy)")
    p.add_argument("W", help="symmetric N x N matrix saved with numpy (.npy)")
    p.add_argument("--beta", type=_positive_float, default=1.0, help="inverse temperature (default 1)")
    p.set_defaults(func=_cmd_logz)


def partition_summary(W, beta: float = 1.0) -> dict:
    """Exact and saddle log Z, μ, condensate and sampler acceptance for βW."""
    import numpy as np

    from . import sphere
    from .distribution import SphericalBoltzmann

    dist = SphericalBoltzmann(W, beta)
    lam = dist.eigenvalues
    n = dist.dimension
    exact = float(sphere.log_partition(lam))
    saddle = float(sphere.log_partition_saddle(lam))
    corrected = float(sphere.log_partition_saddle(lam, gaussian_correction=True))
    return {
        "N": n,
        "beta": beta,
        "log_z": exact,
        "log_z_per_n": exact / n,
        "log_z_saddle": saddle,
        "log_z_saddle_gaussian": corrected,
        "mu": float(dist.lagrange_multiplier),
        "condensate": float(dist.condensate),
        "top_eigenvalue": float(np.max(lam)),
        "sampler_acceptance": float(sphere.sampler_acceptance(lam)),
    }


def _cmd_logz(args) -> int:
    import numpy as np

    path = args.W
    try:
        W = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a .npy array ({exc})") from None
    s = partition_summary(W, args.beta)
    print(f"N = {s['N']}, beta = {s['beta']}")
    print(f"exact log Z          = {s['log_z']:.12g}   ({s['log_z_per_n']:.10f} per N)")
    print(f"saddle log Z         = {s['log_z_saddle']:.12g}   (error {s['log_z_saddle'] - s['log_z']:+.3e})")
    print(f"saddle + Gaussian    = {s['log_z_saddle_gaussian']:.12g}   (error {s['log_z_saddle_gaussian'] - s['log_z']:+.3e})")
    print(f"Lagrange multiplier mu = {s['mu']:.10g} (top eigenvalue of beta W {s['top_eigenvalue']:.10g})")
    print(f"condensate E[y_1^2]/N = {s['condensate']:.8f}")
    print(f"exact sampler acceptance = {s['sampler_acceptance']:.4f}")
    return 0


@_register
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on a small default problem")
    p.add_argument("--N", type=_positive_int, default=200)
    p.add_argument("--K", type=_positive_int, default=2)
    p.add_argument("--omega", type=_positive_float, default=2.5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    import math

    import jax
    import numpy as np

    from . import teacher

    td = teacher.teacher_student_data(jax.random.key(args.seed), args.N, args.K, args.omega)
    w = args.omega
    s = partition_summary(td.teacher.W)
    spec = teacher.data_spectrum(td.data)
    print(f"bayes_sbm demo: rank-one teacher omega = {w}, N = {args.N}, K = {args.K}, seed = {args.seed}")
    print()
    print(f"{'quantity':34s} {'finite N':>14s} {'theory (N->inf)':>16s} {'difference':>12s}")
    rows = [
        ("(1/N) log Z(W*) exact", s["log_z_per_n"], 0.5 * (w - 1 - math.log(w)) if w > 1 else 0.0),
        ("(1/N) log Z(W*) saddle", s["log_z_saddle"] / args.N, 0.5 * (w - 1 - math.log(w)) if w > 1 else 0.0),
        ("condensate M of the teacher", s["condensate"], max(0.0, 1 - 1 / w)),
        ("Lagrange multiplier mu", s["mu"], max(w, 1 + 0.0)),
    ]
    if args.K == 2 and w > 1:
        rows += [("data eigenvalue c_1", spec.c[0], 2 - 1 / w), ("data eigenvalue c_2", spec.c[1], 1 / w)]
    for name, fin, th in rows:
        print(f"{name:34s} {fin:14.6f} {th:16.6f} {fin - th:+12.2e}")
    print()
    print(f"exact sampler acceptance at the teacher: {s['sampler_acceptance']:.4f}")
    return 0



@_register
def _add_theory(sub) -> None:
    p = sub.add_parser(
        "theory",
        help="large-N theory: posterior saddle and evidence (--c) or teacher-student KLs (--omega), THEORY.md §4-6",
    )
    p.add_argument("--c", help="data eigenvalues, comma separated: print the §4 saddle and the §5 evidence")
    p.add_argument("--omega", type=float, help="rank-one teacher eigenvalue > 1: print the §6 divergences (K = 2)")
    p.add_argument("--gamma", type=float, required=True, help="prior precision gamma > 0")
    p.add_argument("--eta", type=float, required=True, help="posterior power eta > 0")
    p.add_argument("--beta", type=float, help="sampling inverse temperature for --omega (default 1)")
    p.set_defaults(func=_cmd_theory)


def _cmd_theory(args) -> int:
    from . import theory

    if args.c is None and args.omega is None:
        raise ValueError("give --c (posterior saddle and evidence) and/or --omega (teacher-student divergences)")
    if args.beta is not None and args.omega is None:
        raise ValueError(f"--beta {args.beta} needs --omega (it sets the sampler of the typical student)")
    if args.c is not None:
        try:
            c = [float(v) for v in args.c.split(",")]
        except ValueError:
            raise ValueError(f"--c must be comma-separated numbers, got {args.c!r}") from None
        ev = theory.evidence_terms(c, args.gamma, args.eta)
        s = ev.saddle
        print(f"posterior saddle (THEORY.md §4): c = ({', '.join(f'{v:g}' for v in s.c)}), "
              f"gamma = {args.gamma:g}, eta = {args.eta:g}, gamma*eta = {s.kappa:.12g}")
        print(f"phase = {s.phase}")
        for name in ("mu", "M", "edge"):
            print(f"{name} = {getattr(s, name):.12g}")
        print(f"d = {s.d}")
        print(f"o = {s.o}")
        print(f"{'k':>3s} {'c_k':>14s} {'g':>20s} {'u':>20s} {'xi':>20s} {'lam':>20s}")
        for k in range(s.c.size):
            print(f"{k + 1:3d} {s.c[k]:14.8g} {s.g[k]:20.12g} {s.u[k]:20.12g} {s.xi[k]:20.12g} {s.lam[k]:20.12g}")
        print(f"log_evidence = {ev.log_evidence:.12g}   ((1/N) log Y, THEORY.md §5, K = sum(c))")
    if args.omega is not None:
        beta = 1.0 if args.beta is None else args.beta
        r = theory.teacher_student_kls(args.gamma, args.eta, args.omega)
        st = theory.sampling_state(args.gamma, args.eta, args.omega, beta)
        c1, c2 = theory.teacher_data_eigenvalues(args.omega)
        if args.c is not None:
            print()
        print(f"teacher-student divergences per N (THEORY.md §6): omega = {args.omega:g}, K = 2, "
              f"c = ({c1:.12g}, {c2:.12g}), gamma = {args.gamma:g}, eta = {args.eta:g}")
        print(f"phase = {r.phase}")
        for name in ("fwd_typ", "rev_typ", "fwd_pp", "rev_pp"):
            print(f"{name} = {getattr(r, name):.12g}")
        print(f"beta = {beta:g}")
        print(f"sampling_phase = {st.phase}")
        print(f"fwd_typ_beta = {st.forward_kl:.12g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"bayes-sbm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
