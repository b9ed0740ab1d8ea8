"""The spherical Boltzmann machine as a NumPyro distribution (THEORY.md §1–2).

``SphericalBoltzmann(W, beta)`` is the density

    p(x | W, β) = exp(β/2 · xᵀWx) / Z(βW)

with respect to the **uniform probability measure** on the sphere
``S_N = {x : x·x = N}`` (a Bingham distribution on a sphere of radius √N).
Its log-normaliser is exact (:func:`bayes_sbm.sphere.log_partition_matrix`)
and differentiable in W with one ``eigh`` per gradient; ``sample`` is an
exact rejection sampler (no MCMC).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from multipledispatch import dispatch
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.util import lazy_property, validate_sample

from . import sphere
from ._checks import finite_array, is_traced

__all__ = [
    "SphericalBoltzmann",
    "sphere_of_radius_sqrt_n",
    "symmetric_matrix",
    "SPHERE_RTOL",
    "SYMMETRY_ATOL",
    "kl_divergence",
]

#: Relative tolerance on |x|²/N − 1 for "on the sphere" (float64 rounding of a normalised vector is ~1e-15; 1e-6 admits data saved in float32).
SPHERE_RTOL = 1e-6
#: Absolute tolerance on W − Wᵀ, relative to max|W| (a few ulps of accumulated rounding).
SYMMETRY_ATOL = 1e-10


class _SphereRadiusSqrtN(constraints.Constraint):
    """Vectors with ``x·x = N`` where N is the size of the last axis."""

    event_dim = 1

    def __call__(self, x):
        n = jnp.shape(x)[-1]
        return jnp.abs(jnp.sum(x * x, axis=-1) / n - 1.0) < SPHERE_RTOL

    def feasible_like(self, prototype):
        return jnp.ones_like(prototype)

    def tree_flatten(self):
        return (), ((), dict())


class _SymmetricMatrix(constraints.Constraint):
    """Finite real symmetric matrices (last two axes)."""

    event_dim = 2

    def __call__(self, x):
        scale = jnp.maximum(jnp.max(jnp.abs(x), axis=(-2, -1)), 1.0)
        asym = jnp.max(jnp.abs(x - jnp.swapaxes(x, -1, -2)), axis=(-2, -1))
        return jnp.all(jnp.isfinite(x), axis=(-2, -1)) & (asym <= SYMMETRY_ATOL * scale)

    def feasible_like(self, prototype):
        return jnp.zeros_like(prototype)

    def tree_flatten(self):
        return (), ((), dict())


sphere_of_radius_sqrt_n = _SphereRadiusSqrtN()
symmetric_matrix = _SymmetricMatrix()


def _validate_parameters(W, beta) -> None:
    """Clear errors for concrete (non-traced) bad parameters."""
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"W: expected a square matrix of shape (..., N, N), got shape {tuple(W.shape)}")
    n = W.shape[-1]
    if n < sphere.MIN_DIMENSION:
        raise ValueError(f"W: N = {n} is too small; need N >= {sphere.MIN_DIMENSION}")
    if not is_traced(W):
        w = finite_array("W", W)
        asym = np.max(np.abs(w - np.swapaxes(w, -1, -2)))
        scale = max(1.0, float(np.max(np.abs(w))))
        if asym > SYMMETRY_ATOL * scale:
            raise ValueError(f"W: not symmetric, max |W - W.T| = {asym:.3g}")
    if not is_traced(beta):
        b = np.asarray(beta)
        if not np.all(np.isfinite(b)) or np.any(b <= 0):
            raise ValueError(f"beta: must be finite and > 0, got {b if b.ndim else float(b)}")


class SphericalBoltzmann(Distribution):
    r"""Spherical Boltzmann machine ``p(x | W, β) ∝ exp(β/2 xᵀWx)`` on ``x·x = N``.

    Density with respect to the uniform probability measure on the sphere of
    radius √N (THEORY.md §1), so ``log_prob(x) = β/2 xᵀWx − log Z(βW)`` and
    ``Z(0) = 1``.

    Parameters
    ----------
    W : array_like, shape (..., N, N)
        Symmetric couplings; leading axes batch.
    beta : array_like, shape (...), default 1
        Sampling inverse temperature, > 0.
    gradient : {"spectral", "eigh"}, default "spectral"
        How ``log_prob`` is differentiated in W: ``"spectral"`` uses the
        custom rule ``∇ log Z = V diag(g) Vᵀ`` (one ``eigh``, finite at repeated
        eigenvalues, second derivatives by Daleckii–Krein); ``"eigh"`` lets JAX
        differentiate through ``eigvalsh`` (for benchmarks and cross-checks; its
        derivatives are NaN at repeated eigenvalues).

    Notes
    -----
    * ``log_prob`` is exact and differentiable to second order in W (custom
      spectral derivatives, THEORY.md §2), finite at repeated eigenvalues.
    * ``sample`` is exact: rejection in the eigenbasis
      (:func:`bayes_sbm.sphere.sample_eigen`, default ``method="auto"``: angular
      central Gaussian, or the condensed-mode split when a mode is condensed;
      acceptance ≈ 0.85–0.98).  It is not reparametrised.
    * ``entropy`` is relative to the uniform measure: ``−D(p ‖ U) ≤ 0``.
    """

    arg_constraints = {"W": symmetric_matrix, "beta": constraints.positive}
    support = sphere_of_radius_sqrt_n
    reparametrized_params = []
    pytree_data_fields = ("W", "beta")

    def __init__(self, W: ArrayLike, beta: ArrayLike = 1.0, *, gradient: str = "spectral", validate_args=None):
        if gradient not in ("spectral", "eigh"):
            raise ValueError(f"gradient: expected 'spectral' or 'eigh', got {gradient!r}")
        self.gradient = gradient
        W = jnp.asarray(W, dtype=jnp.float64)
        beta = jnp.asarray(beta, dtype=jnp.float64)
        _validate_parameters(W, beta)
        batch_shape = jax.lax.broadcast_shapes(W.shape[:-2], jnp.shape(beta))
        n = W.shape[-1]
        self.W = jnp.broadcast_to(W, batch_shape + (n, n))
        self.beta = jnp.broadcast_to(beta, batch_shape)
        super().__init__(batch_shape=batch_shape, event_shape=(n,), validate_args=validate_args)

    # -- spectral quantities ------------------------------------------------
    @property
    def dimension(self) -> int:
        """N, the dimension of the ambient space."""
        return self.event_shape[0]

    @lazy_property
    def scaled_couplings(self):
        """βW, shape batch + (N, N)."""
        return self.beta[..., None, None] * self.W

    @lazy_property
    def _eigh(self):
        return jnp.linalg.eigh(self.scaled_couplings)

    @property
    def eigenvalues(self):
        """Eigenvalues of βW in ascending order, shape batch + (N,)."""
        return self._eigh[0]

    @property
    def eigenvectors(self):
        """Orthonormal eigenvectors of βW (columns), shape batch + (N, N)."""
        return self._eigh[1]

    @lazy_property
    def log_normalizer(self):
        """Exact ``log Z(βW)``, shape batch; differentiable in W and β."""
        if self.gradient == "eigh":
            return sphere.log_partition(jnp.linalg.eigvalsh(self.scaled_couplings))
        return sphere.log_partition_matrix(self.scaled_couplings)

    @lazy_property
    def mode_second_moments(self):
        """``E[y_i²] = 2 ∂log Z/∂λ_i`` for the eigen-coordinates of βW (ascending order), shape batch + (N,)."""
        return sphere.second_moment_eigen(self.eigenvalues)

    @property
    def condensate(self):
        """Fraction of ``|x|²/N`` on the top eigenvector, ``E[y_1²]/N``, shape batch."""
        return self.mode_second_moments[..., -1] / self.dimension

    @property
    def lagrange_multiplier(self):
        """Finite-N saddle ``μ`` of the spherical constraint (THEORY.md §2), shape batch."""
        return sphere.saddle_point(self.eigenvalues).mu

    # -- Distribution interface ----------------------------------------------
    def sample(self, key, sample_shape=()):
        """Exact draws, shape ``sample_shape + batch_shape + (N,)``.

        Called on concrete parameters (not under ``jit``), rows the sampler could not fill raise
        ``RuntimeError`` (:func:`bayes_sbm.sphere.check_draws`), as in ``sample_eigen``.
        """
        sample_shape = tuple(sample_shape)
        n = self.dimension
        count = math.prod(sample_shape)
        lam = self.eigenvalues.reshape((-1, n))
        vecs = self.eigenvectors.reshape((-1, n, n))
        keys = jax.random.split(key, lam.shape[0])

        def one(k, l, v):
            y = sphere.sample_eigen(k, l, count)
            return y @ v.T

        x = jax.vmap(one)(keys, lam, vecs)  # (B, count, N)
        x = jnp.moveaxis(x, 0, 1).reshape(sample_shape + self.batch_shape + (n,))
        return sphere.check_draws(x, "SphericalBoltzmann.sample")

    @validate_sample
    def log_prob(self, value):
        """``β/2 xᵀWx − log Z(βW)`` (w.r.t. the uniform measure), shape broadcast(sample, batch)."""
        value = jnp.asarray(value)
        quad = jnp.einsum("...i,...ij,...j->...", value, self.W, value)
        return 0.5 * self.beta * quad - self.log_normalizer

    @property
    def mean(self):
        return jnp.zeros(self.batch_shape + self.event_shape)

    @lazy_property
    def second_moment(self):
        """``E[x xᵀ] = V diag(2 ∂log Z/∂λ) Vᵀ``, shape batch + (N, N) (THEORY.md §1)."""
        return jnp.einsum("...ij,...j,...kj->...ik", self.eigenvectors, self.mode_second_moments, self.eigenvectors)

    @property
    def variance(self):
        return jnp.diagonal(self.second_moment, axis1=-2, axis2=-1)

    def mean_energy(self):
        """``E[β/2 xᵀWx] = ½ Σ λ_i E[y_i²]`` (λ of βW), shape batch."""
        return 0.5 * jnp.sum(self.eigenvalues * self.mode_second_moments, axis=-1)

    def entropy(self):
        """Entropy relative to the uniform measure, ``−D(p ‖ U) = log Z − E[β/2 xᵀWx] ≤ 0``, shape batch."""
        return self.log_normalizer - self.mean_energy()

    def expected_log_prob_under(self, other: "SphericalBoltzmann"):
        """``E_self[log other(x)]`` from second moments, exact; shape broadcast batch."""
        cross = jnp.sum(other.scaled_couplings * self.second_moment, axis=(-2, -1))
        return 0.5 * cross - other.log_normalizer


@dispatch(SphericalBoltzmann, SphericalBoltzmann)
def kl_divergence(p: SphericalBoltzmann, q: SphericalBoltzmann):  # noqa: F811 (extends NumPyro's dispatcher)
    """Exact ``D(p ‖ q) = E_p[log p − log q]`` from log Z and ``E_p[xxᵀ]``."""
    if p.event_shape != q.event_shape:
        raise ValueError(f"q: dimension {q.event_shape[0]} differs from p's {p.event_shape[0]}")
    return p.expected_log_prob_under(p) - p.expected_log_prob_under(q)
