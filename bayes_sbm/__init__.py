"""bayes_sbm: Bayesian inference in spherical Boltzmann machines.

Conventions follow ``THEORY.md`` (shared with the project): configurations on
the sphere ``|x|^2 = N``, densities with respect to the uniform probability
measure on that sphere, ``Z(0) = 1``.

Importing the package switches JAX to float64 (``jax_enable_x64``): partition
functions lose up to 6e-4 in ``log Z`` in float32 (THEORY.md §2).
"""

from __future__ import annotations

import importlib

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

_SUBMODULES = (
    "sphere",
    "distribution",
    "teacher",
    "theory",
    "model",
    "inference",
    "evidence",
    "predictive",
    "diagnostics",
    "plots",
    "specs",
    "io",
    "cli",
)

__all__ = ["SphericalBoltzmann", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name == "SphericalBoltzmann":
        from .distribution import SphericalBoltzmann

        return SphericalBoltzmann
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'bayes_sbm' has no attribute {name!r}")
