"""Posterior predictive and teacher–student divergences (THEORY.md §1, §3, §6).

The posterior predictive at sampling inverse temperature β is the mixture

    P_pp(x) = E_{W~P_η}[ p(x | βW) ]                         (THEORY.md §3)

over posterior draws W_1 … W_S.  This module provides

* exact draws from P_pp (:func:`sample_posterior_predictive`: one SBM draw
  per posterior draw and point; :func:`sample_predictive`: one point per
  randomly chosen posterior draw, i.e. i.i.d. draws of the mixture);
* the **typical** divergences to a teacher P* = p(· | W*) (THEORY.md §6),
  ``D(P* ‖ p(·|βW_s))`` and ``D(p(·|βW_s) ‖ P*)`` for every draw, exact from
  log Z and second moments (no sampling): :func:`typical_kls` (dense draws,
  one ``eigh`` each) and :func:`typical_kls_band` (band draws of THEORY.md §8,
  no N×N matrix: O(N m²) per draw, Rao–Blackwellised over the Haar block);
* ``log P_pp(x)`` by log-mean-exp over the draws
  (:func:`predictive_log_density`) with its Jensen bias
  (:func:`predictive_log_density_with_bias`, :func:`log_mean_exp_bias`);
* the **predictive** divergences ``D(P* ‖ P_pp)`` and ``D(P_pp ‖ P*)`` by
  Monte Carlo over x (:func:`predictive_kls_mc`).

The evidence-ratio identity at β = 1 and its brute-force prior Monte Carlo
live in :mod:`bayes_sbm.evidence`; the run-folder application (``bayes-sbm
predict RUN``) in :mod:`bayes_sbm.reports`.  This module imports only the
core numerics (:mod:`bayes_sbm.sphere`, :mod:`bayes_sbm.band`).

Bias of the log-mean-exp estimator (see :data:`BIAS_NOTE`)
-----------------------------------------------------------
``log P̂_pp(x) = log (1/S) Σ_s p(x | βW_s)`` is a consistent but biased
estimate of ``log P_pp(x)``: by Jensen's inequality ``E[log P̂] ≤ log P``,
and by the delta method (second-order expansion of log around P)

    E[log P̂_pp(x)] − log P_pp(x) ≈ − Var_s[p(x|βW_s)] / (2 S P_pp(x)²)
                                   = − (S / ESS_w(x) − 1) / (2 S),

with ``ESS_w(x) = (Σ_s w_s)² / Σ_s w_s²`` the effective number of draws of
the weights ``w_s = p(x | βW_s)``.  Hence the Monte Carlo forward KL
``mean_x[log p*(x) − log P̂_pp(x)]`` (x ~ P*) is biased **upwards** by the
x-average of that term over teacher draws, and the reverse KL
``mean_x[log P̂_pp(x) − log p*(x)]`` (x ~ P_pp) **downwards** by its average
over predictive draws.  For autocorrelated (MCMC) draws, replace S by the
effective sample size of ``w_s`` (``effective_draws``); the i.i.d. value is
then a lower bound on the size of the bias.  The delta method needs
``ESS_w(x) ≫ 1``: when ``ESS_w`` is O(1) the sum is dominated by its
largest term and the true bias is larger than the estimate (the weights'
log-variance grows like N, so this happens at large N for a fixed S).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks, _stats, band, sphere

__all__ = [
    "BIAS_NOTE",
    "MIN_WEIGHT_ESS",
    "as_points",
    "TypicalKL",
    "PredictiveLogDensity",
    "PredictiveKL",
    "sample_posterior_predictive",
    "sample_predictive",
    "typical_kls",
    "typical_kls_band",
    "BandTeacher",
    "band_teacher",
    "typical_kls_band_at",
    "predictive_log_density",
    "predictive_log_density_with_bias",
    "log_mean_exp_bias",
    "predictive_kls_mc",
]

#: One-paragraph explanation of the Jensen bias of the Monte Carlo predictive KLs (reported by :func:`bayes_sbm.reports.predict_run`).
BIAS_NOTE = (
    "log P_pp(x) is estimated by log-mean-exp over S posterior draws; by Jensen's inequality this underestimates "
    "log P_pp(x), by Var_s[p(x|beta W_s)] / (2 S P_pp(x)^2) = (S/ESS_w(x) - 1)/(2S) to leading order (delta method; "
    "ESS_w = (sum w)^2 / sum w^2 of the weights w_s = p(x|beta W_s)). So the forward KL D(P*||P_pp) is biased upwards "
    "by this term averaged over teacher draws and the reverse KL D(P_pp||P*) downwards by it averaged over predictive "
    "draws; 'bias' below is that estimate (estimator minus truth) and 'corrected' subtracts it. With autocorrelated "
    "draws S should be the effective sample size (the reported bias is then a lower bound on its size), and the "
    "estimate is only reliable when ESS_w(x) >> 1. Reverse-KL points are drawn from one half of the draws and "
    "evaluated with the other half (a point scores its own draw e^{O(N)} higher than the others)."
)

#: Below this median weight ESS the delta-method bias estimate is flagged as unreliable (the log-mean-exp is
#: then dominated by a few draws and its bias exceeds the estimate).
MIN_WEIGHT_ESS = 10.0
#: Device memory budget (float64 numbers) for one chunk of coupling matrices: 2^23 numbers = 64 MiB.
CHUNK_NUMBERS = 1 << 23
#: Largest number of draws per device call (larger chunks do not run faster; fixed sizes avoid recompiling).
DRAW_CHUNK = 4096
#: Points evaluated together in :func:`predictive_log_density` (M×N work arrays stay ≤ 1024·N numbers).
POINT_CHUNK = 1024
#: The data frame's first m columns are orthonormal to this absolute accuracy (an SVD's or QR's columns: ~1e-15;
#: a frame off by more was not made for these draws).
FRAME_ORTHONORMAL_ATOL = 1e-8
#: Draws vectorised together inside a chunk on GPU/TPU (``lax.map(batch_size=...)``): batched eigh, small temporaries.
MAP_BATCH = 8


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


class TypicalKL(NamedTuple):
    """Typical divergences between the student ``p(·|βW_s)`` and the teacher P* (THEORY.md §6).

    Attributes
    ----------
    forward, reverse : ndarray, shape (...)
        Per-draw ``D(P* ‖ p(·|βW_s))`` and ``D(p(·|βW_s) ‖ P*)`` (absolute,
        exact), with the leading shape of the draws (e.g. (chain, draw)).
    forward_mean, reverse_mean : float
        Posterior means ``⟨D⟩``.
    forward_se, reverse_se : float
        Monte Carlo standard errors ``sd / √ESS`` of the means.
    forward_ess, reverse_ess : float
        The effective sample sizes used (S unless given or ``"auto"``).
    N : int
        Dimension (the per-N values divide by it).
    beta : float
        Sampling inverse temperature of the student.
    """

    forward: np.ndarray
    reverse: np.ndarray
    forward_mean: float
    reverse_mean: float
    forward_se: float
    reverse_se: float
    forward_ess: float
    reverse_ess: float
    N: int
    beta: float

    @property
    def forward_per_n(self) -> float:
        """``⟨D(P* ‖ P_W)⟩ / N``."""
        return self.forward_mean / self.N

    @property
    def reverse_per_n(self) -> float:
        """``⟨D(P_W ‖ P*)⟩ / N``."""
        return self.reverse_mean / self.N

    @property
    def forward_se_per_n(self) -> float:
        return self.forward_se / self.N

    @property
    def reverse_se_per_n(self) -> float:
        return self.reverse_se / self.N


class PredictiveLogDensity(NamedTuple):
    """``log P̂_pp(x)`` by log-mean-exp with its delta-method Jensen bias (see module docstring).

    Attributes
    ----------
    log_density : ndarray, shape (M,)
        ``logsumexp_s log p(x | βW_s) − log S``.
    bias : ndarray, shape (M,)
        Estimated ``E[log P̂] − log P ≈ −(S/ESS_w − 1) / (2 S_eff)`` (≤ 0).
    weight_ess : ndarray, shape (M,)
        ``ESS_w(x) = (Σ_s w_s)² / Σ_s w_s²``, ``w_s = p(x | βW_s)``.
    num_draws : int
        S.
    """

    log_density: np.ndarray
    bias: np.ndarray
    weight_ess: np.ndarray
    num_draws: int


class PredictiveKL(NamedTuple):
    """Monte Carlo predictive divergences (THEORY.md §6), absolute values.

    Attributes
    ----------
    forward, reverse : float
        ``D(P* ‖ P_pp)`` (x ~ P*) and ``D(P_pp ‖ P*)`` (x ~ P_pp), raw
        log-mean-exp estimates.
    forward_se, reverse_se : float
        Standard errors of the x-averages (the posterior-draw noise of
        ``log P̂_pp`` is shared by all x and appears as the bias instead).
    forward_bias, reverse_bias : float
        Estimated Jensen bias (estimator minus truth): ≥ 0 forward, ≤ 0 reverse.
    forward_weight_ess, reverse_weight_ess : float
        Median ``ESS_w(x)`` over the points (the delta method needs ≫ 1).
    forward_weight_ess_min, reverse_weight_ess_min : float
        Smallest ``ESS_w(x)`` over the points.
    N, num_points, num_draws : int
    beta : float
    """

    forward: float
    reverse: float
    forward_se: float
    reverse_se: float
    forward_bias: float
    reverse_bias: float
    forward_weight_ess: float
    reverse_weight_ess: float
    forward_weight_ess_min: float
    reverse_weight_ess_min: float
    N: int
    num_points: int
    num_draws: int
    beta: float

    @property
    def forward_corrected(self) -> float:
        """Forward KL minus its estimated bias."""
        return self.forward - self.forward_bias

    @property
    def reverse_corrected(self) -> float:
        """Reverse KL minus its estimated bias."""
        return self.reverse - self.reverse_bias


# ---------------------------------------------------------------------------
# Validation and chunking helpers
# ---------------------------------------------------------------------------


def _draws(W_draws, name: str = "W_draws") -> tuple[np.ndarray, tuple[int, ...]]:
    """Host float64 array (S, N, N) and the leading shape of the input."""
    W = np.asarray(W_draws, dtype=np.float64)
    if W.ndim < 3 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"{name}: expected shape (..., S, N, N) of square matrices, got {W.shape}")
    if W.shape[-1] < sphere.MIN_DIMENSION:
        raise ValueError(f"{name}: N = {W.shape[-1]} is too small; need N >= {sphere.MIN_DIMENSION}")
    lead = W.shape[:-2]
    S = math.prod(lead)
    if S < 1:
        raise ValueError(f"{name}: no draws (shape {W.shape})")
    return W.reshape((S,) + W.shape[-2:]), lead


def as_points(x, N: int, name: str = "x") -> np.ndarray:
    """Points (M, N) as a finite float64 array (a single point (N,) becomes (1, N)); ``ValueError`` naming ``name``."""
    X = np.asarray(x, dtype=np.float64)
    if X.ndim == 1:
        X = X[None]
    if X.ndim != 2 or X.shape[1] != N:
        raise ValueError(f"{name}: expected shape (M, N) with N = {N}, got {np.shape(x)}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name}: contains non-finite values")
    return X


def _teacher(teacher_W, N: int) -> np.ndarray:
    Wt = np.asarray(teacher_W, dtype=np.float64)
    if Wt.shape != (N, N):
        raise ValueError(f"teacher_W: expected shape ({N}, {N}) to match the draws, got {Wt.shape}")
    return Wt


def _bucket(n: int, cap: int) -> int:
    """Smallest power of two ≥ n (at least 8), capped: few distinct jit shapes, ≤ 2× padding."""
    return max(1, min(cap, max(8, 1 << max(0, int(n) - 1).bit_length())))


def _chunk_size(N: int, S: int, chunk: int | None) -> int:
    """Draws per device call: ``chunk`` if given, else ≤ DRAW_CHUNK and ≤ 64 MiB of matrices."""
    if chunk is not None:
        c = int(chunk)
        if c < 1:
            raise ValueError(f"chunk: expected a positive integer, got {chunk}")
        return c
    return _bucket(S, max(1, min(DRAW_CHUNK, CHUNK_NUMBERS // (N * N))))


def _padded(W: np.ndarray, start: int, chunk: int) -> tuple[jnp.ndarray, int]:
    """Device chunk W[start:start+chunk], padded to ``chunk`` by repeating its first draw (fixed jit shapes)."""
    part = W[start : start + chunk]
    n = part.shape[0]
    if n < chunk:
        part = np.concatenate([part, np.broadcast_to(part[:1], (chunk - n,) + part.shape[1:])])
    return jnp.asarray(part), n


def _map(fn, xs):
    """``lax.map`` over draws; vectorised in groups of MAP_BATCH on accelerators (on CPU that only doubles compile time)."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    batch = MAP_BATCH if (jax.default_backend() != "cpu" and n >= MAP_BATCH) else None
    return jax.lax.map(fn, xs, batch_size=batch)


@jax.jit
def _teacher_terms(scaled):
    """For ``P* = p(·|scaled)``: ``(Σ* = E_*[xxᵀ], log Z*, E_*[log p*], λ, V)``, exact (THEORY.md §1), one eigh."""
    lam, V = jnp.linalg.eigh(scaled)
    log_z, g = sphere.log_partition_and_gradient(lam)
    m = 2.0 * g
    return (V * m) @ V.T, log_z, 0.5 * jnp.sum(lam * m) - log_z, lam, V


@functools.partial(jax.jit, static_argnames=("num",))
def _sample_eigenbasis(key, lam, V, num: int):
    """``num`` exact draws of the SBM with eigenpairs ``(λ, V)`` (from :func:`_teacher_terms`), shape (num, N)."""
    return sphere.sample_eigen(key, lam, num) @ V.T


def _sbm_log_prob(x: np.ndarray, scaled: np.ndarray, log_z: float) -> np.ndarray:
    """``½ xᵀ(βW)x − log Z(βW)`` for points (M, N)."""
    return 0.5 * np.einsum("mi,ij,mj->m", x, scaled, x) - float(log_z)


# ---------------------------------------------------------------------------
# Draws from P_pp
# ---------------------------------------------------------------------------


def sample_posterior_predictive(key, W_draws, beta: float, num_points: int, *, batch: int | None = None):
    """Exact draws ``x ~ p(x | βW_s)`` for each posterior draw W_s (THEORY.md §3).

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
    beta = _checks.positive_scalar("beta", beta)
    W_draws = jnp.asarray(W_draws, dtype=jnp.float64)
    if W_draws.ndim != 3 or W_draws.shape[-1] != W_draws.shape[-2]:
        raise ValueError(f"W_draws: expected shape (S, N, N), got {tuple(W_draws.shape)}")
    num_points = _checks.positive_int("num_points", num_points)
    batch = int(batch or max(64, 16 * num_points))
    keys = jax.random.split(key, W_draws.shape[0])
    return _predictive_draws(keys, W_draws, jnp.asarray(beta, dtype=jnp.float64), num_points, batch)


@functools.partial(jax.jit, static_argnames=("num_points", "batch"))
def _predictive_draws(keys, W_draws, beta, num_points: int, batch: int):
    """Module-level jit of :func:`sample_posterior_predictive` (compiled once per shape, β traced)."""

    def one(args):
        k, W = args
        lam, vecs = jnp.linalg.eigh(beta * W)
        y = sphere.sample_eigen(k, lam, num_points, batch=batch)
        return y @ vecs.T

    return jax.lax.map(one, (keys, W_draws))


@functools.partial(jax.jit, static_argnames=("batch",))
def _one_point_each(keys, W, beta, batch: int):
    def one(args):
        k, Wi = args
        lam, vecs = jnp.linalg.eigh(beta * Wi)
        return sphere.sample_eigen(k, lam, 1, batch=batch)[0] @ vecs.T

    return _map(one, (keys, W))


def _points_from_draws(key, W: np.ndarray, index: np.ndarray, beta: float, chunk: int) -> np.ndarray:
    """One exact point from ``p(·|βW[i])`` for each i in ``index`` → (len(index), N)."""
    N = W.shape[-1]
    out = np.empty((index.size, N))
    keys = jax.random.split(key, index.size)
    for start in range(0, index.size, chunk):
        idx = index[start : start + chunk]
        part, n = _padded(W[idx], 0, chunk)
        k = keys[start : start + chunk]
        if n < chunk:
            k = jnp.concatenate([k, jax.random.split(jax.random.fold_in(key, start), chunk - n)])
        out[start : start + n] = np.asarray(_one_point_each(k, part, beta, 64))[:n]
    return out


def sample_predictive(key, W_draws, beta: float, num_points: int, *, chunk: int | None = None) -> np.ndarray:
    """I.i.d. exact draws from the mixture ``P_pp(x) = (1/S) Σ_s p(x | βW_s)`` (THEORY.md §3).

    Each point picks a posterior draw uniformly at random (with replacement)
    and draws one exact SBM sample from it.

    Parameters
    ----------
    key : PRNGKey
    W_draws : array_like, shape (..., N, N)
        Posterior draws (leading axes flattened).
    beta : float
        Sampling inverse temperature, > 0.
    num_points : int
        Number of points M.
    chunk : int, optional
        Draws handled per device call (default keeps a chunk ≤ 64 MiB).

    Returns
    -------
    ndarray, shape (M, N)
    """
    beta = _checks.positive_scalar("beta", beta)
    W, _ = _draws(W_draws)
    M = int(num_points)
    if M < 1:
        raise ValueError(f"num_points: expected a positive integer, got {num_points}")
    k_pick, k_x = jax.random.split(key)
    index = np.asarray(jax.random.randint(k_pick, (M,), 0, W.shape[0]))
    return _points_from_draws(k_x, W, index, beta, _chunk_size(W.shape[-1], M, chunk))


# ---------------------------------------------------------------------------
# Typical KLs (exact per draw)
# ---------------------------------------------------------------------------


@jax.jit
def _typical_chunk(W, beta, teacher_W, teacher_cov, teacher_log_z, teacher_self):
    """Per-draw (forward, reverse) KLs for a chunk (c, N, N) → two (c,) arrays."""

    def one(Wi):
        lam, V = jnp.linalg.eigh(beta * Wi)
        log_z, g = sphere.log_partition_and_gradient(lam)
        m = 2.0 * g  # E[y_i²] in the eigenbasis of βW_s
        self_term = 0.5 * jnp.sum(lam * m) - log_z  # E_W[log p_W]
        teacher_diag = jnp.sum(V * (teacher_W @ V), axis=0)  # v_iᵀ (β* W*) v_i
        cross_rev = 0.5 * jnp.sum(m * teacher_diag) - teacher_log_z  # E_W[log p*]
        cross_fwd = 0.5 * beta * jnp.sum(Wi * teacher_cov) - log_z  # E_*[log p_W]
        return teacher_self - cross_fwd, self_term - cross_rev

    return _map(one, W)


def _ess_of(values: np.ndarray, ess) -> float:
    if ess is None:
        return float(values.size)
    if isinstance(ess, str):
        if ess != "auto":
            raise ValueError(f"ess: expected a number, None or 'auto', got {ess!r}")
        arr = values.reshape((1, -1)) if values.ndim != 2 else values
        return _stats.ess(arr, method="mean")
    e = float(ess)
    if not (e > 0):
        raise ValueError(f"ess: must be > 0, got {ess!r}")
    return e


def _typical_result(fwd: np.ndarray, rev: np.ndarray, ess, N: int, beta: float) -> TypicalKL:
    """Per-draw KLs (leading shape of the draws) → :class:`TypicalKL` with means and ``sd/√ESS`` standard errors."""
    ess_f, ess_r = _ess_of(fwd, ess), _ess_of(rev, ess)
    sd = lambda v: float(np.std(v, ddof=1)) if v.size > 1 else math.nan  # noqa: E731
    return TypicalKL(forward=fwd, reverse=rev, forward_mean=float(np.mean(fwd)), reverse_mean=float(np.mean(rev)),
                     forward_se=sd(fwd) / math.sqrt(ess_f), reverse_se=sd(rev) / math.sqrt(ess_r),
                     forward_ess=ess_f, reverse_ess=ess_r, N=N, beta=beta)


def typical_kls(W_draws, teacher_W, beta: float = 1.0, *, ess=None, teacher_beta: float = 1.0, chunk: int | None = None) -> TypicalKL:
    """Exact typical KLs between each student ``p(·|βW_s)`` and the teacher (THEORY.md §1, §6).

    For every draw (one ``eigh`` of βW_s):

    * forward ``D(P* ‖ P_W) = E_*[log p*] − ½β tr(W_s Σ*) + log Z(βW_s)``,
    * reverse ``D(P_W ‖ P*) = ½ Σ_i λ_i m_i − log Z(βW_s) − ½ Σ_i m_i v_iᵀW*v_i + log Z(W*)``,

    with ``Σ* = E_*[xxᵀ]``, ``(λ_i, v_i)`` the eigenpairs of βW_s and
    ``m_i = 2 ∂log Z/∂λ_i = E[(v_i·x)²]`` (THEORY.md §1).

    Parameters
    ----------
    W_draws : array_like, shape (..., N, N)
        Posterior draws; leading axes (e.g. chain, draw) are kept in the
        per-draw outputs.
    teacher_W : array_like, shape (N, N)
        Teacher couplings W*.
    beta : float, default 1
        Sampling inverse temperature of the student.
    ess : None, float or "auto"
        Effective sample size for the standard errors: None uses S,
        a number is used for both directions, ``"auto"`` computes ArviZ's
        ESS of each per-draw series (leading shape (chain, draw), or one chain).
    teacher_beta : float, default 1
        Temperature of the teacher, ``P* = p(·|teacher_beta · W*)``.
    chunk : int, optional
        Draws per device call; default keeps a chunk of matrices ≤ 64 MiB.

    Returns
    -------
    TypicalKL
    """
    beta = _checks.positive_scalar("beta", beta)
    teacher_beta = _checks.positive_scalar("teacher_beta", teacher_beta)
    W, lead = _draws(W_draws)
    S, N = W.shape[0], W.shape[-1]
    scaled = jnp.asarray(teacher_beta * _teacher(teacher_W, N))
    cov, log_z, teacher_self, _, _ = _teacher_terms(scaled)
    args = (scaled, cov, log_z, teacher_self)
    c = _chunk_size(N, S, chunk)
    fwd, rev = np.empty(S), np.empty(S)
    for start in range(0, S, c):
        part, n = _padded(W, start, c)
        f, r = _typical_chunk(part, beta, *args)
        fwd[start : start + n] = np.asarray(f)[:n]
        rev[start : start + n] = np.asarray(r)[:n]
    return _typical_result(fwd.reshape(lead), rev.reshape(lead), ess, N, beta)


@jax.jit
def _band_moments(lower):
    """``log Z(T_s)`` (c,) and ``∂ log Z/∂T.lower`` (c, m+1, N) for a chunk of band draws (one Takahashi VJP)."""
    log_z, vjp = jax.vjp(lambda lo: band.log_partition(band.Band(lo)), lower)
    return log_z, vjp(jnp.ones_like(log_z))[0]


def _band_blocks(lower: np.ndarray, grad: np.ndarray, m: int):
    """``T_ss``, ``Σ_ss`` (c, m, m), ``tr T`` and ``tr(T Σ)`` (c,) from T's band storage and ``grad = ∂ log Z/∂(βT).lower``.

    With ``Σ = E_{p(x|βT)}[xxᵀ]``: ``∂ log Z/∂(βT).lower[0, p] = ½ Σ_pp`` and
    ``∂ log Z/∂(βT).lower[k, p] = Σ_{p,p−k}`` (k ≥ 1: the entry appears twice),
    so ``tr(TΣ) = 2 Σ lower·grad``.
    """
    c, N = lower.shape[0], lower.shape[-1]
    inside = band._valid_mask(m, N)
    lo, g = np.where(inside, lower, 0.0), np.where(inside, grad, 0.0)
    T_ss, S_ss = np.empty((c, m, m)), np.empty((c, m, m))
    for i in range(m):
        T_ss[:, i, i], S_ss[:, i, i] = lo[:, 0, i], 2.0 * g[:, 0, i]
        for j in range(i):
            T_ss[:, i, j] = T_ss[:, j, i] = lo[:, i - j, i]
            S_ss[:, i, j] = S_ss[:, j, i] = g[:, i - j, i]
    return T_ss, S_ss, lo[:, 0].sum(-1), 2.0 * np.sum(lo * g, axis=(-2, -1))


def typical_kls_band(T, frame, teacher_W, beta: float = 1.0, *, ess=None, teacher_beta: float = 1.0,
                     chunk: int | None = None) -> TypicalKL:
    """Exact typical KLs of band posterior draws, Rao–Blackwellised over the Haar block (THEORY.md §1, §6, §8).

    A band draw is ``W = Q P T Pᵀ Qᵀ`` with ``P = diag(I_m, H)``, H Haar on
    O(N − m) independently of T (THEORY.md §8), Q the data frame.  Both KLs
    of :func:`typical_kls` are linear in W's second-moment terms, so their
    average over H is exact in closed form (``E_H[H] = 0``,
    ``E_H[H M Hᵀ] = tr M/(N − m) · I``).  With ``Q_m`` the first m columns
    of Q, ``S = Q_mᵀ Σ* Q_m``, ``A = Q_mᵀ (β*W*) Q_m`` (m × m) and
    ``Σ_T = E_{p(x|βT)}[xxᵀ]`` (its band from one reverse-mode pass of the
    band log Z):

    * forward ``E_H D(P* ‖ p(·|βW)) = E_*[log p*] + log Z(βT)
      − ½β [tr(T_ss S) + (N − tr S)/(N − m) · (tr T − tr T_ss)]``,
    * reverse ``E_H D(p(·|βW) ‖ P*) = ½ tr(βT Σ_T) − log Z(βT) + log Z*
      − ½ [tr(Σ_T,ss A) + (tr β*W* − tr A)/(N − m) · (N − tr Σ_T,ss)]``,

    using ``tr Σ* = tr Σ_T = N`` (the sphere).  Each value is the exact
    conditional expectation ``E[D | T]`` of the per-draw KL of the
    reconstructed W (:func:`bayes_sbm.inference.coupling_draws`), so the
    means are the exact posterior typical KLs and the per-draw spread is
    smaller than that of the dense route; no N × N matrix per draw
    (O(N m²) each, one ``eigh`` of the teacher).

    Parameters
    ----------
    T : bayes_sbm.band.Band, lower of shape (..., m+1, N)
        Band draws; leading axes (e.g. chain, draw) are kept.
    frame : array_like, shape (N, k), k ≥ m
        The data frame Q of the fit (its first m columns span T's kept block).
    teacher_W : array_like, shape (N, N)
        Teacher couplings W*.
    beta : float, default 1
        Sampling inverse temperature of the student.
    ess : None, float or "auto"
        As in :func:`typical_kls`.
    teacher_beta : float, default 1
        Temperature of the teacher, ``P* = p(·|teacher_beta · W*)``.
    chunk : int, optional
        Draws per device call (default ≤ 64 MiB of band storage).

    Returns
    -------
    TypicalKL
    """
    beta = _checks.positive_scalar("beta", beta)
    teacher_beta = _checks.positive_scalar("teacher_beta", teacher_beta)
    lower, lead = _band_draws(T)
    if np.ndim(frame) != 2 or np.shape(frame)[0] != lower.shape[-1]:
        raise ValueError(f"frame: expected shape ({lower.shape[-1]}, k) to match the draws, got {np.shape(frame)}")
    teacher = band_teacher(frame, teacher_W, lower.shape[-2] - 1, teacher_beta)
    fwd, rev = _band_typical_values(lower, teacher, beta, chunk)
    return _typical_result(fwd.reshape(lead), rev.reshape(lead), ess, teacher.N, beta)


def _band_draws(T) -> tuple[np.ndarray, tuple[int, ...]]:
    """Host band storage (S, m+1, N) of band draws and their leading shape; ``ValueError`` naming ``T``."""
    lower = np.asarray(T.lower if isinstance(T, band.Band) else T, dtype=np.float64)
    if lower.ndim < 3 or lower.shape[-2] < 2:
        raise ValueError(f"T: expected band storage of shape (..., S, m+1, N) with m >= 1, got {lower.shape}")
    m, N = lower.shape[-2] - 1, lower.shape[-1]
    if N - m < 1:
        raise ValueError(f"T: bandwidth m = {m} leaves no Haar block at N = {N}")
    lead = lower.shape[:-2]
    if math.prod(lead) < 1:
        raise ValueError(f"T: no draws (shape {lower.shape})")
    return lower.reshape((-1,) + lower.shape[-2:]), lead


class BandTeacher(NamedTuple):
    """The teacher as the band route of :func:`typical_kls_band` sees it (one ``eigh`` of W*, reusable over β).

    ``S = Q_mᵀ Σ* Q_m`` and ``A = Q_mᵀ (β*W*) Q_m`` (m × m), their Haar-block
    traces per dimension ``S_rest = (N − tr S)/(N − m)``,
    ``A_rest = (tr β*W* − tr A)/(N − m)``, ``log Z*`` and ``E_*[log p*]``.
    """

    S: np.ndarray
    A: np.ndarray
    S_rest: float
    A_rest: float
    log_z: float
    self_term: float
    N: int
    m: int


def band_teacher(frame, teacher_W, m: int, teacher_beta: float = 1.0) -> BandTeacher:
    """:class:`BandTeacher` of ``p(·|teacher_beta · W*)`` in the first m columns of the data frame Q (N, k ≥ m)."""
    Q = np.asarray(frame, dtype=np.float64)
    if Q.ndim != 2 or Q.shape[1] < m:
        raise ValueError(f"frame: expected shape (N, k) with k >= m = {m}, got {Q.shape}")
    N = Q.shape[0]
    Qm = Q[:, :m]
    if not np.allclose(Qm.T @ Qm, np.eye(m), atol=FRAME_ORTHONORMAL_ATOL):
        raise ValueError("frame: the first m columns are not orthonormal")
    scaled = teacher_beta * _teacher(teacher_W, N)
    cov, log_z, self_term, _, _ = (np.asarray(a) for a in _teacher_terms(jnp.asarray(scaled)))
    S, A = Qm.T @ cov @ Qm, Qm.T @ scaled @ Qm
    return BandTeacher(S, A, float((N - np.trace(S)) / (N - m)), float((np.trace(scaled) - np.trace(A)) / (N - m)),
                       float(log_z), float(self_term), N, m)


def _band_typical_values(lower: np.ndarray, teacher: BandTeacher, beta: float, chunk: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw (forward, reverse) KLs (S,) of band draws (S, m+1, N), the formulas of :func:`typical_kls_band`."""
    S, m, N = lower.shape[0], lower.shape[-2] - 1, lower.shape[-1]
    if (N, m) != (teacher.N, teacher.m):
        raise ValueError(f"frame: N = {teacher.N}, m = {teacher.m} does not match the draws' N = {N}, m = {m}")
    c = int(chunk) if chunk is not None else _bucket(S, max(1, min(DRAW_CHUNK, CHUNK_NUMBERS // ((m + 1) * N))))
    if c < 1:
        raise ValueError(f"chunk: expected a positive integer, got {chunk}")
    fwd, rev = np.empty(S), np.empty(S)
    for start in range(0, S, c):
        part, n = _padded(lower, start, c)
        log_z, grad = (np.asarray(a)[:n] for a in _band_moments(beta * part))  # moments of βT
        T_ss, sig_ss, tr_T, tr_T_sigma = _band_blocks(lower[start : start + n], grad, m)
        cross_fwd = 0.5 * beta * (np.einsum("sij,ij->s", T_ss, teacher.S)
                                  + teacher.S_rest * (tr_T - np.trace(T_ss, axis1=-2, axis2=-1))) - log_z
        cross_rev = 0.5 * (np.einsum("sij,ij->s", sig_ss, teacher.A)
                           + teacher.A_rest * (N - np.trace(sig_ss, axis1=-2, axis2=-1))) - teacher.log_z
        fwd[start : start + n] = teacher.self_term - cross_fwd
        rev[start : start + n] = 0.5 * beta * tr_T_sigma - log_z - cross_rev  # tr(βT Σ) = β tr(T Σ)
    return fwd, rev


def typical_kls_band_at(T, teacher: BandTeacher, beta: float = 1.0, *, ess=None, chunk: int | None = None) -> TypicalKL:
    """:func:`typical_kls_band` with the teacher prepared once (:func:`band_teacher`): for many β on the same draws."""
    beta = _checks.positive_scalar("beta", beta)
    lower, lead = _band_draws(T)
    fwd, rev = _band_typical_values(lower, teacher, beta, chunk)
    return _typical_result(fwd.reshape(lead), rev.reshape(lead), ess, teacher.N, beta)


# ---------------------------------------------------------------------------
# log P_pp(x) by log-mean-exp
# ---------------------------------------------------------------------------


@jax.jit
def _log_z_chunk(W, beta):
    """``log Z(βW_c)`` for draws (c, N, N) → (c,)."""
    return _map(lambda Wi: sphere.log_partition(jnp.linalg.eigvalsh(beta * Wi)), W)


def _log_z_draws(W: np.ndarray, beta: float, chunk: int | None) -> np.ndarray:
    """``log Z(βW_s)`` of every draw (S,): one eigvalsh per draw, shared by all points and both KL directions."""
    S = W.shape[0]
    c = _chunk_size(W.shape[-1], S, chunk)
    out = np.empty(S)
    for start in range(0, S, c):
        part, n = _padded(W, start, c)
        out[start : start + n] = np.asarray(_log_z_chunk(part, beta))[:n]
    return out


@jax.jit
def _log_prob_chunk(X, W, beta, log_z):
    """``log p(x_m | βW_c)`` for points (M, N), draws (c, N, N) and their ``log Z(βW_c)`` (c,) → (M, c)."""

    def one(args):
        Wi, lz = args
        return 0.5 * beta * jnp.sum((X @ Wi) * X, axis=1) - lz

    return _map(one, (W, log_z)).T


def _log_moments(X: np.ndarray, W: np.ndarray, log_z: np.ndarray, beta: float, chunk: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per point ``logsumexp_s lp`` and ``logsumexp_s 2·lp`` with ``lp = log p(x | βW_s)``; memory O(M + chunk·N²).

    Draw chunks outside, point chunks inside: each chunk of matrices goes to
    the device once, with the running maxima and sums of every point.
    """
    S, N = W.shape[0], W.shape[-1]
    M = X.shape[0]
    c = _chunk_size(N, S, chunk)
    mc = _bucket(M, POINT_CHUNK)
    blocks = []  # (first point, points, device block padded to mc rows with copies of its first point)
    for p0 in range(0, M, mc):
        xs = X[p0 : p0 + mc]
        m_here = xs.shape[0]
        if m_here < mc:
            xs = np.concatenate([xs, np.broadcast_to(xs[:1], (mc - m_here, N))])
        blocks.append((p0, m_here, jnp.asarray(xs)))
    top = np.full(M, -np.inf)
    s1 = np.zeros(M)
    s2 = np.zeros(M)
    for start in range(0, S, c):
        part, n = _padded(W, start, c)
        lz, _ = _padded(log_z, start, c)
        for p0, m_here, xs in blocks:
            rows = slice(p0, p0 + m_here)
            lp = np.asarray(_log_prob_chunk(xs, part, beta, lz))[:m_here, :n]
            new_top = np.maximum(top[rows], lp.max(axis=1))
            shift = np.exp(top[rows] - new_top)  # exp(-inf) = 0 on the first chunk
            e = np.exp(lp - new_top[:, None])
            s1[rows] = s1[rows] * shift + e.sum(axis=1)
            s2[rows] = s2[rows] * shift**2 + (e * e).sum(axis=1)
            top[rows] = new_top
    return top + np.log(s1), 2.0 * top + np.log(s2)


def predictive_log_density(x, W_draws, beta: float = 1.0, *, chunk: int | None = None) -> np.ndarray:
    """``log P̂_pp(x) = logsumexp_s log p(x | βW_s) − log S`` (THEORY.md §3).

    Batches over draws (chunks of ≤ 64 MiB of matrices) and points, so memory
    stays O(M + chunk·N²) whatever S.  The estimate is biased low (Jensen); see
    :func:`predictive_log_density_with_bias` and the module docstring.

    Parameters
    ----------
    x : array_like, shape (M, N) or (N,)
        Points (on the sphere |x|² = N for a density statement).
    W_draws : array_like, shape (..., N, N)
        Posterior draws.
    beta : float, default 1
        Sampling inverse temperature.
    chunk : int, optional
        Draws per device call.

    Returns
    -------
    ndarray, shape (M,)
    """
    return predictive_log_density_with_bias(x, W_draws, beta, chunk=chunk).log_density


def predictive_log_density_with_bias(x, W_draws, beta: float = 1.0, *, effective_draws: float | None = None, chunk: int | None = None) -> PredictiveLogDensity:
    """``log P̂_pp(x)`` (THEORY.md §3) with the delta-method estimate of its Jensen bias (module docstring).

    Parameters
    ----------
    x : array_like, shape (M, N)
    W_draws : array_like, shape (..., N, N)
    beta : float, default 1
    effective_draws : float, optional
        Effective number of independent draws behind the mean of ``p(x|βW_s)``
        (default S; use an MCMC effective sample size for autocorrelated draws).
    chunk : int, optional

    Returns
    -------
    PredictiveLogDensity
        ``bias = −(S/ESS_w − 1) / (2·effective_draws)``, ``ESS_w = exp(2 lse₁ − lse₂)``.
    """
    beta = _checks.positive_scalar("beta", beta)
    W, _ = _draws(W_draws)
    X = as_points(x, W.shape[-1])
    _check_effective_draws(effective_draws)
    return _log_density_with_bias(X, W, _log_z_draws(W, beta, chunk), beta, effective_draws, chunk)


def _check_effective_draws(effective_draws) -> None:
    if effective_draws is not None and not float(effective_draws) > 0:
        raise ValueError(f"effective_draws: must be > 0, got {effective_draws!r}")


def _log_density_with_bias(X, W, log_z, beta: float, effective_draws, chunk) -> PredictiveLogDensity:
    """:func:`predictive_log_density_with_bias` on validated arrays, with the draws' ``log Z(βW_s)`` given."""
    S = W.shape[0]
    lse1, lse2 = _log_moments(X, W, log_z, beta, chunk)
    weight_ess = np.exp(2.0 * lse1 - lse2)
    rel_var = np.maximum(S / weight_ess - 1.0, 0.0)  # Var_s[w] / mean_s[w]², plug-in
    s_eff = float(S if effective_draws is None else effective_draws)
    return PredictiveLogDensity(lse1 - math.log(S), -rel_var / (2.0 * s_eff), weight_ess, S)


def log_mean_exp_bias(x, W_draws, beta: float = 1.0, *, effective_draws: float | None = None, chunk: int | None = None) -> float:
    """Delta-method size of the Jensen bias of ``log P̂_pp`` (THEORY.md §3, §6), averaged over the points x.

    Returns ``mean_x Var_s[p(x|βW_s)] / (2 S P̂_pp(x)²)`` (≥ 0): the amount by
    which a Monte Carlo forward KL over these x (x ~ P*) is too large, or a
    reverse KL (x ~ P_pp) too small.  See the module docstring.

    Parameters
    ----------
    x : array_like, shape (M, N)
    W_draws : array_like, shape (..., N, N)
    beta : float, default 1
    effective_draws : float, optional
        Replaces S in the denominator (MCMC effective sample size).
    chunk : int, optional

    Returns
    -------
    float
    """
    res = predictive_log_density_with_bias(x, W_draws, beta, effective_draws=effective_draws, chunk=chunk)
    return float(-np.mean(res.bias))


# ---------------------------------------------------------------------------
# Predictive KLs by Monte Carlo
# ---------------------------------------------------------------------------


def predictive_kls_mc(
    key,
    W_draws,
    teacher_W,
    beta: float = 1.0,
    num_points: int = 2000,
    *,
    teacher_beta: float = 1.0,
    effective_draws: float | None = None,
    chunk: int | None = None,
) -> PredictiveKL:
    """Predictive KLs ``D(P* ‖ P_pp)`` and ``D(P_pp ‖ P*)`` by Monte Carlo over x (THEORY.md §6).

    * forward: ``mean_x[log p*(x) − log P̂_pp(x)]`` with x drawn exactly from
      the teacher and ``log P̂_pp`` the log-mean-exp over all S draws;
    * reverse: ``mean_x[log P̂_pp(x) − log p*(x)]`` with x ~ P_pp, one exact
      point per randomly chosen posterior draw.  Points drawn from the first
      half of the draws (storage order: whole chains first) are scored with
      the second half and vice versa, so no point is scored by the draw that
      generated it (its own draw gives it a density e^{O(N)} above the
      others', which would dominate the mean and bias the KL upwards).

    Bias: ``log P̂_pp`` underestimates ``log P_pp`` by
    ``≈ Var_s[p(x|βW_s)] / (2 S P_pp(x)²)`` (Jensen, delta method), so the
    raw forward KL is too large and the raw reverse KL too small by that term
    averaged over the respective points; both are reported
    (``forward_bias`` ≥ 0, ``reverse_bias`` ≤ 0) with ``*_corrected``
    values, and the median (and smallest) weight ESS tell whether the delta method holds.

    Parameters
    ----------
    key : PRNGKey
    W_draws : array_like, shape (..., N, N)
        Posterior draws, S ≥ 2.
    teacher_W : array_like, shape (N, N)
    beta : float, default 1
        Sampling inverse temperature of the predictive.
    num_points : int, default 2000
        Points per direction, ≥ 2.
    teacher_beta : float, default 1
        ``P* = p(·|teacher_beta · W*)``.
    effective_draws : float, optional
        Effective number of independent draws for the bias (default S, and
        S/2 for the reverse direction); pass an MCMC ESS for correlated draws.
    chunk : int, optional
        Draws per device call.

    Returns
    -------
    PredictiveKL
    """
    beta = _checks.positive_scalar("beta", beta)
    W, _ = _draws(W_draws)
    S, N = W.shape[0], W.shape[-1]
    if S < 2:
        raise ValueError(f"W_draws: the reverse KL needs at least 2 draws (one half generates, the other scores), got {S}")
    M = int(num_points)
    if M < 2:
        raise ValueError(f"num_points: need at least 2 points for a standard error, got {num_points}")
    _check_effective_draws(effective_draws)
    scaled = _checks.positive_scalar("teacher_beta", teacher_beta) * _teacher(teacher_W, N)
    _, teacher_log_z, _, lam_t, V_t = _teacher_terms(jnp.asarray(scaled))
    teacher_log_z = float(teacher_log_z)
    log_z = _log_z_draws(W, beta, chunk)  # each draw's log Z once, for both directions
    k_teacher, k_pick, k_x = jax.random.split(key, 3)

    # forward: x ~ P*
    xt = np.asarray(_sample_eigenbasis(k_teacher, lam_t, V_t, M))
    fwd_pp = _log_density_with_bias(xt, W, log_z, beta, effective_draws, chunk)
    v_fwd = _sbm_log_prob(xt, scaled, teacher_log_z) - fwd_pp.log_density

    # reverse: x ~ P_pp, cross-fitted halves
    half = S // 2
    halves = [(np.arange(0, half), np.arange(half, S)), (np.arange(half, S), np.arange(0, half))]
    m_a = (M + 1) // 2
    counts = [m_a, M - m_a]
    v_rev, bias_rev, ess_rev = [], [], []
    for (gen, score), m, kp, kx in zip(halves, counts, jax.random.split(k_pick), jax.random.split(k_x)):
        if m == 0:
            continue
        pick = gen[np.asarray(jax.random.randint(kp, (m,), 0, gen.size))]
        xs = _points_from_draws(kx, W, pick, beta, _chunk_size(N, m, chunk))
        s_eff = None if effective_draws is None else float(effective_draws) * score.size / S
        scored = slice(score[0], score[-1] + 1)
        res = _log_density_with_bias(xs, W[scored], log_z[scored], beta, s_eff, chunk)
        v_rev.append(res.log_density - _sbm_log_prob(xs, scaled, teacher_log_z))
        bias_rev.append(res.bias)
        ess_rev.append(res.weight_ess)
    v_rev_all = np.concatenate(v_rev)
    return PredictiveKL(
        forward=float(np.mean(v_fwd)),
        reverse=float(np.mean(v_rev_all)),
        forward_se=float(np.std(v_fwd, ddof=1) / math.sqrt(M)),
        reverse_se=float(np.std(v_rev_all, ddof=1) / math.sqrt(M)),
        forward_bias=float(-np.mean(fwd_pp.bias)),
        reverse_bias=float(np.mean(np.concatenate(bias_rev))),
        forward_weight_ess=float(np.median(fwd_pp.weight_ess)),
        reverse_weight_ess=float(np.median(np.concatenate(ess_rev))),
        forward_weight_ess_min=float(np.min(fwd_pp.weight_ess)),
        reverse_weight_ess_min=float(np.min(np.concatenate(ess_rev))),
        N=N,
        num_points=M,
        num_draws=S,
        beta=beta,
    )
