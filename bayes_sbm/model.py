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
``"band"`` (THEORY.md §8)
    The band matrix T of bandwidth r with ``W' = diag(I_r, H) T diag(I_r, H)ᵀ``
    (H Haar): ``z`` holds the Gaussian band entries in prior-sd units and the
    χ sites ξ; the likelihood sees the kept block ``T[:r, :r]`` and ``log Z(T)``
    only, and the model has no deterministic sites (the spectral ones come from
    ``inference.spectral_draws`` on the host).

Sites: the latent vector (``"z"`` or ``"W_upper"``, length :func:`latent_dim`), the
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

from . import _checks, band, sphere
from .data import DataFrame, data_frame, validate_data
from .distribution import SphericalBoltzmann

__all__ = [
    "PARAMETRIZATIONS",
    "DENSE_PARAMETRIZATIONS",
    "SPECTRAL_SITES",
    "validate_hyperparameters",
    "goe_scales",
    "symmetric_from_upper",
    "upper_from_symmetric",
    "latent_site",
    "latent_dim",
    "choose_parametrization",
    "band_width",
    "band_from_latent_vector",
    "BandLikelihood",
    "sbm_posterior",
]

#: Parametrisations whose latent vector is the N(N+1)/2 upper triangle of W (or of W' in the data frame).
DENSE_PARAMETRIZATIONS = ("aligned", "noncentred", "centred")
PARAMETRIZATIONS = DENSE_PARAMETRIZATIONS + ("band",)
#: Resolved by :func:`choose_parametrization` (band for few data modes against N, else aligned).
AUTO = "auto"
#: ``auto`` picks the band model when N ≥ BAND_MIN_RATIO · (r + 1) and N ≥ BAND_MIN_N: the band latent has
#: (r + 1)N entries against N(N + 1)/2 and log Z costs O(N r² × nodes) against one O(N³) eigh.
BAND_MIN_RATIO = 4
#: Below this N the dense aligned model is as fast per effective draw (measured: N = 20, K = 2, FMo: band 77 s vs
#: aligned 53 s for the same NUTS run on a loaded 2-core machine; benchmarks/bench_nuts.py has the crossover rows).
BAND_MIN_N = 50
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
    _checks.one_of("parametrization", parametrization, PARAMETRIZATIONS)
    return "W_upper" if parametrization == "centred" else "z"


def latent_dim(parametrization: str, N: int, r: int) -> int:
    """Length of the latent vector: N(N+1)/2 (dense parametrisations) or ``band.latent_size`` summed (band)."""
    _checks.one_of("parametrization", parametrization, PARAMETRIZATIONS)
    if parametrization == "band":
        return sum(band.latent_size(N, band_width(r, N)))
    return N * (N + 1) // 2


def choose_parametrization(parametrization: str, N: int, r: int) -> str:
    """Resolve ``"auto"``: ``"band"`` when ``N ≥ max(BAND_MIN_N, BAND_MIN_RATIO·(r + 1))`` (few data modes), else ``"aligned"``."""
    _checks.one_of("parametrization", parametrization, PARAMETRIZATIONS + (AUTO,))
    if parametrization != AUTO:
        return parametrization
    return "band" if N >= max(BAND_MIN_N, BAND_MIN_RATIO * (r + 1)) else "aligned"


def band_width(r: int, N: int) -> int:
    """Bandwidth m = r of the band model: the kept axes are the r data modes (THEORY.md §8).

    ``ValueError`` (naming the parametrisation) unless 1 ≤ r < N: with r = N
    data modes nothing is left to reduce and the band model does not apply.
    """
    r, N = int(r), int(N)
    if not 1 <= r < N:
        raise ValueError(f"parametrization: 'band' needs 1 <= r < N data modes (r = {r}, N = {N}); use 'aligned'")
    return r


def band_from_latent_vector(latent, N: int, m: int, precision):
    """The band T (``band.Band``) of latent vectors (..., n_gauss + n_chi) of the band model.

    The latent vector is the Gaussian band entries in prior-sd units followed
    by the χ sites ξ (``band.band_from_latent``).
    """
    n_gauss, _ = band.latent_size(N, m)
    latent = jnp.asarray(latent)
    return band.band_from_latent(latent[..., :n_gauss], latent[..., n_gauss:], N, m, precision)


class BandLikelihood(dist.Distribution):
    """SBM likelihood of points in the kept axes of the band model (THEORY.md §8).

    ``log p(x | T) = ½ x_{1:m}ᵀ A_0 x_{1:m} − log Z(T)`` for points whose
    aligned coordinates vanish beyond the first m axes (the data, whose span
    is the kept subspace).  Observation only: no sampler.

    Parameters
    ----------
    block : Array, shape (m, m)
        ``A_0``.
    log_z : Array, shape ()
        ``log Z(T)``.
    """

    arg_constraints = {}
    support = dist.constraints.real_vector

    def __init__(self, block, log_z, validate_args=None):
        self.block = block
        self.log_z = log_z
        super().__init__(batch_shape=(), event_shape=(block.shape[-1],), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("BandLikelihood is an observation site; draw x with bayes_sbm.predictive")

    def log_prob(self, value):
        quad = jnp.einsum("...i,ij,...j->...", value, self.block, value)
        return 0.5 * quad - self.log_z


def _band_model(frame: DataFrame, gamma, eta, site: str):
    """The band parametrisation (THEORY.md §8): latent ``z`` = (Gaussian entries, χ sites ξ)."""
    K, N = np.shape(frame.aligned)
    m = band_width(frame.c.shape[0], N)
    n_gauss, n_chi = band.latent_size(N, m)
    z = numpyro.sample(site, dist.Normal(jnp.zeros(n_gauss + n_chi), 1.0).to_event(1))
    T = band_from_latent_vector(z, N, m, gamma * eta)
    # ξ of the χ entries: N(0, 1) times this factor is exactly the χ_ν law (normalised; ν from band's own helper)
    numpyro.factor("chi_law", jnp.sum(band.chi_log_density_correction(z[n_gauss:], band.chi_dof(N, m))))
    log_z = band.log_partition(T)
    A0 = band.Band(T.lower[..., :m]).to_dense()  # the kept block T[:m, :m] (the first m columns of the storage)
    X = jnp.asarray(frame.aligned[:, :m])
    with handlers.scale(scale=eta):
        with numpyro.plate("data", K):
            numpyro.sample("x", BandLikelihood(A0, log_z), obs=X)


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
    parametrization : {"aligned", "noncentred", "centred", "band"}
        See the module docstring and THEORY.md §8 (band); resolve ``"auto"``
        with :func:`choose_parametrization` first.
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
    if parametrization == "band":
        _band_model(frame, gamma, eta, site)
        return
    if parametrization == "aligned":
        X = frame.aligned
    else:
        X = data if traced else validate_data(data)
    K, N = X.shape
    r = frame.c.shape[0]
    scales = jnp.asarray(goe_scales(N, 1.0)) / jnp.sqrt(gamma * eta)
    dim = latent_dim(parametrization, N, r)

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
