"""Bayesian evidence of the tempered SBM posterior (THEORY.md §3, §5).

    Y_η(D) = ∫ dW P_{γη}(W) Π_a p(x_a | W)^η      (normalised GOE prior)

Estimators, each with a Monte Carlo standard error (absolute and per N):

* :func:`thermodynamic_integration` — ``log Y = ∫_0^η E_t[ℓ] dt`` with
  ``ℓ(W) = Σ_a log p(x_a | W)`` and ``P_t ∝ P_{γη} Π p^t`` (prior precision
  fixed at γη).  NUTS at each rung ``t > 0`` (warm-started from the previous
  rung's last draw, step size and mass matrix), exact prior draws at t = 0.
  Because ``d E_t[ℓ]/dt = Var_t(ℓ)`` exactly, each interval is integrated by
  the *corrected trapezoid* ``h/2 (f_k + f_{k+1}) − h²/12 (f'_{k+1} − f'_k)``
  with ``f' = Var_t(ℓ)`` from the same draws; the correction term is the
  quadrature error estimate and the adaptive ladder bisects the interval where
  it is largest.  The same draws give the **stepping-stone** estimator
  ``log Y = Σ_k log E_{t_k}[exp((t_{k+1} − t_k) ℓ)]``.
* :func:`svi_evidence` — from a fitted guide q: the ELBO ``E_q[log p − log q]``
  (a lower bound), the importance-sampling estimate
  ``log mean_s exp(log p(z_s) − log q(z_s))`` with its effective sample size
  (it equals the importance-weighted bound with all draws in one group), and
  the importance-weighted bound with groups of ``iw_group`` draws.
* :func:`prior_monte_carlo` — ``log E_prior[exp(η ℓ)]`` by brute force: exact
  in the limit, useful at N = 2, 3 where the prior overlaps the posterior.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, init_to_median
from numpyro.infer.util import log_density

from . import model as sbm_model
from . import sphere
from .inference import PosteriorProblem, SviResult, log_likelihood_draws

__all__ = [
    "EvidenceEstimate",
    "Rung",
    "LadderSettings",
    "ThermodynamicResult",
    "thermodynamic_integration",
    "stepping_stone",
    "svi_evidence",
    "prior_monte_carlo",
    "log_likelihood_of_couplings",
]


class EvidenceEstimate(NamedTuple):
    """One estimate of ``log Y_η``.

    Attributes
    ----------
    log_evidence, se : float
        Absolute ``log Y`` and its Monte Carlo standard error.
    per_n, se_per_n : float
        The same divided by N (THEORY.md §5 reports ``(1/N) log Y``).
    info : dict
        Estimator-specific diagnostics (ESS, quadrature error, rungs...).
    """

    log_evidence: float
    se: float
    per_n: float
    se_per_n: float
    info: dict

    @classmethod
    def make(cls, value: float, se: float, N: int, **info) -> "EvidenceEstimate":
        return cls(float(value), float(se), float(value) / N, float(se) / N, info)

    def as_dict(self) -> dict:
        return {"log_evidence": self.log_evidence, "se": self.se, "per_n": self.per_n, "se_per_n": self.se_per_n} | {
            k: v for k, v in self.info.items() if np.isscalar(v) or isinstance(v, (list, str))
        }


class Rung(NamedTuple):
    """Draws of ``ℓ(W)`` at likelihood power t: mean, variance, ESS and the draws (chain, draw)."""

    t: float
    mean: float
    var: float
    ess: float
    loglik: np.ndarray

    @property
    def se(self) -> float:
        return math.sqrt(self.var / max(self.ess, 1.0))


@dataclass(frozen=True)
class LadderSettings:
    """Thermodynamic-integration ladder.

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


class ThermodynamicResult(NamedTuple):
    """TI and stepping-stone estimates from one ladder, with the rungs."""

    ti: EvidenceEstimate
    stepping_stone: EvidenceEstimate
    rungs: list


def _ess(draws: np.ndarray) -> float:
    import arviz as az

    draws = np.atleast_2d(draws)
    if draws.size < 8 or np.var(draws) == 0:
        return float(draws.size)
    return float(az.ess(draws, method="bulk"))


@jax.jit
def _loglik_couplings(data, W):
    lam = jnp.linalg.eigvalsh(W)
    quad = 0.5 * jnp.einsum("ai,...ij,aj->...", data, W, data)
    return quad - data.shape[0] * sphere.log_partition(lam)


def log_likelihood_of_couplings(data, W) -> np.ndarray:
    """``ℓ(W) = Σ_a [½ x_aᵀ W x_a − log Z(W)]`` for couplings W (..., N, N) → (...)."""
    return np.asarray(_loglik_couplings(jnp.asarray(data, dtype=jnp.float64), jnp.asarray(W, dtype=jnp.float64)))


@jax.jit
def _prior_loglik_chunk(key, data, scales):
    N = data.shape[1]
    z = jax.random.normal(key, (scales.shape[0], scales.shape[1]))
    W = sbm_model.symmetric_from_upper(z * scales, N)
    return _loglik_couplings(data, W)


def _prior_loglik(key, problem: PosteriorProblem, num: int, chunk: int = 2048) -> np.ndarray:
    """ℓ(W) for ``num`` exact draws of the GOE prior of precision γη, in jitted chunks."""
    scales = np.broadcast_to(sbm_model.goe_scales(problem.N, problem.gamma * problem.eta), (chunk, problem.N * (problem.N + 1) // 2))
    data = jnp.asarray(problem.data)
    keys = jax.random.split(key, -(-num // chunk))
    out = np.concatenate([np.asarray(_prior_loglik_chunk(k, data, jnp.asarray(scales))) for k in keys])
    return out[:num]


def prior_monte_carlo(key, problem: PosteriorProblem, num_draws: int = 1_000_000, chunk: int = 4096) -> EvidenceEstimate:
    """Brute-force ``log Y = log E_{W~P_{γη}}[exp(η ℓ(W))]`` with its delta-method SE.

    Reliable only when the prior covers the posterior (small N, modest η);
    the effective sample size of the weights is reported.
    """
    ll = _prior_loglik(key, problem, num_draws, chunk)
    lw = problem.eta * ll
    return _log_mean_exp_estimate(lw, problem.N, method="prior_monte_carlo")


def _log_mean_exp_estimate(lw: np.ndarray, N: int, **info) -> EvidenceEstimate:
    lw = np.asarray(lw, dtype=np.float64)
    top = np.max(lw)
    w = np.exp(lw - top)
    mean_w = np.mean(w)
    value = top + math.log(mean_w)
    se = float(np.std(w) / (math.sqrt(w.size) * mean_w))
    ess = float(np.sum(w) ** 2 / np.sum(w**2))
    return EvidenceEstimate.make(value, se, N, ess=ess, num_draws=int(w.size), **info)


def _rung_problem(problem: PosteriorProblem, t: float) -> PosteriorProblem:
    """Posterior at likelihood power t with prior precision fixed at γη (model γ' = γη/t, η' = t)."""
    return replace(problem, gamma=problem.gamma * problem.eta / t, eta=t)


class _RungSampler:
    """NUTS for every rung with one compilation: the model's γ', η' are traced arguments.

    ``jit_model_args=True`` compiles the sampler once as a function of the
    model arguments, so moving along the ladder costs no re-tracing; each rung
    starts from the previous rung's last draw (warm start) and re-adapts the
    step size and mass matrix during its warmup.
    """

    def __init__(self, problem: PosteriorProblem, settings: LadderSettings):
        self.problem = problem
        self.settings = settings
        model_fn = functools.partial(
            sbm_model.sbm_posterior, parametrization=problem.parametrization, store_W=False, gradient=problem.gradient
        )
        self._mcmc = {}
        for name, warmup in (("cold", settings.first_warmup), ("warm", settings.num_warmup)):
            kernel = NUTS(model_fn, target_accept_prob=settings.target_accept, init_strategy=init_to_median(num_samples=15))
            self._mcmc[name] = MCMC(
                kernel,
                num_warmup=warmup,
                num_samples=settings.num_samples,
                num_chains=settings.num_chains,
                chain_method="sequential",
                progress_bar=settings.progress_bar,
                jit_model_args=True,
            )

    def run(self, key, t: float, warm_z: np.ndarray | None) -> tuple[Rung, np.ndarray]:
        rp = _rung_problem(self.problem, t)
        kwargs = dict(
            data=jnp.asarray(rp.data),
            gamma=jnp.asarray(rp.gamma),
            eta=jnp.asarray(rp.eta),
            beta=jnp.asarray(rp.beta),
            frame=jax.tree_util.tree_map(jnp.asarray, rp.frame),
        )
        mcmc = self._mcmc["cold" if warm_z is None else "warm"]
        init = None
        if warm_z is not None:
            z0 = jnp.asarray(warm_z)
            chains = self.settings.num_chains
            init = {rp.latent_site: jnp.broadcast_to(z0, (chains,) + z0.shape) if chains > 1 else z0}
        mcmc.run(key, init_params=init, **kwargs)
        latent = np.asarray(mcmc.get_samples(group_by_chain=True)[rp.latent_site])
        ll = log_likelihood_draws(rp, latent).sum(-1)
        return Rung(t, float(ll.mean()), float(ll.var(ddof=1)), _ess(ll), ll), latent[0, -1]


def _interval_terms(a: Rung, b: Rung):
    h = b.t - a.t
    trap = 0.5 * h * (a.mean + b.mean)
    corr = -(h**2) / 12.0 * (b.var - a.var)
    return trap, corr


def _ti_estimate(rungs: list, N: int) -> EvidenceEstimate:
    rungs = sorted(rungs, key=lambda r: r.t)
    total, quad_err, var = 0.0, 0.0, 0.0
    weights = np.zeros(len(rungs))
    for i in range(len(rungs) - 1):
        trap, corr = _interval_terms(rungs[i], rungs[i + 1])
        total += trap + corr
        quad_err += abs(corr)
        h = rungs[i + 1].t - rungs[i].t
        weights[i] += 0.5 * h
        weights[i + 1] += 0.5 * h
    var = float(sum(w**2 * r.se**2 for w, r in zip(weights, rungs)))
    return EvidenceEstimate.make(
        total, math.sqrt(var), N,
        quadrature_correction=quad_err,
        num_rungs=len(rungs),
        ladder=[r.t for r in rungs],
    )


def stepping_stone(rungs: list, N: int) -> EvidenceEstimate:
    """Stepping-stone estimate from rung draws (THEORY.md §3 path), with a delta-method SE per ratio."""
    rungs = sorted(rungs, key=lambda r: r.t)
    total, var = 0.0, 0.0
    for a, b in zip(rungs[:-1], rungs[1:]):
        lw = (b.t - a.t) * np.asarray(a.loglik).reshape(-1)
        top = lw.max()
        w = np.exp(lw - top)
        total += top + math.log(w.mean())
        ess_w = _ess(np.asarray(a.loglik).reshape(1, -1)) if a.loglik.ndim == 1 else _ess(a.loglik)
        var += float(np.var(w, ddof=1) / (ess_w * w.mean() ** 2))
    return EvidenceEstimate.make(total, math.sqrt(var), N, num_rungs=len(rungs))


def thermodynamic_integration(key, problem: PosteriorProblem, settings: LadderSettings = LadderSettings()) -> ThermodynamicResult:
    """Thermodynamic integration and stepping stone along ``t ∈ [0, η]`` (THEORY.md §3).

    Parameters
    ----------
    key : PRNGKey
    problem : PosteriorProblem
        Data, γ, η (the target is ``log Y_η``).
    settings : LadderSettings

    Returns
    -------
    ThermodynamicResult
        ``ti`` (with ``quadrature_correction`` = Σ|h²/12 ΔVar|, the size of
        the trapezoid's error that the correction removed), ``stepping_stone``
        and the rungs (t, mean and variance of ℓ, ESS, draws).
    """
    eta = problem.eta
    n = max(2, settings.num_rungs)
    ladder = [eta * (k / n) ** settings.power for k in range(1, n + 1)]
    k_prior, k_rungs = jax.random.split(key)
    prior_ll = _prior_loglik(k_prior, problem, settings.prior_draws)
    rungs = [Rung(0.0, float(prior_ll.mean()), float(prior_ll.var(ddof=1)), float(prior_ll.size), prior_ll)]
    sampler = _RungSampler(problem, settings)
    warm_by_t: dict[float, np.ndarray] = {}
    warm = None
    keys = iter(jax.random.split(k_rungs, settings.max_rungs + 1))
    for t in ladder:
        rung, warm = sampler.run(next(keys), t, warm)
        rungs.append(rung)
        warm_by_t[t] = warm
    while len(rungs) - 1 < settings.max_rungs:
        rungs.sort(key=lambda r: r.t)
        corrections = [abs(_interval_terms(a, b)[1]) for a, b in zip(rungs[:-1], rungs[1:])]
        worst = int(np.argmax(corrections))
        if corrections[worst] <= settings.quadrature_tol:
            break
        a, b = rungs[worst], rungs[worst + 1]
        t_mid = 0.5 * (a.t + b.t)
        source = warm_by_t.get(b.t, warm_by_t.get(a.t))
        rung, warm_mid = sampler.run(next(keys), t_mid, source)
        rungs.append(rung)
        warm_by_t[t_mid] = warm_mid
    rungs.sort(key=lambda r: r.t)
    return ThermodynamicResult(_ti_estimate(rungs, problem.N), stepping_stone(rungs, problem.N), rungs)


def _guide_draws_with_log_q(key, guide, params, kwargs, num: int, site: str):
    def one(k):
        tr = handlers.trace(handlers.seed(handlers.substitute(guide, data=params), k)).get_trace(**kwargs)
        log_q = 0.0
        for s in tr.values():
            if s["type"] == "sample":
                log_q = log_q + jnp.sum(s["fn"].log_prob(s["value"]))
        return tr[site]["value"], log_q

    return jax.jit(jax.vmap(one))(jax.random.split(key, num))


def svi_evidence(key, fit: SviResult, num_draws: int = 4000, iw_group: int = 64) -> dict:
    """ELBO, importance-sampling estimate and importance-weighted bound from a fitted guide.

    Returns
    -------
    dict
        ``"elbo"``, ``"importance"``, ``"iwae"`` → :class:`EvidenceEstimate`
        (``importance`` carries the weights' ESS; a small ESS means the guide is
        too narrow and the estimate is biased low).
    """
    problem = fit.problem
    kwargs = problem.model_kwargs(store_W=False)
    site = problem.latent_site
    z, log_q = _guide_draws_with_log_q(key, fit.guide, fit.params, kwargs, num_draws, site)

    def log_joint(zs):
        return log_density(sbm_model.sbm_posterior, (), kwargs, {site: zs})[0]

    log_p = np.asarray(jax.jit(jax.vmap(log_joint))(z))
    lw = log_p - np.asarray(log_q)
    N = problem.N
    elbo = EvidenceEstimate.make(lw.mean(), lw.std(ddof=1) / math.sqrt(lw.size), N, num_draws=int(lw.size))
    importance = _log_mean_exp_estimate(lw, N)
    groups = lw[: (lw.size // iw_group) * iw_group].reshape(-1, iw_group)
    group_vals = np.asarray(logsumexp(groups, axis=1)) - math.log(iw_group)
    iwae = EvidenceEstimate.make(group_vals.mean(), group_vals.std(ddof=1) / math.sqrt(group_vals.size), N, group=iw_group)
    return {"elbo": elbo, "importance": importance, "iwae": iwae}
