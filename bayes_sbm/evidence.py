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
* the posterior predictive at β = 1 as an evidence ratio
  ``P_pp(x) = Y(D ∪ {x}) / Y(D)`` (:func:`predictive_log_density_ratio`, any
  estimator) and by shared prior draws
  (:func:`prior_monte_carlo_log_predictive`); all prior Monte Carlo goes
  through one GOE-prior chunk kernel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, init_to_median
from numpyro.infer.util import log_density

from . import _checks, _stats, band, sphere
from . import model as sbm_model
from .inference import PosteriorProblem, SviResult, log_likelihood_draws, make_problem
from .predictive import as_points
from .settings import LadderSettings

__all__ = [
    "EvidenceEstimate",
    "Rung",
    "LadderSettings",
    "EvidenceRatio",
    "PriorMonteCarloPredictive",
    "predictive_log_density_ratio",
    "prior_monte_carlo_log_predictive",
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


class ThermodynamicResult(NamedTuple):
    """TI and stepping-stone estimates from one ladder, with the rungs."""

    ti: EvidenceEstimate
    stepping_stone: EvidenceEstimate
    rungs: list


def _ess(draws: np.ndarray) -> float:
    """Bulk ESS of ℓ draws (NaN for a stuck chain: constant draws have no honest ESS)."""
    return _stats.ess(np.atleast_2d(draws), method="bulk")


@jax.jit
def _loglik_couplings(data, W):
    lam = jnp.linalg.eigvalsh(W)
    quad = 0.5 * jnp.einsum("ai,...ij,aj->...", data, W, data)
    return quad - data.shape[0] * sphere.log_partition(lam)


def log_likelihood_of_couplings(data, W) -> np.ndarray:
    """``ℓ(W) = Σ_a [½ x_aᵀ W x_a − log Z(W)]`` for couplings W (..., N, N) → (...)."""
    return np.asarray(_loglik_couplings(jnp.asarray(data, dtype=jnp.float64), jnp.asarray(W, dtype=jnp.float64)))


@functools.partial(jax.jit, static_argnames=("N", "num", "beta"))
def _prior_chunk(key, scales, data, X, beta: float, N: int, num: int):
    """``num`` exact GOE prior draws W (entry scales ``scales``) → ``(ℓ(W), log p(X | βW))``.

    The one GOE-prior Monte Carlo kernel: ``ℓ(W) = Σ_a log p(x_a|W)`` of the
    data (num,) and the log-densities of extra points X (M, num) (M may be 0).
    """
    z = jax.random.normal(key, (num, scales.shape[-1]), dtype=jnp.float64)
    W = sbm_model.symmetric_from_upper(z * scales, N)
    log_z = sphere.log_partition(jnp.linalg.eigvalsh(W))
    log_z_beta = log_z if beta == 1.0 else sphere.log_partition(jnp.linalg.eigvalsh(beta * W))
    ll = 0.5 * jnp.einsum("ai,sij,aj->s", data, W, data) - data.shape[0] * log_z
    lp = 0.5 * beta * jnp.einsum("mi,sij,mj->ms", X, W, X) - log_z_beta[None, :]
    return ll, lp


def _in_chunks(key, num: int, chunk: int, draw):
    """``draw(key_i, size)`` for ⌈num/size⌉ keys split from ``key`` (size = min(chunk, num), one jit shape);
    the outputs (arrays or tuples of arrays, draws on the last axis) concatenated and cut to ``num`` draws."""
    size = int(min(chunk, num))
    parts = [jax.tree_util.tree_map(np.asarray, draw(k, size)) for k in jax.random.split(key, -(-num // size))]
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=-1)[..., :num], *parts)


def _prior_draws(key, data: np.ndarray, X: np.ndarray, precision: float, num: int, chunk: int, beta: float = 1.0):
    """ℓ(W) (num,) and log p(X | βW) (M, num) for ``num`` GOE prior draws of the given precision, in jitted chunks."""
    N = data.shape[1]
    scales = jnp.asarray(sbm_model.goe_scales(N, precision))
    data, X = jnp.asarray(data), jnp.asarray(X)
    return _in_chunks(key, num, chunk, lambda k, size: _prior_chunk(k, scales, data, X, beta, N, size))


@functools.partial(jax.jit, static_argnames=("N", "m", "num"))
def _band_prior_chunk(key, c, K, precision, N: int, m: int, num: int):
    """ℓ(T) = (N/2) Σ_k c_k T_kk − K log Z(T) for ``num`` exact GOE band draws (THEORY.md §8)."""
    T = band.sample_goe_band(key, N, m, precision, (num,))
    r = c.shape[0]
    return 0.5 * N * jnp.sum(c * T.lower[:, 0, :r], axis=-1) - K * band.log_partition(T)


def _prior_loglik(key, problem: PosteriorProblem, num: int, chunk: int = 2048) -> np.ndarray:
    """ℓ(W) for ``num`` exact draws of the GOE prior of precision γη, in jitted chunks.

    The band model draws T from the band law of §8 (the data term and log Z
    only see T), so no N×N matrix is formed.
    """
    if problem.parametrization == "band":
        m = sbm_model.band_width(problem.frame.c.shape[0], problem.N)
        c, precision = jnp.asarray(problem.frame.c), problem.gamma * problem.eta
        return _in_chunks(key, num, chunk, lambda k, size: _band_prior_chunk(k, c, problem.K, precision, problem.N, m, size))
    X = np.zeros((0, problem.N))
    return _prior_draws(key, problem.data, X, problem.gamma * problem.eta, num, chunk)[0]


def prior_monte_carlo(key, problem: PosteriorProblem, num_draws: int = 1_000_000, chunk: int = 4096) -> EvidenceEstimate:
    """Brute-force ``log Y = log E_{W~P_{γη}}[exp(η ℓ(W))]`` with its delta-method SE.

    Reliable only when the prior covers the posterior (small N, modest η);
    the effective sample size of the weights is reported.
    """
    ll = _prior_loglik(key, problem, num_draws, chunk)
    lw = problem.eta * ll
    return _log_mean_exp_estimate(lw, problem.N, method="prior_monte_carlo")


def _log_mean_exp_estimate(lw: np.ndarray, N: int, **info) -> EvidenceEstimate:
    """``log mean exp(lw)`` with its delta-method SE ``sd(w)/(√n mean(w))``.

    With ``ESS = (Σw)²/Σw²`` that SE is ``√(1/ESS − 1/n)`` (population sd), so
    the weights are exponentiated once, in :func:`bayes_sbm._stats.log_mean_exp`.
    """
    lw = np.asarray(lw, dtype=np.float64)
    value, ess = _stats.log_mean_exp(lw)
    se = math.sqrt(max(1.0 / ess - 1.0 / lw.size, 0.0))
    return EvidenceEstimate.make(value, se, N, ess=ess, num_draws=int(lw.size), **info)


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
    total, quad_err = 0.0, 0.0
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
        ess_w = _ess(a.loglik)  # (draw,) → one chain
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


class EvidenceRatio(NamedTuple):
    """``log P_pp(x) = log Y(D ∪ {x}) − log Y(D)`` at β = 1 (THEORY.md §3).

    Attributes
    ----------
    log_density, se : ndarray, shape (M,)
        The difference and its standard error (estimates taken as independent).
    log_evidence, log_evidence_se : float
        ``log Y(D)``.
    log_evidence_augmented, log_evidence_augmented_se : ndarray, shape (M,)
        ``log Y(D ∪ {x})``.
    """

    log_density: np.ndarray
    se: np.ndarray
    log_evidence: float
    log_evidence_se: float
    log_evidence_augmented: np.ndarray
    log_evidence_augmented_se: np.ndarray


class PriorMonteCarloPredictive(NamedTuple):
    """Brute-force ``log P_pp(x)`` from shared prior draws (small N only).

    Attributes
    ----------
    log_density, se : ndarray, shape (M,)
        ``log E_prior[Π_a p(x_a|W)^η p(x|βW)] − log E_prior[Π_a p(x_a|W)^η]``
        and its delta-method standard error (ratio estimator).
    weight_ess : float
        Effective number of prior draws of the weights ``Π_a p(x_a|W)^η``.
    num_draws : int
    """

    log_density: np.ndarray
    se: np.ndarray
    weight_ess: float
    num_draws: int


# ---------------------------------------------------------------------------
# Evidence-ratio identity at β = 1
# ---------------------------------------------------------------------------


def _as_estimate(value) -> tuple[float, float]:
    """(log Y, se) from a float or an object with ``log_evidence`` and ``se`` (e.g. evidence.EvidenceEstimate)."""
    if hasattr(value, "log_evidence"):
        return float(value.log_evidence), float(getattr(value, "se", 0.0) or 0.0)
    return float(value), 0.0


def predictive_log_density_ratio(
    x,
    data,
    gamma: float,
    eta: float,
    log_evidence: Callable[[Any], Any],
    *,
    beta: float = 1.0,
    parametrization: str = "auto",
) -> EvidenceRatio:
    """``log P_pp(x) = log Y(D ∪ {x}) − log Y(D)`` at β = 1 (THEORY.md §3).

    The added point enters with weight 1 while the data carry power η (its
    trace adds 1/η to τ).  A :class:`bayes_sbm.inference.PosteriorProblem`
    carries a single η, so with a generic estimator the augmented evidence is
    exactly a PosteriorProblem only at η = 1 (data and x all with power 1);
    for η ≠ 1 use :func:`prior_monte_carlo_log_predictive` (explicit weights).

    Parameters
    ----------
    x : array_like, shape (M, N)
        Points on the sphere.
    data : array_like, shape (K, N)
    gamma, eta : float
        Hyperparameters; η must be 1 here.
    log_evidence : callable
        ``log_evidence(problem)`` → float or an object with ``log_evidence``
        and ``se`` (e.g. ``functools.partial(evidence.prior_monte_carlo, key)``
        or thermodynamic integration).  Called once for D and once per point.
    beta : float, default 1
        Must be 1: the identity holds for the untempered sampler only.
    parametrization : str, default "auto"
        Passed to :func:`bayes_sbm.inference.make_problem`.

    Returns
    -------
    EvidenceRatio
        Standard errors combine those of the two estimates as independent.
    """
    if _checks.positive_scalar("beta", beta) != 1.0:
        raise ValueError(f"beta: the evidence-ratio identity holds at beta = 1 only (THEORY.md §3), got {beta}; use predictive_log_density")
    if float(eta) != 1.0:
        raise ValueError(
            f"eta: with a PosteriorProblem-based estimator the augmented evidence needs eta = 1 (the new point has weight 1, "
            f"the data weight eta = {eta}); use prior_monte_carlo_log_predictive for eta != 1"
        )
    X = np.asarray(data, dtype=np.float64)
    pts = as_points(x, X.shape[1])
    base = make_problem(X, gamma, eta, 1.0, parametrization)
    y0, se0 = _as_estimate(log_evidence(base))
    ys, ses = np.empty(pts.shape[0]), np.empty(pts.shape[0])
    for j, xj in enumerate(pts):
        ys[j], ses[j] = _as_estimate(log_evidence(make_problem(np.vstack([X, xj]), gamma, eta, 1.0, parametrization)))
    return EvidenceRatio(ys - y0, np.sqrt(ses**2 + se0**2), y0, se0, ys, ses)


def prior_monte_carlo_log_predictive(
    key, x, data, gamma: float, eta: float, *, beta: float = 1.0, num_draws: int = 200_000, chunk: int = 8192
) -> PriorMonteCarloPredictive:
    """Brute-force ``log P_pp(x)`` from shared GOE prior draws (THEORY.md §3), for N = 2, 3.

    With prior draws ``W_i ~ P_{γη}`` and weights ``w_i = Π_a p(x_a|W_i)^η``,

        P_pp(x) = E_prior[w p(x|βW)] / E_prior[w]  ≈  Σ_i w_i p(x|βW_i) / Σ_i w_i ,

    which at β = 1 is the evidence ratio ``Y(D ∪ {x}) / Y(D)`` with the new
    point at weight 1 (the same prior draws in numerator and denominator).
    Independent of any MCMC; reliable only while the prior covers the
    posterior (small N, modest γη and K).  Memory O(M · num_draws).

    Parameters
    ----------
    key : PRNGKey
    x : array_like, shape (M, N)
    data : array_like, shape (K, N)
    gamma, eta : float
    beta : float, default 1
    num_draws : int, default 200000
    chunk : int, default 8192
        Prior draws per device call.

    Returns
    -------
    PriorMonteCarloPredictive
        ``se`` is the delta-method standard error of the log ratio estimator,
        ``sqrt(Σ_i ŵ_i² (p_i/P̂ − 1)²)`` with normalised weights ŵ.
    """
    beta = _checks.positive_scalar("beta", beta)
    sbm_model.validate_hyperparameters(gamma, eta, beta)
    X = np.asarray(data, dtype=np.float64)
    N = X.shape[1]
    pts = as_points(x, N)
    num = int(num_draws)
    ll, lp = _prior_draws(key, X, pts, float(gamma) * float(eta), num, chunk, beta)
    lw = float(eta) * ll
    w = np.exp(lw - lw.max())
    w_hat = w / w.sum()
    log_ratio = np.log(np.sum(w_hat[None, :] * np.exp(lp - lp.max(axis=1, keepdims=True)), axis=1)) + lp.max(axis=1)
    rel = np.exp(lp - log_ratio[:, None]) - 1.0
    se = np.sqrt(np.sum(w_hat[None, :] ** 2 * rel**2, axis=1))
    return PriorMonteCarloPredictive(log_ratio, se, float(1.0 / np.sum(w_hat**2)), num)
