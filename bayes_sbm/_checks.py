"""Argument checks with one message format: ``name: must be …, got …``.

Every public function of the package validates its scalar and array inputs
here, so a bad value always produces the same one-line ``ValueError`` naming
the argument and the value (the CLI prints it and exits with status 2).
Checks run only on concrete values: a traced value (inside ``jit``/``grad``)
passes through unchanged, its caller having validated the concrete input.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import jax
import numpy as np

__all__ = [
    "is_traced",
    "positive_scalar",
    "positive_int",
    "non_negative_int",
    "one_of",
    "finite_array",
    "MAX_SEED",
    "seed",
    "one_line",
]

#: Largest PRNG seed accepted anywhere (specs, CLI and API share it; 32 bits fit every JAX key implementation).
MAX_SEED = 2**32 - 1


def is_traced(value) -> bool:
    """True for a JAX tracer (its value is not known while tracing)."""
    return isinstance(value, jax.core.Tracer)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def positive_scalar(name: str, value, *, allow_zero: bool = False) -> float:
    """``float(value)`` if finite and > 0 (≥ 0 with ``allow_zero``), else ``ValueError``.

    Traced values are returned unchanged.
    """
    if is_traced(value):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a {'non-negative' if allow_zero else 'positive'} number, got {_shown(value)}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: must be finite and {'>= 0' if allow_zero else '> 0'}, got {_shown(value)}")
    return v


def positive_int(name: str, value, *, maximum: int | None = None, minimum: int = 1) -> int:
    """``int(value)`` if an integer in ``[minimum, maximum]``, else ``ValueError``.

    Booleans and floats are refused, also integral ones (``2.0``), as in the spec schema.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {_shown(value)}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name}: must be an integer <= {maximum}, got {v}")
    return v


def non_negative_int(name: str, value, *, maximum: int | None = None) -> int:
    """``int(value)`` if an integer ≥ 0 (≤ maximum), else ``ValueError``."""
    return positive_int(name, value, maximum=maximum, minimum=0)


def seed(name: str, value) -> int:
    """A PRNG seed: an integer in ``[0, MAX_SEED]``."""
    return non_negative_int(name, value, maximum=MAX_SEED)


def one_of(name: str, value, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(repr(c) for c in choices)}, got {_shown(value)}")
    return value


def finite_array(name: str, value, *, ndim: int | None = None, dtype=np.float64) -> np.ndarray:
    """``np.asarray(value, dtype)`` if numeric, non-empty and finite (with ``ndim`` dims), else ``ValueError``.

    The first non-finite entry is named by its index.
    """
    if np.iscomplexobj(value) and not np.issubdtype(np.dtype(dtype), np.complexfloating):
        raise ValueError(f"{name}: must be a real array, got complex values")
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a numeric array, got {_shown(value)}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: must have {ndim} dimension{'s' if ndim != 1 else ''}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: must not be empty, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: must be finite, got {arr[idx]} at index {idx}")
    return arr


def one_line(exc_or_text) -> str:
    """An error message on one line: whitespace (newlines included) collapsed; the type name if empty.

    An ``OSError`` reads ``"FILE: reason"`` (no ``[Errno N]`` prefix).
    """
    if isinstance(exc_or_text, OSError) and exc_or_text.strerror:
        text = exc_or_text.strerror
        if exc_or_text.filename is not None:
            text = f"{exc_or_text.filename}: {text}"
    else:
        text = str(exc_or_text)
    if isinstance(exc_or_text, KeyError) and exc_or_text.args:  # str(KeyError) is the quoted key
        text = f"missing {exc_or_text.args[0]!r}"
    flat = " ".join(text.split())
    return flat or type(exc_or_text).__name__
