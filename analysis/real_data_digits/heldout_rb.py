"""Rao–Blackwellised held-out log posterior-predictive density of an SBM posterior (THEORY.md §2–3, §8).

The plain Monte Carlo estimate ``log (1/S) Σ_s p(x | βW_s)`` of ``log P_pp(x)``
(:func:`bayes_sbm.predictive.predictive_log_density`) is dominated by a few
draws at N = 64: ``½ β xᵀW_s x`` fluctuates over the posterior by
``O(√(N/γη))`` nats, almost all of it from the orientation of the couplings
outside the span of the training data.  That part can be integrated exactly.

Symmetry (THEORY.md §8): the tempered posterior is invariant under every
rotation ``O = Q (I_r ⊕ H) Qᵀ`` that fixes the training points, where the
first r columns of the orthogonal Q span the data (:func:`bayes_sbm.data.data_frame`)
and H is any (N−r)×(N−r) rotation (the GOE prior is invariant, every
``x_a`` is fixed and ``Z`` depends on eigenvalues only).  Hence

    P_pp(x) = E_W[ p(x | βW) ] = E_W[ E_H p(x | β O W Oᵀ) ]

with H Haar-distributed, and the inner average is exact for every draw.  In
the frame of Q write ``W = [[A, B], [Bᵀ, D]]`` (A on the data span) and
``x = (x_d, x_⊥)``; with ``u = Hᵀx_⊥`` uniform on the sphere of radius
``ρ = |x_⊥|`` in ``R^n`` (n = N − r),

    E_H p(x | β O W Oᵀ) = exp(½β x_dᵀA x_d) · E_u exp(β (Bᵀx_d)·u + ½β uᵀDu) / Z(βW),

and the middle factor is a Fisher–Bingham normalising constant, computed
here (:func:`log_fisher_bingham`) by the contour integral of THEORY.md §2
with the linear term added:

    E_{u ∈ S(√n)} exp(½ Σ λ_i u_i² + Σ b_i u_i)
        = Γ(n/2) (n/2)^(1−n/2) (1/2πi) ∫ exp(φ(z)) dz,
    φ(z) = n z/2 − ½ Σ log(z − λ_i) + ½ Σ b_i² / (z − λ_i)

(λ_i, b_i in the eigenbasis of D; a radius ρ rescales λ by ρ²/n and b by
ρ/√n).  ``b = 0`` gives ``sphere.log_partition``, ``λ = 0`` the von
Mises–Fisher constant ``Γ(n/2)(κ/2)^(1−n/2) I_{n/2−1}(κ)``, κ = √n|b|
(``tests/test_real_data_digits.py`` checks both, and n = 2, 3 against
quadrature).

The estimator ``log (1/S) Σ_s E_H p(x | βO W_s Oᵀ)`` is consistent like the
plain one and is still biased low (Jensen), but its weights vary far less:
the remaining spread comes from the data block A, the cross block B and log Z.

This is study code (``analysis/real_data_digits``); it uses only the public
``bayes_sbm`` API.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln

from bayes_sbm import _stats, sphere

__all__ = [
    "FB_NUM_NODES",
    "FB_CHUNK",
    "log_fisher_bingham",
    "rotation_averaged_log_prob",
    "LogMeanExp",
    "log_mean_exp",
    "effective_draws",
]

#: Trapezoid nodes on the half-contour (nodes uniform in t with s = 2 sinh t, as ``bayes_sbm.sphere``): 24 nodes
#: gave ≤ 3e-7 nats against a 128-node rule (n = 45, condensed and paramagnetic spectra, |b| up to 2√n), far below
#: the Monte Carlo error of a held-out density (≳ 1e-2), at 2/3 of the cost of 32 nodes (≤ 3e-9) and 3/8 of 64
#: (~1e-14, used by the tests).
FB_NUM_NODES = 24
#: Integrals evaluated per device call (fixed, padded: one compilation; 1024 × 64 nodes × n ≤ 64 complex ≈ 64 MiB).
FB_CHUNK = 1024
#: Bend s₀ of the hyperbolic contour (THEORY.md §2).
_BEND = 4.0
#: Scale a of the node map s = a·sinh(t).
_SINH = 2.0
#: The half-contour ends where the integrand is below exp(-_TAIL_CUT) of its saddle value.
_TAIL_CUT = 40.0
#: Longest half-contour (s units) and the trial points of its probe.
_MAX_LENGTH, _PROBES = 76.8, 8
#: Newton iterations cap for the saddle (monotone convergence from the left, ≲ 20 steps in practice).
_NEWTON_MAX = 200
#: Newton stops when no ε moves by more than this relative amount (rounding alone moves it by ~1e-15).
_NEWTON_RTOL = 1e-13


@functools.partial(jax.jit, static_argnames=("num_nodes",))
def _log_fb(lam, b, num_nodes: int = FB_NUM_NODES):
    """``log E_{u ∈ S(√n)} exp(½Σλu² + b·u)`` for lam, b of shape (B, n), radius² = n."""
    n = lam.shape[-1]
    top = jnp.max(lam, axis=-1)
    delta = top[:, None] - lam
    b2 = b * b

    def newton(eps):
        d = eps[:, None] + delta
        inv = 1.0 / d
        f = jnp.sum(inv, axis=-1) + jnp.sum(b2 * inv * inv, axis=-1) - n
        fp = -jnp.sum(inv * inv, axis=-1) - 2.0 * jnp.sum(b2 * inv**3, axis=-1)
        return eps - f / fp

    def cond(state):
        it, eps, prev = state
        return (it < _NEWTON_MAX) & jnp.any(jnp.abs(eps - prev) > _NEWTON_RTOL * eps)

    def body(state):
        it, eps, _ = state
        return it + 1, newton(eps), eps

    eps0 = jnp.full(top.shape, 0.5 / n)  # h(ε0) > 0: the top gap alone gives 1/ε0 = 2n > n
    _, eps, _ = jax.lax.while_loop(cond, body, (0, newton(eps0), eps0))
    d = eps[:, None] + delta  # gaps z* − λ_i > 0
    sigma = 1.0 / jnp.sqrt(0.5 * jnp.sum(d**-2, axis=-1) + jnp.sum(b2 / d**3, axis=-1))  # 1/√φ''(z*)

    def phase(off):  # φ(z* + off) − φ(z*), off (B, M)
        ratio = off[:, :, None] / d[:, None, :]
        lin = -jnp.sum(b2[:, None, :] * ratio / (d[:, None, :] * (1.0 + ratio)), axis=-1)  # Σb²[1/(d+off) − 1/d]
        return 0.5 * n * off - 0.5 * jnp.sum(jnp.log1p(ratio), axis=-1) + 0.5 * lin

    def hyperbola(s):
        root = jnp.sqrt(1.0 + (s / _BEND) ** 2)
        return sigma[:, None] * (1j * s - _BEND * (root - 1.0)), sigma[:, None] * (1j - (s / _BEND) / root)

    trial = jnp.geomspace(2.0, _MAX_LENGTH, _PROBES)
    small = phase(hyperbola(trial)[0]).real < -_TAIL_CUT
    length = jnp.where(jnp.any(small, axis=-1), trial[jnp.argmax(small, axis=-1)], _MAX_LENGTH)
    t_max = jnp.arcsinh(length / _SINH)
    unit = jnp.linspace(0.0, 1.0, num_nodes)
    t = t_max[:, None] * unit
    off, deriv = hyperbola(_SINH * jnp.sinh(t))
    coef = deriv * (_SINH * jnp.cosh(t)) * jnp.where(unit == 0.0, 0.5, 1.0) * (t_max / (num_nodes - 1))[:, None] / math.pi
    J = jnp.sum((jnp.exp(phase(off)) * coef).imag, axis=-1)  # (1/2πi)∫ exp(φ − φ*) dz, by conjugate symmetry
    # log Γ(n/2) + (1 − n/2) log(n/2) + φ(z*), rearranged as in bayes_sbm.sphere (no N log N cancellation)
    phi_star = 0.5 * jnp.sum(d - 1.0 - jnp.log(d), axis=-1) + 0.5 * jnp.sum(lam, axis=-1) + 0.5 * jnp.sum(b2 / d, axis=-1)
    return phi_star + jnp.log(J)


def log_fisher_bingham(eigenvalues, linear, radius2=None, *, chunk: int = FB_CHUNK, num_nodes: int = FB_NUM_NODES) -> np.ndarray:
    """``log E_u exp(½ Σ λ_i u_i² + Σ b_i u_i)`` for u uniform on the sphere ``|u|² = radius2`` in ``R^n``.

    Parameters
    ----------
    eigenvalues : array_like, shape (..., n)
        λ_i (the quadratic form is diagonal in these coordinates), n ≥ 2.
    linear : array_like, shape (..., n)
        b_i in the same coordinates.
    radius2 : array_like, shape (...), optional
        ρ² of the sphere (default n, the SBM convention of THEORY.md §1).
    chunk : int, optional
        Integrals per device call.

    Returns
    -------
    ndarray, shape (...)
        Exact up to the quadrature (~1e-13 absolute); ``b = 0`` is
        ``bayes_sbm.sphere.log_partition(λ ρ²/n)``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    b = np.asarray(linear, dtype=np.float64)
    if lam.shape != b.shape or lam.ndim < 1 or lam.shape[-1] < 2:
        raise ValueError(f"eigenvalues, linear: need equal shapes (..., n) with n >= 2, got {lam.shape} and {b.shape}")
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(b))):
        raise ValueError("eigenvalues, linear: must be finite")
    n = lam.shape[-1]
    if radius2 is not None:
        rho2 = np.broadcast_to(np.asarray(radius2, dtype=np.float64), lam.shape[:-1])
        if not np.all(rho2 > 0):
            raise ValueError(f"radius2: must be > 0, got min {float(np.min(rho2))}")
        lam = lam * (rho2 / n)[..., None]
        b = b * np.sqrt(rho2 / n)[..., None]
    flat_l, flat_b = lam.reshape(-1, n), b.reshape(-1, n)
    out = np.empty(flat_l.shape[0])
    const = float(gammaln(n / 2) + (1 - n / 2) * math.log(n / 2) + n / 2)  # with φ* rearranged: prefactor + n/2
    for start in range(0, flat_l.shape[0], chunk):
        part_l, part_b = flat_l[start:start + chunk], flat_b[start:start + chunk]
        m = part_l.shape[0]
        if m < chunk:  # pad with copies of the first row: one compiled shape
            part_l = np.concatenate([part_l, np.broadcast_to(part_l[:1], (chunk - m, n))])
            part_b = np.concatenate([part_b, np.broadcast_to(part_b[:1], (chunk - m, n))])
        out[start:start + m] = np.asarray(_log_fb(jnp.asarray(part_l), jnp.asarray(part_b), num_nodes))[:m]
    return (out + const).reshape(lam.shape[:-1])


@jax.jit
def _log_z_draws(W, beta):
    return jax.lax.map(lambda Wi: sphere.log_partition(jnp.linalg.eigvalsh(beta * Wi)), W)


def rotation_averaged_log_prob(x, W_draws, Q, r: int, beta: float, *, chunk: int = FB_CHUNK) -> np.ndarray:
    """``log E_H p(x_m | β O W_s Oᵀ)`` for every draw s and point m (module docstring), shape (S, M).

    Parameters
    ----------
    x : array_like, shape (M, N)
        Points on the sphere ``|x|² = N`` (already transformed like the training data).
    W_draws : array_like, shape (S, N, N)
        Posterior coupling draws.
    Q : array_like, shape (N, N)
        Orthogonal; its first ``r`` columns span the training data (:func:`bayes_sbm.data.data_frame`).
    r : int
        Rank of the training data, ``1 ≤ r ≤ N − 2`` (the complement must be a sphere of dimension ≥ 2).
    beta : float
        Sampling inverse temperature, > 0.

    Returns
    -------
    ndarray, shape (S, M)
        Averaging ``exp`` of these over s gives an unbiased estimate of ``P_pp(x_m)``.
    """
    X = np.asarray(x, dtype=np.float64)
    W = np.asarray(W_draws, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    S, N = W.shape[0], W.shape[-1]
    if W.shape != (S, N, N) or X.ndim != 2 or X.shape[1] != N or Q.shape != (N, N):
        raise ValueError(f"x, W_draws, Q: need (M, N), (S, N, N), (N, N), got {X.shape}, {W.shape}, {Q.shape}")
    r = int(r)
    if not 1 <= r <= N - 2:
        raise ValueError(f"r: must be in [1, N - 2] = [1, {N - 2}], got {r}")
    if not float(beta) > 0:
        raise ValueError(f"beta: must be > 0, got {beta!r}")
    beta = float(beta)
    n = N - r
    log_z = np.asarray(_log_z_draws(jnp.asarray(W), beta))
    Wq = np.einsum("ia,sij,jb->sab", Q, W, Q, optimize=True)
    xq = X @ Q
    xd, xp = xq[:, :r], xq[:, r:]
    rho2 = np.sum(xp * xp, axis=1)
    mu, V = np.linalg.eigh(Wq[:, r:, r:])  # (S, n), (S, n, n)
    quad = 0.5 * beta * np.einsum("ma,sab,mb->sm", xd, Wq[:, :r, :r], xd, optimize=True)
    lin = beta * np.einsum("ma,sab,sbc->smc", xd, Wq[:, :r, r:], V, optimize=True)  # (S, M, n), D's eigenbasis
    lam = beta * np.broadcast_to(mu[:, None, :], lin.shape)
    log_fb = log_fisher_bingham(lam, lin, np.broadcast_to(rho2[None, :], lin.shape[:2]), chunk=chunk)
    return quad + log_fb - log_z[:, None]


class LogMeanExp(NamedTuple):
    """Per point: ``log (1/S) Σ_s exp(lp_s)`` with its delta-method MCSE, Jensen bias and weight ESS, and the
    draw mean ``(1/S) Σ_s lp_s`` (a lower bound on the log of the mean, by Jensen) with its MCSE.

    Attributes
    ----------
    log_density, mcse, bias, weight_ess : ndarray, shape (M,)
    typical, typical_mcse : ndarray, shape (M,)
    num_draws : int
    effective_draws : float
    """

    log_density: np.ndarray
    mcse: np.ndarray
    bias: np.ndarray
    weight_ess: np.ndarray
    typical: np.ndarray
    typical_mcse: np.ndarray
    num_draws: int
    effective_draws: float


def log_mean_exp(lp, *, effective_draws: float | None = None) -> LogMeanExp:
    """Log-mean-exp over draws of ``lp`` (S, M) with the MCSE and bias of :mod:`bayes_sbm.predictive`.

    ``mcse = sqrt((S/ESS_w − 1)/S_eff)``, ``bias = −(S/ESS_w − 1)/(2 S_eff)``
    (delta method, reliable only for ``ESS_w ≫ 1``), ``ESS_w = (Σw)²/Σw²``;
    S_eff defaults to S.  The draw mean's MCSE is ``sd_s/√S_eff``.
    """
    lp = np.asarray(lp, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[0] < 2:
        raise ValueError(f"lp: need shape (S, M) with S >= 2 draws, got {lp.shape}")
    S = lp.shape[0]
    s_eff = float(S if effective_draws is None else effective_draws)
    if not s_eff > 0:
        raise ValueError(f"effective_draws: must be > 0, got {effective_draws!r}")
    top = lp.max(axis=0)
    w = np.exp(lp - top)
    s1, s2 = w.sum(axis=0), (w * w).sum(axis=0)
    ess_w = s1 * s1 / s2
    rel_var = np.maximum(S / ess_w - 1.0, 0.0)
    return LogMeanExp(
        log_density=top + np.log(s1) - math.log(S), mcse=np.sqrt(rel_var / s_eff), bias=-rel_var / (2.0 * s_eff),
        weight_ess=ess_w, typical=lp.mean(axis=0), typical_mcse=lp.std(axis=0, ddof=1) / math.sqrt(s_eff),
        num_draws=S, effective_draws=s_eff,
    )


def effective_draws(values) -> float:
    """Bulk ESS of per-draw values (chain, draw) capped at the number of draws; the number of draws when undefined."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = _stats.ess(v, method="bulk")
    return float(min(v.size, e)) if math.isfinite(e) and e > 0 else float(v.size)
