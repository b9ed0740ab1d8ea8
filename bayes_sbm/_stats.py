"""Effective sample size, Monte Carlo standard error and log-mean-exp (one home each).

Built on arviz-stats (rank-normalised split ESS of Vehtari et al. 2021).
A quantity that cannot be estimated honestly comes back as NaN, never as a
plausible-looking number: constant draws (a stuck chain, or a deterministic
quantity) have no defined ESS, and fewer than :data:`MIN_DRAWS` draws are too
few for the rank-normalised estimators.  Callers flag NaN where they print.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import arviz as az
import numpy as np

__all__ = ["MIN_DRAWS", "MeanMcse", "ess", "mean_mcse", "log_mean_exp"]

#: Fewest draws (all chains together) for an ESS estimate (ArviZ's split-chain estimators need ≥ 4 per half chain).
MIN_DRAWS = 8


class MeanMcse(NamedTuple):
    """Posterior mean of a scalar with its Monte Carlo standard error.

    Attributes
    ----------
    mean : float
    mcse : float
        ``sd / √ESS``; NaN when the ESS is undefined.
    ess : float
        Bulk ESS of the mean; NaN for constant draws or fewer than :data:`MIN_DRAWS`.
    sd : float
    """

    mean: float
    mcse: float
    ess: float
    sd: float


def _as_chain_draw(draws) -> np.ndarray:
    arr = np.asarray(draws, dtype=np.float64)
    if arr.ndim == 1:
        return arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"draws: expected shape (draw,) or (chain, draw), got {arr.shape}")
    return arr


def ess(draws, method: str = "bulk") -> float:
    """ESS of scalar draws shaped (draw,) or (chain, draw) by arviz-stats' ``method``.

    Returns NaN for constant draws, non-finite draws or fewer than :data:`MIN_DRAWS` draws.
    """
    arr = _as_chain_draw(draws)
    if arr.size < MIN_DRAWS or not np.all(np.isfinite(arr)) or np.ptp(arr) == 0.0:
        return math.nan
    kwargs = {"prob": (0.05, 0.95)} if method == "tail" else {}
    value = float(np.asarray(az.ess(arr, method=method, **kwargs)))
    return value if math.isfinite(value) and value > 0 else math.nan


def mean_mcse(draws) -> MeanMcse:
    """Mean, MCSE (``sd/√ESS_mean``), ESS and sd of scalar draws (draw,) or (chain, draw)."""
    arr = _as_chain_draw(draws)
    e = ess(arr, method="mean")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return MeanMcse(float(arr.mean()), sd / math.sqrt(e) if math.isfinite(e) else math.nan, e, sd)


def log_mean_exp(log_w) -> tuple[float, float]:
    """``(log mean exp(log_w), ESS of the weights)`` in log space; ESS = (Σw)²/Σw²."""
    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    top = float(np.max(lw))
    w = np.exp(lw - top)
    return top + math.log(float(np.mean(w))), float(np.sum(w) ** 2 / np.sum(w**2))
