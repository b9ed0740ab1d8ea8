"""Posterior predictive of the SBM (THEORY.md §3, §6).

``P_pp(x) = E_{W~P_η}[p(x | βW)]``: exact draws are one exact SBM sample per
posterior draw of W, at sampling inverse temperature β.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import sphere

__all__ = ["sample_posterior_predictive"]


def sample_posterior_predictive(key, W_draws, beta: float, num_points: int, *, batch: int | None = None):
    """Exact draws ``x ~ p(x | βW_s)`` for each posterior draw W_s.

    Parameters
    ----------
    key : PRNGKey
    W_draws : array_like, shape (S, N, N)
        Posterior draws of the couplings.
    beta : float
        Sampling inverse temperature, > 0.
    num_points : int
        Points per draw.
    batch : int, optional
        Proposals per rejection round (static); default ``max(64, 16·num_points)``.

    Returns
    -------
    Array, shape (S, num_points, N)
    """
    beta = float(beta)
    if not beta > 0:
        raise ValueError(f"beta: must be > 0, got {beta}")
    W_draws = jnp.asarray(W_draws, dtype=jnp.float64)
    if W_draws.ndim != 3 or W_draws.shape[-1] != W_draws.shape[-2]:
        raise ValueError(f"W_draws: expected shape (S, N, N), got {tuple(W_draws.shape)}")
    num_points = int(num_points)
    batch = int(batch or max(64, 16 * num_points))
    keys = jax.random.split(key, W_draws.shape[0])

    @jax.jit
    def run(keys, W_draws):
        def one(args):
            k, W = args
            lam, vecs = jnp.linalg.eigh(beta * W)
            y = sphere.sample_eigen(k, lam, num_points, batch=batch)
            return y @ vecs.T

        return jax.lax.map(one, (keys, W_draws))

    return run(keys, W_draws)
