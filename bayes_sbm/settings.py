"""Settings of every algorithm and the derivation of every PRNG key.

One frozen dataclass per algorithm — :class:`NutsSettings`,
:class:`SviSettings`, :class:`LadderSettings` (thermodynamic integration) —
is the single home of its defaults: the spec schema (``[inference]`` keys),
the Python API, the CLI, the studies and the benchmarks all build these
objects, and every NUTS and SVI field is reachable from a spec.  Each
validates itself on construction (one-line ``ValueError`` naming the field);
the spec schema checks the same ranges with file and key in its messages,
reading the bounds (:data:`MAX_CHAINS`, :data:`MAX_TREE_DEPTH`) from here.

:func:`derive_keys` is the one place where a run's seed becomes PRNG keys, so
an in-memory fit, ``bayes-sbm fit`` and every study draw the same numbers
from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax

from . import _checks

__all__ = [
    "MAX_CHAINS",
    "MAX_TREE_DEPTH",
    "CHAIN_METHODS",
    "GUIDES",
    "NutsSettings",
    "SviSettings",
    "LadderSettings",
    "RunKeys",
    "derive_keys",
]

#: Most chains one fit may ask for (each holds its own copy of the sampler state; more eats memory for no gain).
MAX_CHAINS = 64
#: Deepest NUTS tree: up to 2^30 leapfrog steps per draw already; deeper is a typo (NumPyro's default is 10).
MAX_TREE_DEPTH = 30
#: NumPyro chain methods (``"auto"`` = parallel when the host exposes one device per chain, else sequential).
CHAIN_METHODS = ("auto", "parallel", "sequential", "vectorized")
#: SVI guides: NumPyro's ``AutoNormal``, ``AutoLowRankMultivariateNormal`` and the symmetry-structured guide.
GUIDES = ("normal", "lowrank", "structured")


def _target_accept(value) -> float:
    """NUTS' target acceptance probability: in the open interval (0, 1)."""
    if not 0.0 < _checks.positive_scalar("target_accept", value) < 1.0:
        raise ValueError(f"target_accept: must be in (0, 1), got {value!r}")
    return value


@dataclass(frozen=True)
class NutsSettings:
    """NUTS settings (NumPyro names in parentheses).

    Attributes
    ----------
    num_warmup, num_samples, num_chains : int
    target_accept : float
        (``target_accept_prob``), in (0, 1).
    dense_mass : bool
        Dense instead of diagonal mass matrix.
    max_tree_depth : int
    chain_method : {"auto", "parallel", "sequential", "vectorized"}
        ``"auto"`` = parallel when the host exposes enough devices, else sequential.
    progress_bar : bool
    checkpoint_every : int
        Draws per saved segment when a checkpoint folder is given (0 = one segment).
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 2
    target_accept: float = 0.8
    dense_mass: bool = False
    max_tree_depth: int = 10
    chain_method: str = "auto"
    progress_bar: bool = True
    checkpoint_every: int = 0

    def __post_init__(self):
        _checks.non_negative_int("num_warmup", self.num_warmup)
        _checks.positive_int("num_samples", self.num_samples)
        _checks.positive_int("num_chains", self.num_chains, maximum=MAX_CHAINS)
        _target_accept(self.target_accept)
        _checks.positive_int("max_tree_depth", self.max_tree_depth, maximum=MAX_TREE_DEPTH)
        _checks.one_of("chain_method", self.chain_method, CHAIN_METHODS)
        _checks.non_negative_int("checkpoint_every", self.checkpoint_every)


@dataclass(frozen=True)
class SviSettings:
    """SVI settings.

    Attributes
    ----------
    guide : {"normal", "lowrank", "structured"}
    num_steps : int
    learning_rate : float
        Initial Adam step size.
    final_lr_fraction : float
        The step size decays exponentially to ``learning_rate · final_lr_fraction``
        at the last step (reduces the ELBO noise at the optimum).
    num_particles : int
        ELBO particles per step.
    num_draws : int
        Posterior draws from the fitted guide.
    rank : int or None
        Rank of ``AutoLowRankMultivariateNormal`` (default ⌈√dim⌉).
    progress_bar : bool
    """

    guide: str = "structured"
    num_steps: int = 3000
    learning_rate: float = 0.01
    final_lr_fraction: float = 0.1
    num_particles: int = 1
    num_draws: int = 1000
    rank: int | None = None
    progress_bar: bool = True

    def __post_init__(self):
        _checks.one_of("guide", self.guide, GUIDES)
        _checks.positive_int("num_steps", self.num_steps)
        _checks.positive_scalar("learning_rate", self.learning_rate)
        if not 0.0 < _checks.positive_scalar("final_lr_fraction", self.final_lr_fraction) <= 1.0:
            raise ValueError(f"final_lr_fraction: must be in (0, 1], got {self.final_lr_fraction!r}")
        _checks.positive_int("num_particles", self.num_particles)
        _checks.positive_int("num_draws", self.num_draws)
        if self.rank is not None:
            _checks.positive_int("rank", self.rank)


@dataclass(frozen=True)
class LadderSettings:
    """Thermodynamic-integration ladder (THEORY.md §3 path ``t ∈ [0, η]``).

    Attributes
    ----------
    num_rungs : int
        Initial rungs ``t_k = η (k/n)^power``, k = 0…n (t_0 = 0: exact prior draws).
    power : float
        Ladder exponent (rungs crowd near t = 0 where ``Var_t(ℓ)`` is largest).
    max_rungs : int
        Cap on the total after adaptive bisection.
    quadrature_tol : float
        Bisect the worst interval while its |correction| exceeds this (absolute log Y).
    num_warmup, num_samples, num_chains : int
        NUTS per rung (the first rung gets ``first_warmup``).
    first_warmup : int
    prior_draws : int
        Exact GOE draws at t = 0.
    target_accept : float
    progress_bar : bool
    """

    num_rungs: int = 12
    power: float = 4.0
    max_rungs: int = 20
    quadrature_tol: float = 0.02
    num_warmup: int = 200
    first_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 1
    prior_draws: int = 4000
    target_accept: float = 0.8
    progress_bar: bool = False

    def __post_init__(self):
        _checks.positive_int("num_rungs", self.num_rungs)
        _checks.positive_scalar("power", self.power)
        _checks.positive_int("max_rungs", self.max_rungs)
        _checks.positive_scalar("quadrature_tol", self.quadrature_tol)
        _checks.non_negative_int("num_warmup", self.num_warmup)
        _checks.non_negative_int("first_warmup", self.first_warmup)
        _checks.positive_int("num_samples", self.num_samples)
        _checks.positive_int("num_chains", self.num_chains, maximum=MAX_CHAINS)
        _checks.positive_int("prior_draws", self.prior_draws, minimum=2)
        _target_accept(self.target_accept)


class RunKeys(NamedTuple):
    """The PRNG keys of one run, all derived from its seed by :func:`derive_keys`.

    Attributes
    ----------
    fit : PRNGKey
        NUTS or SVI fit (``split(key(seed))[0]``).
    predictive : PRNGKey
        Posterior-predictive draws stored with the fit (``split(key(seed))[1]``).
    ti, svi, importance : PRNGKey
        Evidence: TI ladder, SVI fit, importance draws (``split(key(seed), 3)``).
    """

    fit: jax.Array
    predictive: jax.Array
    ti: jax.Array
    svi: jax.Array
    importance: jax.Array


def derive_keys(seed: int) -> RunKeys:
    """All PRNG keys of a run from its integer seed (the only key derivation in the package)."""
    root = jax.random.key(_checks.seed("seed", seed))
    fit, predictive = jax.random.split(root)
    ti, svi, importance = jax.random.split(root, 3)
    return RunKeys(fit, predictive, ti, svi, importance)
