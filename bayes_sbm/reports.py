"""Reports on specs and run folders: the library side of the CLI's tables.

* :func:`partition_summary` — exact and saddle log Z of a coupling matrix
  (``bayes-sbm logz``);
* :func:`posterior_table` — posterior means ± MCSE of the THEORY.md §4
  observables next to theory, with the convergence warnings (``fit``);
* :func:`evidence_report` / :func:`format_evidence` — every evidence
  estimator for a spec, bounds marked as bounds and unreliable numbers
  flagged (``bayes-sbm evidence``);
* :func:`predict_run` / :func:`format_predict` — typical and predictive KLs
  of a fitted run to its teacher (``bayes-sbm predict``);
* :func:`heldout_report` / :func:`format_heldout` — held-out log posterior-
  predictive density over a grid of β, next to the plug-in posterior-mean
  model (``bayes-sbm predict RUN --heldout FILE``);
* :func:`run_coupling_draws` — the coupling draws W of a run folder;
* :func:`run_latent_draws` — the problem and latent draws of a run folder;
* :func:`run_typical_kl_function` / :func:`run_typical_kls` — exact typical
  KLs of a run to its teacher at any β, the run read once (band runs without
  N × N matrices);
* :func:`generate_samples` — draws from a run's posterior predictive at a
  chosen β, mapped back through the run's data transform
  (``bayes-sbm generate RUN``).

Reports that are written as JSON return JSON-ready dicts in that layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from . import _checks, _stats, diagnostics, evidence, inference, predictive, sphere, teacher, theory
from .data import load_data
from .io import load_npy
from .distribution import SYMMETRY_ATOL, SphericalBoltzmann
from .runs import BAND_PREDICTIVE_MAX_N, TEACHER_FILE, load_run, load_run_transform, problem_from_spec
from .settings import LadderSettings, derive_keys

__all__ = [
    "PartitionSummary",
    "partition_summary",
    "posterior_table",
    "evidence_report",
    "evidence_warnings",
    "format_evidence",
    "predict_run",
    "predict_warnings",
    "format_predict",
    "HeldoutReport",
    "heldout_report",
    "heldout_warnings",
    "format_heldout",
    "run_coupling_draws",
    "run_latent_draws",
    "run_typical_kl_function",
    "run_typical_kls",
    "GeneratedSamples",
    "generate_samples",
]

#: Importance-sampling estimates with a weight ESS below this are flagged (a few draws dominate the mean).
MIN_IMPORTANCE_ESS = 100.0
#: TI and stepping stone are flagged when they differ by more than this many combined standard errors.
ESTIMATOR_DISAGREEMENT_SE = 4.0
#: TI is flagged when its quadrature correction exceeds this many standard errors (the ladder is too coarse).
QUADRATURE_SE = 2.0


class PartitionSummary(NamedTuple):
    """Exact and saddle-point log Z of βW (THEORY.md §2) and what follows from it."""

    N: int
    beta: float
    log_z: float
    log_z_per_n: float
    log_z_saddle: float
    log_z_saddle_gaussian: float
    mu: float
    condensate: float
    top_eigenvalue: float
    sampler_acceptance: float


def partition_summary(W, beta: float = 1.0) -> PartitionSummary:
    """Exact and saddle log Z, μ, condensate and sampler acceptance for βW.

    Raises a one-line ``ValueError`` naming ``beta`` (and W's scale) when
    ``βW`` is too large for double precision or any result is not finite,
    instead of returning NaN.
    """
    beta = _checks.positive_scalar("beta", beta)
    W = _checks.finite_array("W", W, ndim=2)
    if W.shape[0] != W.shape[1]:
        raise ValueError(f"W: must be a square N x N matrix, got shape {W.shape}")
    scale = float(np.max(np.abs(W)))
    with np.errstate(over="ignore", invalid="ignore"):
        bound = beta * scale * (4.0 * W.shape[0])  # bounds |eigenvalue differences| times N: what log Z takes exponentials of
    if not math.isfinite(bound):
        raise ValueError(f"beta: must keep beta*W within double precision, got beta = {beta!r} with max |W_ij| = {scale:.6g} "
                         f"(beta * max |W_ij| * 4N = {bound})")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dist = SphericalBoltzmann(W, beta)
        lam = np.asarray(dist.eigenvalues)
        n = dist.dimension
        exact = float(sphere.log_partition(lam))
        if not math.isfinite(exact):
            raise ValueError(f"beta: log Z of beta*W is not finite (beta = {beta!r}, top eigenvalue {float(np.max(lam)):.3g}); the couplings are too large")
        summary = PartitionSummary(
            N=n,
            beta=float(beta),
            log_z=exact,
            log_z_per_n=exact / n,
            log_z_saddle=float(sphere.log_partition_saddle(lam)),
            log_z_saddle_gaussian=float(sphere.log_partition_saddle(lam, gaussian_correction=True)),
            mu=float(dist.lagrange_multiplier),
            condensate=float(dist.condensate),
            top_eigenvalue=float(np.max(lam)),
            sampler_acceptance=float(sphere.sampler_acceptance(lam, method="auto")),
        )
    bad = [k for k, v in summary._asdict().items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"beta: {', '.join(bad)} not finite for beta = {beta!r} (top eigenvalue of beta*W {summary.top_eigenvalue:.6g}); "
                         "beta*W is outside the range the formulas handle")
    return summary


def posterior_table(dt, meta) -> str:
    """Posterior means (± MCSE) of the THEORY.md §4 observables next to their theory values, with warnings.

    The warnings are :func:`bayes_sbm.diagnostics.convergence_warnings` (the
    ones ``bayes-sbm diagnose`` prints) followed by any other ``meta["warnings"]``.
    """
    th = meta.get("theory", {}) if isinstance(meta.get("theory"), dict) else {}
    post = dt["posterior"]

    def first(key):
        v = th.get(key)
        return _float(v[0]) if isinstance(v, list) and v else np.nan

    rows = [
        ("lambda_1", np.asarray(post["lam_top"])[..., 0], first("lam")),
        ("u_1", np.asarray(post["u"])[..., 0], first("u")),
        ("M (condensate)", np.asarray(post["M"]), _float(th.get("M"))),
        ("e_1' W e_1", np.asarray(post["signal"])[..., 0], first("signal")),
        ("mu", np.asarray(post["mu"]), _float(th.get("mu"))),
        ("(1/N) log Z(W)", np.asarray(post["log_z_per_n"]), _float(th.get("log_z_per_n"))),
    ]
    lines = [f"phase (theory, data c): {th.get('phase', '?')}",
             f"{'observable':18s} {'posterior mean':>15s} {'mcse':>9s} {'theory':>10s} {'diff':>10s}"]
    for name, draws, ref in rows:
        with np.errstate(invalid="ignore", divide="ignore"):
            m = _stats.mean_mcse(np.asarray(draws, dtype=float))
        mcse = f"{m.mcse:9.5f}" if math.isfinite(m.mcse) else f"{'n/a':>9s}"
        lines.append(f"{name:18s} {m.mean:15.5f} {mcse} {ref:10.5f} {m.mean - ref:+10.5f}")
    if "divergences" in meta:
        ls = meta.get("latent_summary") if isinstance(meta.get("latent_summary"), dict) else {}
        lines.append(
            f"NUTS: {meta['divergences']} divergences; latent dim {ls.get('dim')}: min ESS bulk {_float(ls.get('min_ess_bulk')):.0f}, "
            f"max R-hat {_float(ls.get('max_r_hat')):.3f}"
        )
    stored = meta.get("warnings") if isinstance(meta.get("warnings"), list) else []
    warnings = dict.fromkeys([*diagnostics.convergence_warnings(dt, meta), *(str(w) for w in stored)])
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def evidence_warnings(report: dict) -> list[str]:
    """Why an evidence estimate cannot be trusted, one line each (empty when none).

    Non-finite values or standard errors, a low importance-weight ESS, TI and
    stepping stone disagreeing beyond their errors, and a TI quadrature
    correction large against its standard error (too coarse a ladder).
    """
    est = report.get("estimators") or {}
    out = []
    for name, e in est.items():
        value, se = _float(e.get("log_evidence")), _float(e.get("se"))
        if not math.isfinite(value):
            out.append(f"{name}: the log evidence is not finite ({value}): this estimator failed")
        elif not math.isfinite(se):
            out.append(f"{name}: standard error undefined ({se}): a stuck chain or constant draws")
    e = est.get("importance")
    if e is not None and not _float(e.get("ess", math.inf)) >= MIN_IMPORTANCE_ESS:
        out.append(f"importance/iwae: weight ESS {_float(e.get('ess')):.1f} of {e.get('num_draws', '?')} draws (< {MIN_IMPORTANCE_ESS:g}): "
                   "the guide misses the posterior; these values are unreliable (biased low)")
    ti, ss = est.get("ti"), est.get("stepping_stone")
    if ti and ss:
        gap = abs(_float(ti.get("log_evidence")) - _float(ss.get("log_evidence")))
        se = math.hypot(_float(ti.get("se")), _float(ss.get("se")))
        if math.isfinite(gap) and math.isfinite(se) and not gap <= ESTIMATOR_DISAGREEMENT_SE * se:
            out.append(f"ti vs stepping_stone: differ by {gap:.3g} nats, {gap / se if se > 0 else math.inf:.1f} combined SEs "
                       f"(> {ESTIMATOR_DISAGREEMENT_SE:g}): add rungs or draws")
    if ti:
        quad, se = abs(_float(ti.get("quadrature_correction", 0.0))), _float(ti.get("se"))
        if math.isfinite(quad) and math.isfinite(se) and se > 0 and quad > QUADRATURE_SE * se:
            out.append(f"ti: quadrature correction {quad:.3g} nats is {quad / se:.1f} SEs (> {QUADRATURE_SE:g}): the ladder is too coarse")
    return out


def evidence_report(spec, *, ladder: LadderSettings | None = None, svi_steps=None, ti=True, svi=True, progress_bar=False,
                    stage=None) -> dict:
    """All evidence estimators for a spec, in the JSON layout of ``bayes-sbm evidence --json``.

    ELBO and IWAE are lower bounds (``"kind": "lower bound"``), TI, stepping
    stone and importance sampling are estimates; ``warnings`` lists every
    number that cannot be trusted (:func:`evidence_warnings`).

    ``stage``, when given, is called with ``"ti"`` or ``"svi"`` and returns a
    context manager entered around that estimator family (the CLI's timed
    progress stages); it changes no key, seed or number.
    """
    stage = stage or (lambda family: contextlib.nullcontext())
    problem = problem_from_spec(spec)
    N = problem.N
    keys = derive_keys(spec.inference.seed)
    terms = theory.evidence_terms(problem.frame.c, problem.gamma, problem.eta)  # the saddle and the evidence, solved once
    th = float(terms.log_evidence)
    report: dict[str, Any] = {"N": N, "K": problem.K, "gamma": problem.gamma, "eta": problem.eta, "c": problem.frame.c.tolist(),
                              "theory": th * N, "theory_per_n": th, "phase": terms.saddle.phase,
                              "estimators": {}, "seconds": {}}
    if ti:
        with stage("ti"):
            t0 = time.perf_counter()
            rungs = dataclasses.replace(ladder or LadderSettings(), progress_bar=progress_bar)
            res = evidence.thermodynamic_integration(keys.ti, problem, rungs)
            report["estimators"]["ti"] = res.ti.as_dict() | {"kind": "estimate"}
            report["estimators"]["stepping_stone"] = res.stepping_stone.as_dict() | {"kind": "estimate"}
            report["seconds"]["ti+stepping_stone"] = time.perf_counter() - t0
    if svi:
        with stage("svi"):
            t0 = time.perf_counter()
            base = spec.inference.svi_settings(progress_bar)
            settings = dataclasses.replace(base, guide=base.guide if problem.parametrization in ("aligned", "band") else "normal",
                                           num_steps=svi_steps or base.num_steps, num_draws=10)
            est = evidence.svi_evidence(keys.importance, inference.run_svi(keys.svi, problem, settings))
            kinds = {"elbo": "lower bound", "importance": "estimate", "iwae": "lower bound"}
            for name in ("elbo", "importance", "iwae"):
                report["estimators"][name] = est[name].as_dict() | {"kind": kinds[name]}
            report["seconds"]["svi"] = time.perf_counter() - t0
    report["warnings"] = evidence_warnings(report)
    return report


def format_evidence(report: dict) -> str:
    """The evidence table of ``bayes-sbm evidence`` (``kind``: estimate or lower bound; warnings below).

    The warnings are ``report["warnings"]``, or :func:`evidence_warnings` when the report has none stored.
    """
    N = report["N"]
    lines = [f"log evidence, N = {N}, K = {report['K']}, gamma = {report['gamma']}, eta = {report['eta']}, phase {report['phase']}",
             f"{'estimator':16s} {'kind':>11s} {'log Y':>12s} {'se':>9s} {'(1/N) log Y':>12s} {'se/N':>9s} {'theory/N':>10s} {'diff/N':>10s}"]
    for name, e in report["estimators"].items():
        lines.append(f"{name:16s} {e.get('kind', ''):>11s} {e['log_evidence']:12.4f} {e['se']:9.4f} {e['per_n']:12.5f} {e['se_per_n']:9.5f} "
                     f"{report['theory_per_n']:10.5f} {e['per_n'] - report['theory_per_n']:+10.5f}")
    warnings = report.get("warnings")
    lines += [f"warning: {w}" for w in (evidence_warnings(report) if warnings is None else warnings)]
    return "\n".join(lines)


def _teacher_matrix(W, N: int, name: str, data_path: Path) -> np.ndarray:
    """Teacher couplings checked before any computing: finite, (N, N) like the run's data, symmetric."""
    W = _checks.finite_array(name, W, ndim=2)
    if W.shape != (N, N):
        raise ValueError(f"{name}: must have shape ({N}, {N}) like the run's data {data_path} (N = {N}), got shape {W.shape}")
    asym = float(np.max(np.abs(W - W.T)))
    if asym > SYMMETRY_ATOL * max(1.0, float(np.max(np.abs(W)))):
        raise ValueError(f"{name}: must be symmetric, got max |W - W.T| = {asym:.3g}")
    return W


class _FittedRun(NamedTuple):
    """A run folder read for ``predict``: its tree and meta, the fitted data (equal to ``observed_data``) and γ, η."""

    path: Path
    dt: Any
    meta: dict
    data: np.ndarray
    data_path: Path
    gamma: float
    eta: float


def _load_fitted_run(run_dir) -> _FittedRun:
    """``RUN/inference.nc``, ``meta.json`` and ``data.npy``, checked against each other before any computing."""
    run = Path(run_dir)
    dt, meta = load_run(run)
    data_path = run / "data.npy"
    if not data_path.is_file():
        raise FileNotFoundError(f"{run}: no data.npy")
    data = load_data(data_path)
    try:
        observed = np.asarray(dt["observed_data"]["x"].values) if "observed_data" in dt.children else None
    except KeyError:
        observed = None
    if observed is None or observed.shape != data.shape or not np.array_equal(observed, data):
        raise ValueError(f"{data_path}: differs from the run's observed_data in inference.nc (the run folder was modified)")
    try:
        const = dt["constant_data"]
        gamma, eta = float(const["gamma"].values), float(const["eta"].values)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{run / 'inference.nc'}: no usable constant_data gamma/eta ({_checks.one_line(exc)})") from None
    return _FittedRun(run, dt, meta, data, data_path, gamma, eta)


def _thinned(index_count: int, chains: int, max_draws: int | None) -> np.ndarray:
    """Draw indices per chain, thinned evenly so that chains × draws ≤ max_draws (at least one per chain)."""
    if max_draws is None or chains * index_count <= int(max_draws):
        return np.arange(index_count)
    per_chain = max(1, int(max_draws) // chains)
    return np.unique(np.linspace(0, index_count - 1, per_chain).round().astype(int))


class _LatentDraws(NamedTuple):
    """Thinned posterior draws of a run: stored ``W`` (chain, draw, N, N), or the latent ``z`` with its problem."""

    W: np.ndarray | None
    z: np.ndarray | None
    problem: Any
    keep: np.ndarray


def _latent_draws(fit: _FittedRun, max_draws: int | None, purpose: str) -> _LatentDraws:
    """The stored ``W`` if any, else the latent ``z`` (chain, draw, dim) and the problem in the fit's frame.

    The frame is ``constant_data.Q`` when stored (the SVD's signs may differ
    between machines); draws are thinned to ``max_draws`` before anything is built.
    """
    dt = fit.dt
    post = dt["posterior"]
    if "W" in post.data_vars:
        W = post["W"]
        keep = _thinned(W.shape[1], W.shape[0], max_draws)
        return _LatentDraws(np.asarray(W.values[:, keep], dtype=np.float64), None, None, keep)
    group = next((g for g in ("unconstrained_posterior", "posterior") if g in dt.children and "z" in dt[g].data_vars), None)
    if group is None:
        raise ValueError(
            f"{fit.path}: the posterior stores neither the couplings 'W' nor the latent 'z'; refit with latent storage "
            f"(to_datatree(store_latent=True)) or with store_W to {purpose}"
        )
    z = np.asarray(dt[group]["z"].values, dtype=np.float64)
    keep = _thinned(z.shape[1], z.shape[0], max_draws)
    problem = inference.make_problem(fit.data, fit.gamma, fit.eta, 1.0, str(dt.attrs.get("parametrization", "aligned")))
    const = dt["constant_data"]
    if "Q" in const.data_vars:
        problem = dataclasses.replace(problem, frame=problem.frame._replace(Q=np.asarray(const["Q"].values)))
    return _LatentDraws(None, z[:, keep], problem, keep)


def _rebuilt_couplings(N: int, draws: _LatentDraws, key) -> np.ndarray:
    """The W draws (chain, draw, N, N) of :func:`_latent_draws`' result: the stored ones, or rebuilt from ``z``
    through :func:`bayes_sbm.inference.coupling_draws`; ``key`` draws the Haar rotations of band runs."""
    if draws.W is not None:
        return draws.W
    chains, num = draws.z.shape[:2]
    flat = draws.z.reshape((chains * num, -1))
    W = np.empty((flat.shape[0], N, N))
    step = max(1, predictive.CHUNK_NUMBERS // (N * N))
    for s in range(0, flat.shape[0], step):
        W[s : s + step] = inference.coupling_draws(draws.problem, flat[s : s + step], key=jax.random.fold_in(key, s))
    return W.reshape((chains, num, N, N))


def _coupling_draws(fit: _FittedRun, key, max_draws: int | None, purpose: str) -> tuple[np.ndarray, np.ndarray]:
    """(W draws (chain, draw, N, N), kept draw indices), thinned to ``max_draws`` before anything is built."""
    draws = _latent_draws(fit, max_draws, purpose)
    return _rebuilt_couplings(fit.data.shape[1], draws, key), draws.keep


def _typical_kl_function(fit: _FittedRun, teacher_W: np.ndarray, draws: _LatentDraws, W: np.ndarray | None = None):
    """β ↦ TypicalKL of a run, with everything that does not depend on β done once: band runs that store the latent
    use the band route (no N×N matrices, exact Haar average; the teacher's eigh once), others the dense route on ``W``
    (rebuilt here when not given)."""
    if draws.z is not None and draws.problem.parametrization == "band":
        chains, num = draws.z.shape[:2]
        T = inference.band_draws(draws.problem, draws.z.reshape((chains * num, -1)))
        T = T._replace(lower=np.asarray(T.lower).reshape((chains, num) + T.lower.shape[-2:]))
        teacher = predictive.band_teacher(draws.problem.frame.Q, teacher_W, T.m)
        return lambda beta: predictive.typical_kls_band_at(T, teacher, beta, ess="auto")
    if W is None:
        W = _rebuilt_couplings(fit.data.shape[1], draws, jax.random.key(0))
    return lambda beta: predictive.typical_kls(W, teacher_W, beta, ess="auto")


def _resolve_teacher(fit: _FittedRun, teacher_W, teacher_name: str) -> tuple[np.ndarray, str]:
    """The teacher couplings of a run: given, else ``RUN/teacher.npy``, else regenerated from the spec's data seed."""
    N = fit.data.shape[1]
    stored_teacher = fit.path / TEACHER_FILE
    if teacher_W is not None:
        return predictive._teacher(_teacher_matrix(teacher_W, N, teacher_name, fit.data_path), N), "given"
    if stored_teacher.is_file():
        return (predictive._teacher(_teacher_matrix(load_npy(stored_teacher), N, str(stored_teacher), fit.data_path), N),
                f"from RUN/{TEACHER_FILE}")
    return predictive._teacher(_teacher_from_run(fit.meta.get("spec", {}), fit.data, fit.path), N), "regenerated from the spec's data seed"


def run_latent_draws(run_dir, max_draws: int | None = None):
    """The posterior problem of a run folder (in the fit's frame) and its latent draws ``z``, shape (chain, draw, dim).

    For statistics of the couplings that need no N × N matrix (e.g. tr W² =
    tr T² of band draws, :func:`bayes_sbm.inference.band_draws`).  Raises
    ``ValueError`` for a run that stores ``W`` but no latent.
    """
    if max_draws is not None:
        max_draws = _checks.positive_int("max_draws", max_draws)
    fit = _load_fitted_run(run_dir)
    draws = _latent_draws(fit, max_draws, "read the latent draws")
    if draws.z is None:
        raise ValueError(f"{fit.path}: the posterior stores the couplings 'W' but not the latent 'z'")
    return draws.problem, draws.z


def run_typical_kl_function(run_dir, teacher_W=None, *, max_draws: int | None = None, teacher_name: str = "teacher_W"):
    """β ↦ exact typical KLs of a fitted run to its teacher (THEORY.md §6), the run read once.

    Band runs (THEORY.md §8) use :func:`bayes_sbm.predictive.typical_kls_band_at`
    (no N × N matrix per draw; exact Haar average; the teacher prepared once),
    others :func:`bayes_sbm.predictive.typical_kls` on the coupling draws.  The
    teacher is resolved as in :func:`predict_run`.

    Parameters
    ----------
    run_dir : path
        A run folder (:func:`bayes_sbm.runs.fit_spec`).
    teacher_W : array_like, shape (N, N), optional
    max_draws : int, optional
        Thin the draws evenly to at most this many.
    teacher_name : str, default "teacher_W"
        How error messages name ``teacher_W``.

    Returns
    -------
    callable
        ``f(beta) -> bayes_sbm.predictive.TypicalKL`` (per-draw values of
        shape (chain, draw), ``ess="auto"``); ``beta`` > 0.
    """
    if max_draws is not None:
        max_draws = _checks.positive_int("max_draws", max_draws)
    fit = _load_fitted_run(run_dir)
    teacher_W, _ = _resolve_teacher(fit, teacher_W, teacher_name)
    kl = _typical_kl_function(fit, teacher_W, _latent_draws(fit, max_draws, "compute typical KLs"))
    return lambda beta: kl(_checks.positive_scalar("beta", beta))


def run_typical_kls(run_dir, betas, teacher_W=None, *, max_draws: int | None = None, teacher_name: str = "teacher_W") -> list:
    """Exact typical KLs of a fitted run to its teacher at each sampling β (:func:`run_typical_kl_function`).

    Returns
    -------
    list of bayes_sbm.predictive.TypicalKL
        One per β, per-draw values of shape (chain, draw), ``ess="auto"``.
    """
    betas = [_checks.positive_scalar("betas", b) for b in np.atleast_1d(np.asarray(betas, dtype=np.float64)).tolist()]
    if not betas:
        raise ValueError("betas: expected at least one inverse temperature")
    kl = run_typical_kl_function(run_dir, teacher_W, max_draws=max_draws, teacher_name=teacher_name)
    return [kl(b) for b in betas]


def _teacher_from_run(spec: dict, data: np.ndarray, run: Path) -> np.ndarray:
    d = spec.get("data", {}) if isinstance(spec, dict) else {}
    if d.get("source") != "teacher":
        raise ValueError(
            f"{run}: the data do not come from a seeded teacher (data source {d.get('source')!r}); pass the teacher couplings (--teacher W.npy)"
        )
    K, N = data.shape
    try:
        seed, omega = int(d["seed"]), d["omega"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{run}: meta.json spec.data lacks the teacher seed/omega; pass the teacher couplings (--teacher W.npy)") from None
    td = teacher.teacher_student_data(jax.random.key(seed), N, int(d.get("K", K)), omega)
    if td.data.shape != data.shape or not np.allclose(td.data, data, rtol=0, atol=1e-8):
        raise ValueError(f"{run}: regenerating the teacher from seed {seed} does not reproduce data.npy; pass the teacher couplings (--teacher W.npy)")
    return np.asarray(td.teacher.W)


def _theory(gamma: float, eta: float, teacher_W: np.ndarray, K: int, beta: float) -> tuple[dict | None, str]:
    spikes = teacher.teacher_from_matrix(teacher_W).spikes
    if K != 2 or spikes.size != 1 or not spikes[0] > 1:
        return None, f"theory (docs/theory.md#6-divergences) needs K = 2 and a rank-one teacher with omega > 1 (K = {K}, spikes = {np.round(spikes, 6).tolist()})"
    omega = float(spikes[0])
    try:
        r = theory.teacher_student_kls(gamma, eta, omega)
        out = {"omega": omega, "phase": r.phase}
        if beta == 1.0:
            out |= {"fwd_typ": r.fwd_typ, "rev_typ": r.rev_typ, "fwd_pp": r.fwd_pp, "rev_pp": r.rev_pp}
            note = ""
        else:
            out |= {"fwd_typ": theory.forward_kl_typical_beta(gamma, eta, omega, beta), "rev_typ": None, "fwd_pp": None, "rev_pp": None}
            note = "at beta != 1 the theory (docs/theory.md#6-divergences) gives the typical forward KL only"
    except ValueError as exc:
        return None, f"theory undefined here: {exc}"
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}, note


def predict_run(
    run_dir,
    beta: float = 1.0,
    key=None,
    teacher_W=None,
    num_points: int = 2000,
    *,
    max_draws: int | None = None,
    teacher_name: str = "teacher_W",
) -> dict:
    """Typical and predictive KLs of a fitted run next to the large-N theory (THEORY.md §6, §7).

    Loads ``RUN/inference.nc``, ``RUN/data.npy`` and ``RUN/meta.json``;
    rebuilds the W draws from the posterior (``W`` if stored, else the latent
    ``z`` through :func:`bayes_sbm.inference.coupling_draws`, with the frame
    ``constant_data.Q`` when stored); takes the teacher from ``teacher_W``,
    else ``RUN/teacher.npy``, else regenerates it from the spec's data seed
    when the data source is ``"teacher"`` (checking that it reproduces
    ``data.npy``).

    Parameters
    ----------
    run_dir : path
    beta : float, default 1
        Sampling inverse temperature of the student and the predictive.
    key : PRNGKey, optional
        For the Monte Carlo predictive KLs (default ``jax.random.key(0)``).
    teacher_W : array_like, shape (N, N), optional
        Teacher couplings (required when the data are not from a seeded teacher).
    num_points : int, default 2000
        Points per direction for the predictive KLs.
    max_draws : int, optional
        Thin the draws evenly to at most this many (speed).
    teacher_name : str, default "teacher_W"
        How error messages name ``teacher_W`` (the CLI passes its option and file).

    Returns
    -------
    dict
        JSON-serialisable: run facts, ``typical`` and ``predictive`` values
        (absolute and per N, with standard errors, ESS, Jensen bias),
        ``theory`` (per N; None where THEORY.md has no value) and ``rows``
        (quantity, value_per_n, se_per_n, theory_per_n, difference) and
        ``warnings`` (:func:`predict_warnings`).
    """
    beta = _checks.positive_scalar("beta", beta)
    num_points = _checks.positive_int("num_points", num_points, minimum=2)
    if max_draws is not None:
        max_draws = _checks.positive_int("max_draws", max_draws)
    fit = _load_fitted_run(run_dir)
    run, data, gamma, eta = fit.path, fit.data, fit.gamma, fit.eta
    K, N = data.shape
    # the teacher before the posterior couplings: a wrong one fails before the heavy computing
    teacher_W, source = _resolve_teacher(fit, teacher_W, teacher_name)
    key = jax.random.key(0) if key is None else key
    latent = _latent_draws(fit, max_draws, "use 'bayes-sbm predict'")  # thinned before anything is built
    chains, draws = (latent.W if latent.W is not None else latent.z).shape[:2]
    if latent.z is not None and latent.problem.parametrization == "band" and N > BAND_PREDICTIVE_MAX_N:
        # typical KLs by the band route alone: the Monte Carlo predictive KLs would need S dense N × N draws
        typ = _typical_kl_function(fit, teacher_W, latent)(beta)
        pp = None
    else:
        # a band run's Haar rotations come from a fixed key, apart from the Monte Carlo's
        W = _rebuilt_couplings(N, latent, jax.random.key(0))
        typ = _typical_kl_function(fit, teacher_W, latent, W)(beta)
        pp = predictive.predictive_kls_mc(key, W, teacher_W, beta, num_points)
    theory_vals, theory_note = _theory(gamma, eta, teacher_W, K, beta)

    def entry(value, se, **extra):
        return {"value": value, "se": se, "per_n": value / N, "se_per_n": se / N} | extra

    result: dict[str, Any] = {
        "run": str(run),
        "N": N,
        "K": K,
        "gamma": gamma,
        "eta": eta,
        "beta": beta,
        "num_chains": chains,
        "num_draws": chains * draws,
        "teacher": source,
        "typical": {
            "forward": entry(typ.forward_mean, typ.forward_se, ess=typ.forward_ess),
            "reverse": entry(typ.reverse_mean, typ.reverse_se, ess=typ.reverse_ess),
        },
        "predictive": None if pp is None else {
            "num_points": pp.num_points,
            "forward": entry(pp.forward, pp.forward_se, bias=pp.forward_bias, bias_per_n=pp.forward_bias / N,
                             corrected_per_n=pp.forward_corrected / N, weight_ess=pp.forward_weight_ess,
                             min_weight_ess=pp.forward_weight_ess_min),
            "reverse": entry(pp.reverse, pp.reverse_se, bias=pp.reverse_bias, bias_per_n=pp.reverse_bias / N,
                             corrected_per_n=pp.reverse_corrected / N, weight_ess=pp.reverse_weight_ess,
                             min_weight_ess=pp.reverse_weight_ess_min),
            "bias_reliable": bool(min(pp.forward_weight_ess, pp.reverse_weight_ess) >= predictive.MIN_WEIGHT_ESS),
            "bias_note": predictive.BIAS_NOTE,
        },
        "predictive_note": None if pp is not None else (
            f"predictive KLs left out: a band run at N = {N} > {BAND_PREDICTIVE_MAX_N} would need {chains * draws} dense "
            f"N x N draws, and the log-mean-exp weights degenerate at large N (typical KLs are exact)"),
        "theory": theory_vals,
        "theory_note": theory_note,
    }
    rows = []
    for label, section, name, th in (
        ("typical forward <D(P*||P_W)>", "typical", "forward", "fwd_typ"),
        ("typical reverse <D(P_W||P*)>", "typical", "reverse", "rev_typ"),
        ("predictive forward D(P*||P_pp)", "predictive", "forward", "fwd_pp"),
        ("predictive reverse D(P_pp||P*)", "predictive", "reverse", "rev_pp"),
    ):
        if result[section] is None:
            continue
        e = result[section][name]
        t = None if theory_vals is None else theory_vals.get(th)
        rows.append({"quantity": label, "value_per_n": e["per_n"], "se_per_n": e["se_per_n"], "theory_per_n": t,
                     "difference": None if t is None else e["per_n"] - t})
    result["rows"] = rows
    result["warnings"] = predict_warnings(result)
    return result


def predict_warnings(result: dict) -> list[str]:
    """Why a :func:`predict_run` number cannot be trusted: non-finite values or SEs, a dominated log-mean-exp."""
    out = []
    for row in result.get("rows", []):
        value, se = _float(row.get("value_per_n")), _float(row.get("se_per_n"))
        if not math.isfinite(value):
            out.append(f"{row['quantity']}: the value is not finite ({value})")
        elif not math.isfinite(se):
            out.append(f"{row['quantity']}: standard error undefined ({se}): too few or constant draws")
    if not (result.get("predictive") or {}).get("bias_reliable", True):
        out.append("predictive: few effective draws per point: log-mean-exp is dominated by a few draws and its bias exceeds the estimate")
    return out


def format_predict(r: dict) -> str:
    """Table of typical and predictive KLs (per N) next to THEORY.md §6."""
    lines = [f"{'quantity (per N)':34s} {'finite N':>12s} {'± SE':>10s} {'theory':>12s} {'difference':>12s}"]
    for row in r["rows"]:
        th = row["theory_per_n"]
        th_text = f"{th:12.6f}" if th is not None else f"{'-':>12s}"
        diff_text = f"{row['difference']:+12.2e}" if row["difference"] is not None else f"{'-':>12s}"
        lines.append(f"{row['quantity']:34s} {row['value_per_n']:12.6f} {row['se_per_n']:10.2e} {th_text} {diff_text}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Held-out log posterior-predictive density (bayes-sbm predict RUN --heldout FILE)
# ---------------------------------------------------------------------------


class HeldoutReport(NamedTuple):
    """Held-out log densities of a run over a grid of β (densities w.r.t. the uniform measure on the sphere: uniform = 0).

    For each β and held-out point x (after the run's data transform):
    ``log P̂_pp(x) = log mean_s p(x | βW_s)`` over S posterior draws (exact
    log Z per draw, :func:`bayes_sbm.predictive.predictive_log_density_with_bias`)
    and the plug-in ``log p(x | βW̄)`` of the posterior-mean couplings
    ``W̄ = mean_s W_s``.

    Attributes
    ----------
    run : str
    N, num_points, num_draws : int
        Dimension, held-out points M, posterior draws S used.
    effective_draws : float
        S_eff behind the MCSE and bias: the bulk ESS of the run's training
        log-likelihood over the draws used, capped at S (S when unavailable).
    betas : ndarray (B,)
    log_density, mcse, bias, weight_ess : ndarray (B, M)
        Per point: the log-mean-exp, its delta-method Monte Carlo standard
        error ``sqrt((S/ESS_w − 1)/S_eff)``, its Jensen bias (≤ 0) and the
        weight ESS ``(Σw)²/Σw²``.
    mean, se, mean_mcse : ndarray (B,)
        Mean of ``log_density`` over the points, its standard error over
        points (sd/√M) and the mean MCSE (an upper bound on the Monte Carlo
        error of the mean: the points share the draws).
    median_weight_ess : ndarray (B,)
    plugin_log_density : ndarray (B, M)
    plugin_mean, plugin_se : ndarray (B,)
    best_beta, plugin_best_beta : float
        The β of the grid with the largest mean.
    transform : dict
        The run's data transform (:meth:`bayes_sbm.data.DataTransform.as_meta`).
    warnings : tuple of str
        :func:`heldout_warnings`.
    """

    run: str
    N: int
    num_points: int
    num_draws: int
    effective_draws: float
    betas: np.ndarray
    log_density: np.ndarray
    mcse: np.ndarray
    bias: np.ndarray
    weight_ess: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    mean_mcse: np.ndarray
    median_weight_ess: np.ndarray
    plugin_log_density: np.ndarray
    plugin_mean: np.ndarray
    plugin_se: np.ndarray
    best_beta: float
    plugin_best_beta: float
    transform: dict
    warnings: tuple

    def as_dict(self) -> dict:
        """JSON-ready: run facts, ``rows`` (one per β), ``best_beta``/``plugin_best_beta``, per-point arrays, warnings."""
        def num(v):
            v = float(v)
            return v if math.isfinite(v) else None

        rows = [
            {"beta": num(b), "mean": num(m), "se": num(se), "mean_mcse": num(mc), "mean_bias": num(np.mean(bias)),
             "median_weight_ess": num(ess), "min_weight_ess": num(np.min(w)),
             "plugin_mean": num(pm), "plugin_se": num(pse), "mean_per_n": num(m / self.N), "plugin_mean_per_n": num(pm / self.N)}
            for b, m, se, mc, bias, ess, w, pm, pse in zip(self.betas, self.mean, self.se, self.mean_mcse, self.bias,
                                                          self.median_weight_ess, self.weight_ess, self.plugin_mean, self.plugin_se)
        ]
        return {
            "run": self.run,
            "N": self.N,
            "num_points": self.num_points,
            "num_draws": self.num_draws,
            "effective_draws": num(self.effective_draws),
            "baseline_uniform": 0.0,
            "transform": self.transform,
            "rows": rows,
            "best_beta": num(self.best_beta),
            "plugin_best_beta": num(self.plugin_best_beta),
            "per_point": {
                "log_density": self.log_density.tolist(),
                "mcse": self.mcse.tolist(),
                "bias": self.bias.tolist(),
                "weight_ess": self.weight_ess.tolist(),
                "plugin_log_density": self.plugin_log_density.tolist(),
            },
            "bias_note": predictive.BIAS_NOTE,
            "warnings": list(self.warnings),
        }


def _effective_draws(dt, keep: np.ndarray, S: int) -> float:
    """Bulk ESS of the training log-likelihood (summed over points) over the kept draws, capped at S; S when unavailable."""
    try:
        ll = np.asarray(dt["log_likelihood"]["x"].values, dtype=np.float64)[:, keep]
    except (KeyError, IndexError, TypeError, ValueError):
        return float(S)
    total = ll.reshape(ll.shape[:2] + (-1,)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = _stats.ess(total, method="bulk")
    return float(min(S, e)) if math.isfinite(e) and e > 0 else float(S)


def heldout_report(run_dir, heldout_x, betas, key=None, max_draws: int | None = None, *,
                   heldout_name: str = "heldout_x") -> HeldoutReport:
    """Held-out log posterior-predictive density of a run over a grid of β, and of the plug-in model W̄.

    The held-out rows go through the run's recorded data transform
    (``RUN/transform.npz``; identity for runs without one) before they are
    scored.  For each β: per point ``log mean_s p(x | βW_s)`` (exact log Z per
    draw, with MCSE, Jensen bias and weight ESS), its mean over the points
    with the standard error over points, and the same for ``log p(x | βW̄)``,
    ``W̄`` the mean of the coupling draws; the β maximising each mean.

    Parameters
    ----------
    run_dir : path
        A run folder (:func:`bayes_sbm.runs.fit_spec`); dense or band.
    heldout_x : array_like, shape (M, N)
        Held-out rows in the coordinates of the run's data file.
    betas : sequence of float
        Sampling inverse temperatures, > 0.
    key : PRNGKey, optional
        For the Haar rotations of band runs (default ``jax.random.key(0)``).
    max_draws : int, optional
        Thin the draws evenly to at most this many (memory: S·N² numbers).
    heldout_name : str
        How errors name ``heldout_x`` (the CLI passes its option and file).

    Returns
    -------
    HeldoutReport
    """
    betas = np.asarray([_checks.positive_scalar("betas", b) for b in np.atleast_1d(np.asarray(betas, dtype=object))], dtype=np.float64)
    if betas.size == 0:
        raise ValueError("betas: need at least one beta")
    if max_draws is not None:
        max_draws = _checks.positive_int("max_draws", max_draws)
    fit = _load_fitted_run(run_dir)
    run, N = fit.path, fit.data.shape[1]
    X = np.asarray(heldout_x)
    if X.ndim == 2 and X.shape[1] != N:
        raise ValueError(f"{heldout_name}: has N = {X.shape[1]} columns, the run {run} has N = {N}")
    transform = load_run_transform(run, N)
    X = transform.apply(X, name=heldout_name)
    key = jax.random.key(0) if key is None else key
    W, keep = _coupling_draws(fit, key, max_draws, "evaluate held-out data")
    W = W.reshape((-1, N, N))
    S = W.shape[0]
    s_eff = _effective_draws(fit.dt, keep, S)
    W_bar = W.mean(axis=0)[None]

    M, B = X.shape[0], betas.size
    out = {k: np.empty((B, M)) for k in ("log_density", "mcse", "bias", "weight_ess", "plugin")}
    for i, beta in enumerate(betas):
        res = predictive.predictive_log_density_with_bias(X, W, float(beta), effective_draws=s_eff)
        rel_var = np.maximum(S / res.weight_ess - 1.0, 0.0)
        out["log_density"][i], out["bias"][i], out["weight_ess"][i] = res.log_density, res.bias, res.weight_ess
        out["mcse"][i] = np.sqrt(rel_var / s_eff)
        out["plugin"][i] = predictive.predictive_log_density(X, W_bar, float(beta))

    def mean_se(v):
        se = v.std(axis=1, ddof=1) / math.sqrt(M) if M > 1 else np.full(B, np.nan)
        return v.mean(axis=1), se

    mean, se = mean_se(out["log_density"])
    plugin_mean, plugin_se = mean_se(out["plugin"])

    def best(v):
        return float(betas[int(np.nanargmax(v))]) if np.any(np.isfinite(v)) else math.nan

    report = HeldoutReport(
        run=str(run), N=N, num_points=M, num_draws=S, effective_draws=s_eff, betas=betas,
        log_density=out["log_density"], mcse=out["mcse"], bias=out["bias"], weight_ess=out["weight_ess"],
        mean=mean, se=se, mean_mcse=out["mcse"].mean(axis=1), median_weight_ess=np.median(out["weight_ess"], axis=1),
        plugin_log_density=out["plugin"], plugin_mean=plugin_mean, plugin_se=plugin_se,
        best_beta=best(mean), plugin_best_beta=best(plugin_mean), transform=transform.as_meta(), warnings=(),
    )
    return report._replace(warnings=tuple(heldout_warnings(report)))


def heldout_warnings(report: HeldoutReport) -> list[str]:
    """Why a :func:`heldout_report` number cannot be trusted: non-finite values, few effective draws, a best β at the grid's edge."""
    out = []
    for b, m, ess in zip(report.betas, report.mean, report.median_weight_ess):
        if not math.isfinite(m):
            out.append(f"beta = {b:g}: the mean held-out log density is not finite ({m})")
        elif ess < predictive.MIN_WEIGHT_ESS:
            out.append(f"beta = {b:g}: median weight ESS {ess:.1f} < {predictive.MIN_WEIGHT_ESS:g}: the log-mean-exp is dominated "
                       "by a few draws and its bias exceeds the estimate (use more draws)")
    if report.num_points < 2:
        out.append("one held-out point: no standard error over points")
    if report.betas.size > 2:
        for label, b in (("posterior predictive", report.best_beta), ("plug-in", report.plugin_best_beta)):
            if math.isfinite(b) and b in (float(report.betas.min()), float(report.betas.max())):
                out.append(f"{label}: the best beta {b:g} is at the edge of the grid; extend the grid")
    return out


def format_heldout(r: dict) -> str:
    """Table of :meth:`HeldoutReport.as_dict`: mean held-out log density ± SE per β, posterior predictive and plug-in."""
    def cell(v, fmt):
        return format(v, fmt) if v is not None else "-"

    lines = [f"{'beta':>8s} {'log P_pp (mean)':>16s} {'± SE':>10s} {'MCSE':>10s} {'bias':>10s} {'med. ESS_w':>10s} "
             f"{'plug-in':>12s} {'± SE':>10s}"]
    for row in r["rows"]:
        mark = " *" if row["beta"] == r["best_beta"] else ""
        lines.append(f"{row['beta']:8.4g} {cell(row['mean'], '16.6f')} {cell(row['se'], '10.2e')} {cell(row['mean_mcse'], '10.2e')} "
                     f"{cell(row['mean_bias'], '+10.2e')} {cell(row['median_weight_ess'], '10.1f')} "
                     f"{cell(row['plugin_mean'], '12.6f')} {cell(row['plugin_se'], '10.2e')}{mark}")
    lines.append(f"best beta: {cell(r['best_beta'], 'g')} (posterior predictive), {cell(r['plugin_best_beta'], 'g')} (plug-in W-bar); "
                 "uniform baseline 0")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Coupling draws and generation (bayes-sbm generate RUN)
# ---------------------------------------------------------------------------


def run_coupling_draws(run_dir, key=None, max_draws: int | None = None) -> np.ndarray:
    """The posterior coupling draws of a run folder, shape (chain, draw, N, N).

    The stored ``W`` when the run has it, else rebuilt from the latent ``z``
    (:func:`bayes_sbm.inference.coupling_draws`, in the fit's frame), thinned
    evenly to at most ``max_draws`` before anything is built.

    Parameters
    ----------
    run_dir : path
        A run folder (:func:`bayes_sbm.runs.fit_spec`).
    key : PRNGKey, optional
        For the Haar rotations of band runs (default ``jax.random.key(0)``;
        dense runs use no randomness).
    max_draws : int, optional

    Returns
    -------
    ndarray, shape (chain, draw, N, N)
    """
    if max_draws is not None:
        max_draws = _checks.positive_int("max_draws", max_draws)
    fit = _load_fitted_run(run_dir)
    return _coupling_draws(fit, jax.random.key(0) if key is None else key, max_draws, "rebuild the couplings")[0]


class GeneratedSamples(NamedTuple):
    """Draws from a run's posterior predictive ``P_pp(x) = E_W[p(x | βW)]`` (THEORY.md §3).

    Attributes
    ----------
    run : str
    N : int
    beta : float
    num_draws : int
        Posterior draws the mixture is made of.
    points : ndarray, shape (M, N)
        Exact draws on the sphere ``|x|² = N`` (each from ``p(·|βW_s)`` for a
        posterior draw ``W_s`` picked uniformly at random).
    data : ndarray, shape (M, N)
        ``points`` mapped back through the run's data transform
        (:meth:`bayes_sbm.data.DataTransform.invert`): the data file's
        coordinates, each row with the training rows' mean norm when the
        transform projects.
    transform : dict
        :meth:`bayes_sbm.data.DataTransform.as_meta`.
    """

    run: str
    N: int
    beta: float
    num_draws: int
    points: np.ndarray
    data: np.ndarray
    transform: dict


def generate_samples(run_dir, key, num_samples: int, beta: float = 1.0, *, max_draws: int | None = None) -> GeneratedSamples:
    """``num_samples`` i.i.d. draws from a run's posterior predictive at β, in the data's coordinates.

    Parameters
    ----------
    run_dir : path
        A run folder (dense or band).
    key : PRNGKey
        Splits into the Haar rotations of band runs and the draws themselves.
    num_samples : int
        Number of points M, ≥ 1.
    beta : float, default 1
        Sampling inverse temperature, > 0.
    max_draws : int, optional
        Thin the posterior draws evenly to at most this many first.

    Returns
    -------
    GeneratedSamples
    """
    num_samples = _checks.positive_int("num_samples", num_samples)
    beta = _checks.positive_scalar("beta", beta)
    if max_draws is not None:
        max_draws = _checks.positive_int("max_draws", max_draws)
    fit = _load_fitted_run(run_dir)
    N = fit.data.shape[1]
    transform = load_run_transform(fit.path, N)
    k_rot, k_x = jax.random.split(key)
    W, _ = _coupling_draws(fit, k_rot, max_draws, "generate samples")
    W = W.reshape((-1, N, N))
    points = predictive.sample_predictive(k_x, W, beta, num_samples)
    return GeneratedSamples(str(fit.path), N, float(beta), int(W.shape[0]), points, transform.invert(points), transform.as_meta())
