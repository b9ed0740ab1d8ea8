"""bayes_sbm: Bayesian inference in spherical Boltzmann machines.

Conventions follow ``THEORY.md`` (shared with the project): configurations on
the sphere ``|x|^2 = N``, densities with respect to the uniform probability
measure on that sphere, ``Z(0) = 1``.

Layers
------
Modules form one import order; a module imports only modules listed before it
(``tests/test_layers.py`` enforces it, function-local imports included):

1. foundations — ``_checks`` (argument checks), ``_stats`` (ESS/MCSE),
   ``io`` (atomic files, metadata), ``settings`` (algorithm settings, PRNG
   keys), ``specs`` (TOML model specs), ``theory`` (large-N formulas);
2. core numerics and model — ``sphere`` (exact log Z, sampler) → ``band``
   (band representation, THEORY.md §8) → ``distribution`` (NumPyro
   distribution) → ``data`` (data on the sphere) → ``teacher`` (planted
   teachers) → ``model`` (the NumPyro posterior);
3. algorithms — ``predictive`` (posterior predictive, KLs) → ``inference``
   (NUTS, SVI) → ``evidence`` (TI, stepping stone, SVI bounds, prior MC);
4. analysis of results — ``diagnostics`` → ``plots``;
5. workflow — ``runs`` (run folders, DataTrees) → ``reports`` (tables and
   reports on specs and runs) → ``sweep`` (grids of runs on Dask);
6. interface — ``cli``.

Importing the package switches JAX to float64 (``jax_enable_x64``): partition
functions lose up to 6e-4 in ``log Z`` in float32 (THEORY.md §2).
"""

from __future__ import annotations

import importlib

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

#: The layer order (see the module docstring); ``tests/test_layers.py`` reads it from here.
LAYERS = (
    "_checks",
    "_stats",
    "io",
    "settings",
    "specs",
    "theory",
    "sphere",
    "band",
    "distribution",
    "data",
    "teacher",
    "model",
    "predictive",
    "inference",
    "evidence",
    "diagnostics",
    "plots",
    "runs",
    "reports",
    "sweep",
    "cli",
)
_SUBMODULES = tuple(name for name in LAYERS if not name.startswith("_"))

__all__ = ["LAYERS", "SphericalBoltzmann", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name == "SphericalBoltzmann":
        from .distribution import SphericalBoltzmann

        return SphericalBoltzmann
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'bayes_sbm' has no attribute {name!r}")
