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
