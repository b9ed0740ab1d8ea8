"""NUTS and SVI for the tempered SBM posterior (THEORY.md §3–4).

Pure functions with an explicit PRNG key first, settings as frozen
dataclasses, results as NamedTuples:

* :func:`run_nuts` — NumPyro ``MCMC(NUTS)`` with several chains, chosen
  chain method, diagonal or dense mass matrix, optional checkpointing to a
  folder (resumable: the run continues from the last saved segment);
* :func:`run_svi` — NumPyro ``SVI`` with ``AutoNormal``,
  ``AutoLowRankMultivariateNormal`` or :func:`structured_guide` (GOE bulk
  mean-field plus a full-covariance block on the data-subspace coordinates of
  the aligned parametrisation); returns the ELBO trace and posterior draws;
* :func:`spectral_draws`, :func:`coupling_draws`, :func:`log_likelihood_draws`
  — the observables, couplings and untempered per-point log-likelihoods of
  latent draws (the run folder's DataTree is assembled by
  :func:`bayes_sbm.runs.to_datatree`).

Settings live in :mod:`bayes_sbm.settings`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import json
import operator
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, init_to_median, init_to_value
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro.infer.util import log_likelihood

from . import _checks, band
from . import model as sbm_model
from .data import DataFrame, data_frame
from .io import atomic_path
from .settings import NutsSettings, SviSettings

__all__ = [
    "PosteriorProblem",
    "NutsResult",
    "SviResult",
    "make_problem",
    "choose_chain_method",
    "run_nuts",
    "run_svi",
    "structured_guide",
    "make_guide",
    "spectral_draws",
    "band_draws",
    "coupling_draws",
    "log_likelihood_draws",
    "SAMPLE_STATS_FIELDS",
]

#: NumPyro extra fields collected by NUTS (energy and divergences for ArviZ's energy/BFMI plots).
SAMPLE_STATS_FIELDS = ("diverging", "energy", "potential_energy", "num_steps", "accept_prob", "adapt_state.step_size")


@dataclass(frozen=True)
class PosteriorProblem:
    """Data and hyperparameters of one tempered posterior (THEORY.md §3).

    Attributes
    ----------
    data : ndarray, shape (K, N)
    gamma, eta, beta : float
    parametrization : str
    frame : data.DataFrame
    """

    data: np.ndarray
    gamma: float
    eta: float
    beta: float
    parametrization: str
    frame: DataFrame
    gradient: str = "spectral"

    @property
    def N(self) -> int:
        return self.data.shape[1]

    @property
    def K(self) -> int:
        return self.data.shape[0]

    @property
    def latent_site(self) -> str:
        return sbm_model.latent_site(self.parametrization)

    @property
    def latent_dim(self) -> int:
        """Length of the latent vector (:func:`bayes_sbm.model.latent_dim`)."""
        return sbm_model.latent_dim(self.parametrization, self.N, self.frame.c.shape[0])

    def model_kwargs(self, store_W: bool = False) -> dict[str, Any]:
        return dict(
            data=self.data,
            gamma=self.gamma,
            eta=self.eta,
            beta=self.beta,
            parametrization=self.parametrization,
            store_W=store_W,
            frame=self.frame,
            gradient=self.gradient,
        )


def make_problem(
    data, gamma: float, eta: float, beta: float = 1.0, parametrization: str = "auto", gradient: str = "spectral"
) -> PosteriorProblem:
    """Validate data and hyperparameters and precompute the data frame."""
    _checks.one_of("gradient", gradient, ("spectral", "eigh"))
    sbm_model.validate_hyperparameters(gamma, eta, beta)
    frame = data_frame(data)
    r, N = frame.c.shape[0], frame.Q.shape[0]
    parametrization = sbm_model.choose_parametrization(parametrization, N, r)
    if parametrization == "band":
        sbm_model.band_width(r, N)  # ValueError unless r < N
    X = np.asarray(data, dtype=np.float64)
    return PosteriorProblem(X, float(gamma), float(eta), float(beta), parametrization, frame, gradient)


class NutsResult(NamedTuple):
    """Output of :func:`run_nuts`: ``samples`` and ``sample_stats`` arrays shaped (chain, draw, ...)."""

    samples: dict
    sample_stats: dict
    problem: PosteriorProblem
    settings: NutsSettings
    timing: dict

    def print_summary(self, prob: float = 0.9) -> None:
        """NumPyro's summary table (mean, sd, interval, n_eff, r_hat) of the spectral observables."""
        numpyro.diagnostics.print_summary({k: self.samples[k] for k in sbm_model.SPECTRAL_SITES}, prob=prob, group_by_chain=True)
        print(f"Number of divergences: {int(np.sum(self.sample_stats['diverging']))}")


class SviResult(NamedTuple):
    """Output of :func:`run_svi`: ``samples`` shaped (1, draw, ...), the ELBO trace (steps,), fitted params."""

    samples: dict
    elbo: np.ndarray
    params: dict
    guide: Any
    problem: PosteriorProblem
    settings: SviSettings
    timing: dict

    def print_summary(self, prob: float = 0.9) -> None:
        """Summary of the guide's draws (independent draws: n_eff measures Monte Carlo error, not guide bias)."""
        numpyro.diagnostics.print_summary({k: self.samples[k] for k in sbm_model.SPECTRAL_SITES}, prob=prob, group_by_chain=True)


#: Warned by :func:`run_nuts` (with a progress bar) when ``"auto"`` has to run several chains one after another;
#: Python's default warning filter shows it once per calling line.
SEQUENTIAL_CHAINS_HINT = (
    "chains run one after another: for parallel chains on CPU call jax.config.update('jax_num_cpu_devices', n) "
    "(or export JAX_NUM_CPU_DEVICES=n) before JAX's first computation; bayes-sbm fit does this itself"
)


def choose_chain_method(settings: NutsSettings) -> str:
    """Resolve ``"auto"``: parallel if ``jax.local_device_count() ≥ num_chains``, else sequential."""
    if settings.chain_method != "auto":
        return settings.chain_method
    if settings.num_chains > 1 and jax.local_device_count() >= settings.num_chains:
        return "parallel"
    return "sequential"


def _to_numpy(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a), jax.device_get(tree))


def _stats_from_extra(extra: dict) -> dict:
    stats = {
        "diverging": np.asarray(extra["diverging"], dtype=bool),
        "energy": np.asarray(extra["energy"]),
        "lp": -np.asarray(extra["potential_energy"]),
        "n_steps": np.asarray(extra["num_steps"]),
        "acceptance_rate": np.asarray(extra["accept_prob"]),
        "step_size": np.asarray(extra["adapt_state.step_size"]),
    }
    stats["tree_depth"] = np.floor(np.log2(stats["n_steps"] + 1)).astype(np.int64)
    return stats


def _raw_key(key) -> jnp.ndarray:
    """A legacy uint32 PRNG key (NumPyro's MCMC state and the checkpoints store these)."""
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return jnp.asarray(key, dtype=jnp.uint32)


def _checkpoint_signature(problem: PosteriorProblem, settings: NutsSettings, key) -> dict:
    """What must match for a checkpoint to be resumed: data, hyperparameters, settings, seed."""
    return {
        "gamma": problem.gamma,
        "eta": problem.eta,
        "parametrization": problem.parametrization,
        "data_sha": hashlib.sha256(problem.data.tobytes()).hexdigest(),
        "settings": dataclasses.asdict(settings) | {"progress_bar": None},
        "key": np.asarray(key).tolist(),
    }


#: Checkpoint files: arrays (NumPy .npz, loaded with ``allow_pickle=False``) and a JSON index with their SHA-256.
CHECKPOINT_ARRAYS = "nuts_checkpoint.npz"
CHECKPOINT_INDEX = "nuts_checkpoint.json"
#: Version of the checkpoint layout (a checkpoint of another version is refused, never guessed at).
CHECKPOINT_VERSION = 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _save_checkpoint(folder: Path, signature: dict, samples: dict, stats: dict, done: int, state, elapsed: float) -> None:
    """Write the draws so far and the sampler state as data only (npz + JSON), atomically.

    The JSON index names every array, records the state's tree structure and
    the npz's SHA-256; it is written last, so an index always describes a
    complete npz.
    """
    leaves, treedef = jax.tree_util.tree_flatten(_to_numpy(state))
    arrays = {f"samples/{k}": v for k, v in samples.items()} | {f"stats/{k}": v for k, v in stats.items()}
    arrays |= {f"state/{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    with atomic_path(folder / CHECKPOINT_ARRAYS) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        digest = _sha256(tmp)
    index = {
        "version": CHECKPOINT_VERSION,
        "signature": signature,
        "done": int(done),
        "elapsed": float(elapsed),
        "samples": sorted(samples),
        "stats": sorted(stats),
        "state_leaves": len(leaves),
        "state_tree": str(treedef),
        "sha256": digest,
    }
    with atomic_path(folder / CHECKPOINT_INDEX) as tmp:
        tmp.write_text(json.dumps(index, indent=1))


def _load_checkpoint(folder: Path, signature: dict, template_state):
    """``(samples, stats, done, state, elapsed)`` from a checkpoint folder whose index exists.

    Nothing here can run code: the index is JSON, the arrays are read with
    ``allow_pickle=False`` after their SHA-256 matched the index, and the
    sampler state is rebuilt on the tree structure of ``template_state``.
    Any mismatch raises ``ValueError`` naming the file.
    """
    index_path, arrays_path = folder / CHECKPOINT_INDEX, folder / CHECKPOINT_ARRAYS
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint_dir: {index_path} is not valid JSON ({exc}); remove the checkpoint folder") from None
    if not isinstance(index, dict) or index.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint_dir: {index_path} has an unknown layout; remove the checkpoint folder")
    if index.get("signature") != signature:
        raise ValueError(
            f"checkpoint_dir: {index_path} belongs to a different run (data, hyperparameters, settings or seed differ); "
            "remove it or choose another folder"
        )
    if not arrays_path.is_file() or _sha256(arrays_path) != index.get("sha256"):
        raise ValueError(f"checkpoint_dir: {arrays_path} is missing or does not match its index (SHA-256); remove the checkpoint folder")
    leaves, treedef = jax.tree_util.tree_flatten(template_state)
    if index.get("state_tree") != str(treedef) or index.get("state_leaves") != len(leaves):
        raise ValueError(f"checkpoint_dir: {index_path} holds a sampler state of another structure; remove the checkpoint folder")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            samples = {k: npz[f"samples/{k}"] for k in index["samples"]}
            stats = {k: npz[f"stats/{k}"] for k in index["stats"]}
            state_leaves = [npz[f"state/{i}"] for i in range(len(leaves))]
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"checkpoint_dir: {arrays_path} cannot be read ({exc}); remove the checkpoint folder") from None
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in state_leaves])
    return samples, stats, int(index["done"]), state, float(index["elapsed"])


class _SegmentRunner:
    """Post-warmup NUTS segments with one compilation per segment length (checkpointed runs).

    NumPyro's ``MCMC.run`` re-traces its sampling loop on every call, which
    made a checkpointed fit ~5× slower than an uninterrupted one; here a jitted
    ``lax.scan`` of ``kernel.sample`` is compiled once and applied chain by
    chain, and the model's deterministic sites come from the kernel's
    ``postprocess_fn`` on the collected latents.
    """

    def __init__(self, kernel, kwargs: dict, num_chains: int):
        self.kernel, self.kwargs, self.num_chains = kernel, kwargs, num_chains
        self._compiled: dict[int, Any] = {}
        self._postprocess = jax.jit(jax.vmap(kernel.postprocess_fn((), kwargs)))

    def _scan(self, length: int):
        if length not in self._compiled:
            kernel, kwargs = self.kernel, self.kwargs
            fields = operator.attrgetter(*SAMPLE_STATS_FIELDS)  # dotted names, as NumPyro's MCMC reads them

            def body(state, _):
                state = kernel.sample(state, (), kwargs)
                return state, (state.z, dict(zip(SAMPLE_STATS_FIELDS, fields(state))))

            self._compiled[length] = jax.jit(lambda state: lax.scan(body, state, None, length=length))
        return self._compiled[length]

    def run(self, state, length: int):
        """``(last_state, samples (chain, draw, ...), extra fields (chain, draw))`` of ``length`` more draws."""
        scan = self._scan(length)
        chains = self.num_chains
        states, zs, extras = [], [], []
        for c in range(chains):
            s_c = jax.tree_util.tree_map(lambda x: x[c], state) if chains > 1 else state
            s_c, (z, extra) = scan(s_c)
            states.append(s_c)
            zs.append(z)
            extras.append(extra)
        last = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states) if chains > 1 else states[0]
        samples = [self._postprocess(z) for z in zs]
        stack = lambda *xs: np.stack([np.asarray(x) for x in xs])  # noqa: E731
        return last, jax.tree_util.tree_map(stack, *samples), jax.tree_util.tree_map(stack, *extras)


def run_nuts(key, problem: PosteriorProblem, settings: NutsSettings = NutsSettings(), checkpoint_dir: str | os.PathLike | None = None) -> NutsResult:
    """Sample the tempered posterior with NUTS.

    Parameters
    ----------
    key : PRNGKey
    problem : PosteriorProblem
    settings : NutsSettings
    checkpoint_dir : path, optional
        If given, the run is split into segments of ``settings.checkpoint_every``
        draws; after each one the draws so far and the sampler state are written
        atomically to ``checkpoint_dir`` as data only (:data:`CHECKPOINT_ARRAYS`,
        an npz read with ``allow_pickle=False``, and the JSON index
        :data:`CHECKPOINT_INDEX` with its SHA-256).  Calling again with the
        same problem, settings and key resumes after the last segment.

    Returns
    -------
    NutsResult
        ``samples``: the latent site and the spectral sites, (chain, draw, ...);
        ``sample_stats``: diverging, energy, lp, n_steps, acceptance_rate,
        step_size, tree_depth; ``timing``: seconds for warmup+first segment
        and in total.
    """
    key = _raw_key(key)
    kernel = NUTS(
        sbm_model.sbm_posterior,
        target_accept_prob=settings.target_accept,
        dense_mass=settings.dense_mass,
        max_tree_depth=settings.max_tree_depth,
        init_strategy=init_to_median(num_samples=15),
    )
    segment = settings.checkpoint_every if (checkpoint_dir and settings.checkpoint_every > 0) else settings.num_samples
    segment = max(1, min(segment, settings.num_samples))
    chain_method = choose_chain_method(settings)
    if settings.chain_method == "auto" and chain_method == "sequential" and settings.num_chains > 1 and settings.progress_bar:
        warnings.warn(SEQUENTIAL_CHAINS_HINT, stacklevel=2)
    mcmc = MCMC(
        kernel,
        num_warmup=settings.num_warmup,
        num_samples=segment,
        num_chains=settings.num_chains,
        chain_method=chain_method,
        progress_bar=settings.progress_bar,
    )
    kwargs = problem.model_kwargs(store_W=False)
    signature = _checkpoint_signature(problem, settings, key)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    samples_parts: list[dict] = []
    stats_parts: list[dict] = []
    done = 0
    elapsed_before = 0.0
    if ckpt_dir is not None and (ckpt_dir / CHECKPOINT_INDEX).exists():
        # init gives the state's tree structure and readies kernel.sample for the resumed segments
        template = kernel.init(key, settings.num_warmup, None, model_args=(), model_kwargs=kwargs)
        samples, stats, done, state, elapsed_before = _load_checkpoint(ckpt_dir, signature, template)
        samples_parts, stats_parts = [samples], [stats]
        mcmc.post_warmup_state = state
        if settings.progress_bar:
            print(f"resuming at draw {done}/{settings.num_samples} from {ckpt_dir}")

    def cat(parts):
        return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}

    t0 = time.perf_counter()
    first_segment_time = None
    runner = None
    while done < settings.num_samples:
        this = min(segment, settings.num_samples - done)
        if mcmc.post_warmup_state is None:  # warmup and the first segment through NumPyro's MCMC
            mcmc.run(key, extra_fields=SAMPLE_STATS_FIELDS, **kwargs)
            jax.block_until_ready(mcmc.last_state)
            samples_parts.append(_to_numpy(mcmc.get_samples(group_by_chain=True)))
            stats_parts.append(_stats_from_extra(_to_numpy(mcmc.get_extra_fields(group_by_chain=True))))
            state = mcmc.last_state
        else:  # later segments: one compiled scan of kernel.sample, reused by every segment
            runner = runner or _SegmentRunner(kernel, kwargs, settings.num_chains)
            state, samples, extra = runner.run(mcmc.post_warmup_state, this)
            samples_parts.append(samples)
            stats_parts.append(_stats_from_extra(extra))
        if first_segment_time is None:
            first_segment_time = time.perf_counter() - t0
        done += this
        mcmc.post_warmup_state = state
        if ckpt_dir is not None:
            samples_parts, stats_parts = [cat(samples_parts)], [cat(stats_parts)]
            _save_checkpoint(ckpt_dir, signature, samples_parts[0], stats_parts[0], done, state,
                             elapsed_before + time.perf_counter() - t0)
            if settings.progress_bar:
                print(f"checkpoint: {done}/{settings.num_samples} draws saved in {ckpt_dir}")

    total = elapsed_before + time.perf_counter() - t0
    timing = {"total_s": total, "first_segment_s": first_segment_time or 0.0, "chain_method": chain_method}
    samples = cat(samples_parts)
    if problem.parametrization == "band":  # eigen-observables on the host, outside the gradient path
        samples |= spectral_draws(problem, samples[problem.latent_site])
    return NutsResult(samples, cat(stats_parts), problem, settings, timing)


# ---------------------------------------------------------------------------
# SVI
# ---------------------------------------------------------------------------


def structured_guide(problem: PosteriorProblem):
    """Guide built from the posterior's form and symmetry (aligned parametrisation).

    In the data frame the posterior is invariant under rotations of the bulk
    (the complement of the data subspace), which fixes its form: the
    coordinates split into

    * the signal block ``W'_{kl}``, ``k ≤ l < r`` (r(r+1)/2 numbers): a
      full-covariance Gaussian, mean initialised at the Gaussian-model
      posterior ``W = C/γ`` (THEORY.md §4 without the log Z term);
    * the cross rows ``(W'_{0j} … W'_{r−1,j})`` for each bulk index j ≥ r:
      i.i.d. r-vectors with mean 0 and one shared r×r covariance (they carry
      the fluctuations of the top eigenvector away from the data);
    * the GOE bulk: diagonal entries i.i.d. with one shared mean and scale,
      off-diagonal entries i.i.d. with mean 0 and one shared scale.

    So the guide has O(r²) parameters whatever N, far less gradient noise than
    a mean-field guide with 2·N(N+1)/2.  The blocks are sampled as auxiliary
    sites and assembled into ``z`` by a permutation (unit Jacobian, so the
    ``Delta`` carries no density).
    """
    if problem.parametrization != "aligned":
        raise ValueError(f"parametrization: the structured guide needs 'aligned', got {problem.parametrization!r}")
    N, r = problem.N, problem.frame.c.shape[0]
    rows, cols = np.triu_indices(N)
    dim = rows.size
    signal_idx = np.flatnonzero(cols < r)
    bulk_diag_idx = np.flatnonzero((rows == cols) & (rows >= r))
    bulk_off_idx = np.flatnonzero((rows != cols) & (rows >= r))
    # cross entries ordered as a (N - r, r) array: [j - r, i] -> index of (i, j)
    position = {(int(i), int(j)): n for n, (i, j) in enumerate(zip(rows, cols))}
    cross_idx = np.array([[position[(i, j)] for i in range(r)] for j in range(r, N)], dtype=np.int64).reshape(N - r, r)
    scales = sbm_model.goe_scales(N, problem.gamma * problem.eta)
    init_signal = np.zeros(signal_idx.size)
    for n, idx in enumerate(signal_idx):
        if rows[idx] == cols[idx]:
            init_signal[n] = problem.frame.c[rows[idx]] / problem.gamma / scales[idx]
    init_signal = jnp.asarray(init_signal)
    ns, nbd, nbo = signal_idx.size, bulk_diag_idx.size, bulk_off_idx.size

    def guide(*args, **kwargs):
        loc_s = numpyro.param("signal_loc", init_signal)
        tril_s = numpyro.param("signal_scale_tril", jnp.eye(ns), constraint=constraints.scaled_unit_lower_cholesky)
        tril_c = numpyro.param("cross_scale_tril", jnp.eye(r), constraint=constraints.scaled_unit_lower_cholesky)
        loc_d = numpyro.param("bulk_diag_loc", jnp.zeros(()))
        scale_d = numpyro.param("bulk_diag_scale", jnp.ones(()), constraint=constraints.softplus_positive)
        scale_o = numpyro.param("bulk_off_scale", jnp.ones(()), constraint=constraints.softplus_positive)
        aux = {"is_auxiliary": True}
        z_s = numpyro.sample("z_signal", dist.MultivariateNormal(loc_s, scale_tril=tril_s), infer=aux)
        lead = z_s.shape[:-1]
        z = jnp.zeros(lead + (dim,))
        z = z.at[..., signal_idx].set(z_s)
        if N > r:  # a bulk exists (N = r leaves only the signal block)
            z_c = numpyro.sample(
                "z_cross", dist.MultivariateNormal(jnp.zeros(r), scale_tril=tril_c).expand([N - r]).to_event(1), infer=aux
            )
            z = z.at[..., cross_idx.reshape(-1)].set(z_c.reshape(lead + (-1,)))
            z_d = numpyro.sample("z_bulk_diag", dist.Normal(loc_d, scale_d).expand([nbd]).to_event(1), infer=aux)
            z = z.at[..., bulk_diag_idx].set(z_d)
        if nbo > 0:
            z_o = numpyro.sample("z_bulk_off", dist.Normal(0.0, scale_o).expand([nbo]).to_event(1), infer=aux)
            z = z.at[..., bulk_off_idx].set(z_o)
        numpyro.sample("z", dist.Delta(z, event_dim=1))

    return guide


def make_guide(problem: PosteriorProblem, name: str, rank: int | None = None):
    """Guide by name: ``"normal"`` (AutoNormal), ``"lowrank"`` (AutoLowRankMultivariateNormal), ``"structured"``."""
    model = sbm_model.sbm_posterior
    if name == "normal":
        return AutoNormal(model, init_loc_fn=init_to_median(num_samples=15), init_scale=1.0)
    if name == "lowrank":
        return AutoLowRankMultivariateNormal(model, init_loc_fn=init_to_median(num_samples=15), init_scale=1.0, rank=rank)
    if name == "structured" and problem.parametrization == "band":
        # band coordinates are near-prior N(0, 1) except the data block: a mean-field guide started at the prior
        return AutoNormal(model, init_loc_fn=init_to_value(values={problem.latent_site: jnp.zeros(problem.latent_dim)}), init_scale=1.0)
    if name == "structured":
        return structured_guide(problem)
    raise ValueError(f"guide: expected 'normal', 'lowrank' or 'structured', got {name!r}")


def run_svi(key, problem: PosteriorProblem, settings: SviSettings = SviSettings()) -> SviResult:
    """Fit a guide by maximising the ELBO of the tempered model; draw from it.

    The ELBO is a lower bound on ``log Y_η`` (THEORY.md §3, normalised
    convention: the latent prior is the normalised GOE).

    Returns
    -------
    SviResult
        ``elbo`` = −loss per step, ``samples`` (1, num_draws, ...) with the
        latent site and the spectral sites.
    """
    k_fit, k_draw = jax.random.split(key)
    guide = make_guide(problem, settings.guide, settings.rank)
    decay = settings.final_lr_fraction ** (1.0 / max(1, settings.num_steps))
    schedule = lambda step: settings.learning_rate * decay**step  # noqa: E731
    svi = SVI(
        sbm_model.sbm_posterior,
        guide,
        numpyro.optim.Adam(schedule),
        Trace_ELBO(num_particles=settings.num_particles),
    )
    kwargs = problem.model_kwargs(store_W=False)
    t0 = time.perf_counter()
    result = svi.run(k_fit, settings.num_steps, progress_bar=settings.progress_bar, **kwargs)
    fit_time = time.perf_counter() - t0
    params = _to_numpy(result.params)
    site = problem.latent_site
    draws = Predictive(guide, params=params, num_samples=settings.num_draws, return_sites=[site])(k_draw, **kwargs)[site]
    latent = np.asarray(draws)[None]
    samples = {site: latent} | spectral_draws(problem, latent)
    timing = {"fit_s": fit_time, "total_s": time.perf_counter() - t0}
    return SviResult(samples, -np.asarray(result.losses), params, guide, problem, settings, timing)


# ---------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------


def _flatten_draws(latent):
    latent = np.asarray(latent)
    return latent.reshape((-1, latent.shape[-1])), latent.shape[:-1]


def band_draws(problem: PosteriorProblem, latent):
    """The band matrices T (``band.Band``, lower (..., m+1, N)) of band-model latent draws (..., dim)."""
    m = sbm_model.band_width(problem.frame.c.shape[0], problem.N)
    return sbm_model.band_from_latent_vector(jnp.asarray(latent), problem.N, m, problem.gamma * problem.eta)


def _haar(key, num: int, n: int) -> np.ndarray:
    """``num`` Haar-distributed orthogonal n×n matrices: QR of Gaussian matrices with R's diagonal made positive."""
    g = np.asarray(jax.random.normal(key, (num, n, n), dtype=jnp.float64))
    q, r = np.linalg.qr(g)
    return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]


def _rotate_band(T: band.Band, H: np.ndarray) -> np.ndarray:
    """``P T Pᵀ`` with ``P = diag(I_m, H)`` by blocks (THEORY.md §8): T (S draws), H (S, N−m, N−m) → (S, N, N).

    The kept block ``T[:m, :m]`` stays, the cross block is ``H T[m:, :m]`` and
    the bulk ``H T₂₂ Hᵀ``, where ``H T₂₂`` costs O(N²m) from the band storage:
    one dense (N−m)³ product per draw instead of two N³ ones with a dense P.
    """
    lower = np.asarray(T.lower)  # entries outside the matrix are 0 (band_from_latent)
    W = np.array(T.to_dense())
    m, N = lower.shape[-2] - 1, lower.shape[-1]
    n = N - m
    W[:, m:, :m] = H @ W[:, m:, :m]
    W[:, :m, m:] = np.swapaxes(W[:, m:, :m], -1, -2)
    # (H T₂₂)[:, j] = Σ_k H[:, j+k] T₂₂[j+k, j] + Σ_k H[:, j−k] T₂₂[j, j−k], T₂₂[j+k, j] = lower[k, m+j+k]
    HT = H * lower[:, None, 0, m:]
    for k in range(1, min(m, n - 1) + 1):
        d = lower[:, None, k, m + k :]
        HT[..., : n - k] += H[..., k:] * d
        HT[..., k:] += H[..., : n - k] * d
    W[:, m:, m:] = HT @ np.swapaxes(H, -1, -2)
    return W


def spectral_draws(problem: PosteriorProblem, latent) -> dict:
    """Spectral sites of THEORY.md §4 for latent draws (..., dim) → dict of (..., *site_shape).

    Dense parametrisations evaluate the model's deterministic sites; the band
    model computes them on the host from T with a banded eigensolver
    (:func:`bayes_sbm.band.observables`), no N×N matrix.
    """
    flat, lead = _flatten_draws(latent)
    if problem.parametrization == "band":
        obs = band.observables(band_draws(problem, flat), problem.frame.c.shape[0])  # r + 1 ≤ N eigenvalues
        out = {
            "lam_top": obs.eigenvalues,
            "u": obs.overlaps,
            "M": obs.condensate,
            "signal": obs.signal,
            "mu": obs.mu,
            "log_z_per_n": obs.log_z_per_n,
        }
    else:
        pred = Predictive(
            sbm_model.sbm_posterior,
            posterior_samples={problem.latent_site: jnp.asarray(flat)},
            return_sites=list(sbm_model.SPECTRAL_SITES),
            batch_ndims=1,
        )
        out = pred(jax.random.PRNGKey(0), **problem.model_kwargs(store_W=False))
    return {k: np.asarray(v).reshape(lead + np.shape(v)[1:]) for k, v in out.items()}


def coupling_draws(problem: PosteriorProblem, latent, frame_coordinates: bool = False, key=None):
    """Coupling matrices W for latent draws (..., dim) → (..., N, N).

    With ``frame_coordinates=True`` (aligned and band parametrisations)
    returns W' = QᵀWQ.  For the band model, ``W' = diag(I_m, H) T diag(I_m, H)ᵀ``
    with a fresh Haar H ∈ O(N − m) per draw (THEORY.md §8: an exact
    posterior draw of W), drawn from ``key`` (default ``jax.random.key(0)``).
    """
    flat, lead = _flatten_draws(latent)
    N = problem.N
    if problem.parametrization == "band":
        T = band_draws(problem, flat)
        H = _haar(jax.random.key(0) if key is None else key, flat.shape[0], N - T.m)
        W = _rotate_band(T, H)
        if not frame_coordinates:
            Q = problem.frame.Q
            W = Q @ W @ Q.T
        return W.reshape(lead + (N, N))
    upper = jnp.asarray(flat)
    if problem.parametrization != "centred":
        upper = upper * jnp.asarray(sbm_model.goe_scales(N, problem.gamma * problem.eta))
    W = sbm_model.symmetric_from_upper(upper, N)
    if problem.parametrization == "aligned" and not frame_coordinates:
        Q = jnp.asarray(problem.frame.Q)
        W = Q @ W @ Q.T
    return np.asarray(W).reshape(lead + (N, N))


def log_likelihood_draws(problem: PosteriorProblem, latent) -> np.ndarray:
    """Untempered per-point log-likelihood ``log p(x_a | W)`` for latent draws (..., dim) → (..., K).

    Uses ``numpyro.infer.util.log_likelihood``, which ignores the η scale.
    """
    flat, lead = _flatten_draws(latent)
    ll = log_likelihood(
        sbm_model.sbm_posterior,
        {problem.latent_site: jnp.asarray(flat)},
        batch_ndims=1,
        **problem.model_kwargs(store_W=False),
    )["x"]
    return np.asarray(ll).reshape(lead + (problem.K,))
