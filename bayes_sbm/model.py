"""The tempered posterior over couplings W as a NumPyro model (THEORY.md §3–4).

    P_η(W | D) ∝ P_{γη}(W) · Π_a p(x_a | W)^η ,

a GOE prior of precision γη (density ∝ exp(−γηN/4 · tr W²): off-diagonal
variance 1/(γηN), diagonal 2/(γηN)) and the SBM likelihood raised to η with
``numpyro.handlers.scale``.  (``numpyro.infer.util.log_likelihood`` ignores
the scale, so it returns the *untempered* per-point log-likelihood that LOO
and thermodynamic integration need.)

Parametrisations (all exactly the same posterior):

``"aligned"`` (default)
    Non-centred *and* rotated to the data frame: ``W = Q W' Qᵀ`` with Q an
    orthogonal matrix whose first r columns are the data eigenvectors
    ``e_1 … e_r`` (THEORY.md §3) and ``W' = scale ⊙ sym(z)``, ``z ~ N(0, I)``.
    The GOE is rotation invariant, so the prior of W' is the same GOE; the
    likelihood is evaluated in the frame (``x' = Qᵀx``, ``log Z(W') = log
    Z(W)``), so the data term ``η N/2 · tr(CW) = η N/2 Σ_k c_k W'_kk`` touches
    r coordinates only and the signal block ``W'_{kl}, k,l ≤ r`` and the rows
    ``W'_{k·}`` are axis-aligned: a diagonal mass matrix can give the data
    subspace its own scales while the GOE bulk stays ≈ N(0, 1).
``"noncentred"``
    ``W = scale ⊙ sym(z)``, ``z ~ N(0, I)``, in the original frame.
``"centred"``
    The upper-triangle entries of W are the sample sites, with GOE scales.

Sites: the latent vector (``"z"`` or ``"W_upper"``, length N(N+1)/2), the
deterministic coupling matrix ``"W"`` (N, N) (optional, it is large), the
observed ``"x"`` (in the aligned frame for ``"aligned"``) and the spectral
observables of THEORY.md §4 as deterministic sites:

==================  =========  ===============================================
site                shape      meaning
==================  =========  ===============================================
``lam_top``         (r + 1,)   top eigenvalues λ_1 ≥ λ_2 ≥ … of W
``u``               (r,)       overlaps ``(v_1(W)·e_k)²`` with data directions
``M``               ()         condensate ``(2/N) ∂log Z/∂λ_1``
``signal``          (r,)       signal blocks ``e_kᵀ W e_k``
``mu``              ()         finite-N Lagrange multiplier μ(W)
``log_z_per_n``     ()         ``(1/N) log Z(W)``
==================  =========  ===============================================
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

from . import _checks, sphere
from .data import DataFrame, data_frame, validate_data
from .distribution import SphericalBoltzmann

__all__ = [
    "PARAMETRIZATIONS",
    "SPECTRAL_SITES",
    "validate_hyperparameters",
    "goe_scales",
    "symmetric_from_upper",
    "upper_from_symmetric",
    "latent_site",
    "sbm_posterior",
]

PARAMETRIZATIONS = ("aligned", "noncentred", "centred")
SPECTRAL_SITES = ("lam_top", "u", "M", "signal", "mu", "log_z_per_n")


def validate_hyperparameters(gamma, eta, beta=1.0) -> None:
    """``ValueError`` naming γ, η or β when not finite and > 0 (concrete values only)."""
    for name, value in (("gamma", gamma), ("eta", eta), ("beta", beta)):
        _checks.positive_scalar(name, value)


def goe_scales(N: int, precision: float):
    """Standard deviations of the upper-triangle entries (row-major, diagonal included)
    under the GOE of the given precision: ``√(2/(pN))`` on the diagonal, ``√(1/(pN))`` off it.

    Returns ndarray, shape (N(N+1)/2,).
    """
    rows, cols = np.triu_indices(N)
    base = 1.0 / math.sqrt(precision * N)
    return np.where(rows == cols, math.sqrt(2.0) * base, base)


def symmetric_from_upper(values, N: int):
    """Symmetric (…, N, N) matrix from its upper triangle (…, N(N+1)/2), row-major."""
    rows, cols = np.triu_indices(N)
    values = jnp.asarray(values)
    out = jnp.zeros(values.shape[:-1] + (N, N), dtype=values.dtype)
    out = out.at[..., rows, cols].set(values)
    return out.at[..., cols, rows].set(values)


def upper_from_symmetric(W):
    """Upper triangle (…, N(N+1)/2) of symmetric matrices (…, N, N)."""
    N = W.shape[-1]
    rows, cols = np.triu_indices(N)
    return jnp.asarray(W)[..., rows, cols]


def latent_site(parametrization: str) -> str:
    """Name of the latent vector site: ``"W_upper"`` (centred) or ``"z"``."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization: expected one of {PARAMETRIZATIONS}, got {parametrization!r}")
    return "W_upper" if parametrization == "centred" else "z"


def _spectral_observables(W_frame, c_frame_basis, num_top: int):
    """Deterministic spectral sites of THEORY.md §4 from one draw.

    ``c_frame_basis`` (N, r) are the data eigenvectors expressed in the frame
    in which ``W_frame`` is given.
    """
    N = W_frame.shape[-1]
    lam, vecs = jnp.linalg.eigh(W_frame)
    top = vecs[:, -1]
    log_z, grad = sphere.log_partition_and_gradient(lam)
    numpyro.deterministic("lam_top", lam[::-1][:num_top])
    numpyro.deterministic("u", (c_frame_basis.T @ top) ** 2)
    numpyro.deterministic("M", 2.0 * grad[-1] / N)
    numpyro.deterministic("signal", jnp.einsum("ik,ij,jk->k", c_frame_basis, W_frame, c_frame_basis))
    numpyro.deterministic("mu", sphere.saddle_point(lam).mu)
    numpyro.deterministic("log_z_per_n", log_z / N)


def sbm_posterior(
    data,
    gamma: float,
    eta: float,
    beta: float = 1.0,
    *,
    parametrization: str = "aligned",
    store_W: bool = True,
    frame: DataFrame | None = None,
    gradient: str = "spectral",
):
    """NumPyro model of the tempered SBM posterior (THEORY.md §3).

    Parameters
    ----------
    data : array_like, shape (K, N)
        Points on the sphere ``|x|² = N``; validated (shape, finiteness, norm)
        before anything is traced.
    gamma : float
        GOE prior strength γ > 0.
    eta : float
        Tempering η > 0 (1 = Bayes); the prior precision is γη and the
        likelihood is raised to η.
    beta : float
        Sampling inverse temperature of the posterior predictive (recorded for
        ``bayes_sbm.predictive``); the likelihood of the data is at β = 1.
    parametrization : {"aligned", "noncentred", "centred"}
        See the module docstring.
    store_W : bool
        Record the (N, N) deterministic site ``"W"``.
    frame : DataFrame, optional
        Precomputed :func:`data_frame` (saves an SVD per trace).
    gradient : {"spectral", "eigh"}
        Derivative rule of log Z (see :class:`SphericalBoltzmann`); "eigh"
        exists for benchmarks.
    """
    traced = any(isinstance(v, jax.core.Tracer) for v in (data, gamma, eta, beta))
    if not traced:  # concrete inputs are validated; traced ones (jit_model_args) were validated by the caller
        validate_hyperparameters(gamma, eta, beta)
    site = latent_site(parametrization)
    if frame is None:
        frame = data_frame(data)
    if parametrization == "aligned":
        X = frame.aligned
    else:
        X = data if traced else validate_data(data)
    K, N = X.shape
    r = frame.c.shape[0]
    scales = jnp.asarray(goe_scales(N, 1.0)) / jnp.sqrt(gamma * eta)
    dim = N * (N + 1) // 2

    if parametrization == "centred":
        upper = numpyro.sample(site, dist.Normal(jnp.zeros(dim), scales).to_event(1))
    else:
        z = numpyro.sample(site, dist.Normal(jnp.zeros(dim), 1.0).to_event(1))
        upper = z * scales
    W_model = symmetric_from_upper(upper, N)

    if parametrization == "aligned":
        Q = jnp.asarray(frame.Q)
        if store_W:
            numpyro.deterministic("W", Q @ W_model @ Q.T)
        basis = jnp.eye(N)[:, :r]
    else:
        if store_W:
            numpyro.deterministic("W", W_model)
        basis = jnp.asarray(frame.Q[:, :r])

    with handlers.scale(scale=eta):
        with numpyro.plate("data", K):
            numpyro.sample("x", SphericalBoltzmann(W_model, gradient=gradient), obs=jnp.asarray(X))

    _spectral_observables(W_model, basis, min(r + 1, N))
