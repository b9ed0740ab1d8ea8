"""Posterior summaries against the large-N theory, and sampler diagnostics.

Computation only (no plotting; see :mod:`bayes_sbm.plots` for figures). Works
on the run DataTree written by :func:`bayes_sbm.runs.to_datatree`:

* :func:`theory_from_datatree` — THEORY.md §4 values of the spectral
  observables (``lam_top``, ``u``, ``M``, ``signal``, ``mu``,
  ``log_z_per_n``) from :func:`bayes_sbm.theory.observable_reference`;
* :func:`summary_table` — ArviZ summary (mean, sd, MCSE, bulk/tail ESS,
  R-hat) of those observables with a ``theory`` and a ``diff = mean −
  theory`` column;
* :func:`sampling_report` — divergences, BFMI per chain, worst ESS and R-hat
  (NUTS), or what is available for SVI draws, with warnings for every number
  that cannot be trusted (stuck or sticky chains, acceptance ≈ 0, NaN ESS);
* :func:`convergence_warnings` — those warnings alone (``fit`` and
  ``diagnose`` print the same list);
* :func:`comparison_table` — one row per run (γ, η, phase, λ_1, u_1, M);
* :func:`write_summary_csv`, :func:`format_table` — output.

Tables are plain :class:`Table` objects (column names and row dicts, no
pandas or xarray), so they print, compare and serialise without surprises.

Theory conventions (THEORY.md §2, §4): with κ = γη, ``a_k = η c_k``:

* ``lam_top`` — λ_k of §4 for the r data modes (μ for condensed modes, the
  BBP position ``1/a_k + a_k/κ`` for paramagnetic outliers, the bulk edge
  ``ℓ = 2/√κ`` otherwise), followed by ℓ for rank r + 1 (the top of the GOE
  bulk, which every non-outlier eigenvalue sticks to); ranks beyond r + 1
  have no theory value (NaN in the tables);
* ``u`` — ``u_k`` (overlap² of the top eigenvector with e_k);
* ``M`` — the condensate; ``mu`` — the Lagrange multiplier;
* ``signal`` — ``(ξ_k − 1)/a_k`` (``c_k/γ`` in PM);
* ``log_z_per_n`` — ``½ (S(μ_Z) − 1)`` with ``S(μ_Z) = μ_Z − g_Z²/(2κ) +
  log g_Z`` (§2 with §5's μ_Z, g_Z; ``1/(4κ)`` in PM).
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np

from . import theory
from .io import write_text_atomic

__all__ = [
    "SPECTRAL",
    "SUMMARY_COLUMNS",
    "RHAT_WARN",
    "Table",
    "run_parameters",
    "theory_from_datatree",
    "theory_component",
    "summary_table",
    "sampling_report",
    "convergence_warnings",
    "comparison_table",
    "format_table",
    "format_report",
    "write_summary_csv",
]

#: The spectral observables of THEORY.md §4 stored in the ``posterior`` group.
SPECTRAL = ("lam_top", "u", "M", "signal", "mu", "log_z_per_n")

#: Columns of :func:`summary_table` after ``variable``.
SUMMARY_COLUMNS = ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat", "theory", "diff")

#: R-hat above this is reported as a warning by :func:`sampling_report`
#: (the rank-normalised split R-hat recommendation of Vehtari et al. 2021).
RHAT_WARN = 1.01

#: ESS (bulk or tail) below this per chain is reported as a warning.
_ESS_PER_CHAIN_WARN = 100

#: BFMI below this is reported as a warning (ArviZ's threshold).
_BFMI_WARN = 0.3

#: A chain whose mean acceptance probability is below this is reported as stuck.
_ACCEPT_STUCK = 0.01

#: A chain in which more than this fraction of draws repeats the previous one is reported as sticky.
_REPEAT_WARN = 0.5


# --------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """A small column-oriented table: column names and one dict per row.

    Attributes
    ----------
    columns : tuple of str
        Column names, in order (the first one labels the rows).
    rows : tuple of dict
        One mapping ``column -> value`` per row (str or float values).
    """

    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> list[str]:
        """Values of the first column (row labels)."""
        key = self.columns[0]
        return [str(r[key]) for r in self.rows]

    def column(self, name: str) -> np.ndarray:
        """One column as an array (float when every entry is numeric).

        Parameters
        ----------
        name : str

        Returns
        -------
        ndarray, shape (len(self),)
        """
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns are {list(self.columns)}")
        values = [r.get(name) for r in self.rows]
        try:
            return np.array(values, dtype=float)
        except (TypeError, ValueError):
            return np.array(values, dtype=object)

    def row(self, label: str) -> dict[str, Any]:
        """The row whose first column equals ``label``."""
        for r, lab in zip(self.rows, self.labels):
            if lab == label:
                return r
        raise KeyError(f"no row {label!r}; rows are {self.labels}")


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------------
# theory
# --------------------------------------------------------------------------
def run_parameters(dt, meta: dict | None = None) -> tuple[np.ndarray, float, float]:
    """``(c, gamma, eta)`` of a run: from ``constant_data``, else from ``meta``.

    Parameters
    ----------
    dt : DataTree
        Run DataTree (``constant_data`` with ``c``, ``gamma``, ``eta``).
    meta : dict, optional
        Run ``meta.json`` contents (``"c"`` and ``spec.model.gamma/eta``).

    Returns
    -------
    c : ndarray, shape (r,)
    gamma, eta : float

    Raises
    ------
    ValueError
        Neither source has all three.
    """
    if "constant_data" in dt.children:
        cd = dt["constant_data"]
        if all(k in cd.data_vars for k in ("c", "gamma", "eta")):
            return np.asarray(cd["c"].values, dtype=float), float(cd["gamma"].values), float(cd["eta"].values)
    meta = meta or {}
    model = (meta.get("spec") or {}).get("model") or {}
    if "c" in meta and "gamma" in model and "eta" in model:
        return np.asarray(meta["c"], dtype=float), float(model["gamma"]), float(model["eta"])
    raise ValueError("run has no data eigenvalues c and hyperparameters gamma, eta (constant_data or meta.json)")


def theory_from_datatree(dt, meta: dict | None = None) -> dict[str, Any] | None:
    """The run's theory reference (:func:`bayes_sbm.theory.observable_reference` as a dict), or None.

    Read from ``meta["theory"]`` (written by the fit), else computed from the
    run's c, γ, η; ``None`` when neither is possible.

    Parameters
    ----------
    dt : DataTree
    meta : dict, optional
        See :func:`run_parameters`.

    Returns
    -------
    dict or None
    """
    stored = (meta or {}).get("theory")
    if isinstance(stored, dict) and "lam_top" in stored:
        return stored
    try:
        c, gamma, eta = run_parameters(dt, meta)
        return theory.observable_reference(c, gamma, eta).as_dict()
    except ValueError:
        return None


def theory_component(theory: dict | None, name: str, index: int | None) -> float:
    """THEORY value of component ``index`` (flat, 0-based; None for a scalar) of variable ``name``; NaN if there is none."""
    if not theory or name not in theory:
        return math.nan
    try:
        value = np.ravel(np.asarray(theory[name], dtype=float))
    except (TypeError, ValueError):
        return math.nan
    i = 0 if index is None else index
    return float(value[i]) if i < value.size else math.nan


def _method(dt) -> str:
    """``"nuts"`` or ``"svi"``: the tree's ``method`` attribute, else whether it has sampler statistics."""
    return str(dt.attrs.get("method", "nuts" if _has_sample_stats(dt) else "svi"))


def _has_sample_stats(dt) -> bool:
    return "sample_stats" in dt.children and len(dt["sample_stats"].data_vars) > 0


# --------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------
def _component_labels(da) -> list[str]:
    """ArviZ-style labels ``name[i,j]`` of the non-sample components of ``da``."""
    dims = [d for d in da.dims if d not in ("chain", "draw", "summary")]
    if not dims:
        return [str(da.name)]
    coords = [
        da[d].values if d in da.coords else np.arange(da.sizes[d])
        for d in dims
    ]
    labels = []
    for idx in np.ndindex(*[da.sizes[d] for d in dims]):
        labels.append(f"{da.name}[" + ",".join(str(coords[i][j]) for i, j in enumerate(idx)) + "]")
    return labels


def _posterior_vars(dt, var_names) -> list[str]:
    if "posterior" not in dt.children:
        raise ValueError("the DataTree has no posterior group")
    present = list(dt["posterior"].data_vars)
    names = [v for v in var_names if v in present]
    if not names:
        raise ValueError(f"none of {list(var_names)} is in the posterior (it has {present})")
    return names


def summary_table(dt, var_names=SPECTRAL, theory: dict | None = None, meta: dict | None = None) -> Table:
    """ArviZ summary of the spectral observables with theory and difference.

    Parameters
    ----------
    dt : DataTree
        Run DataTree with a ``posterior`` group (dims ``chain, draw, ...``).
    var_names : sequence of str, default :data:`SPECTRAL`
        Posterior variables to summarise; names absent from the posterior are
        skipped (at least one must be present).
    theory : dict, optional
        :func:`theory_from_datatree` output; by default computed from the run's
        ``constant_data`` (or ``meta``); NaN theory when unavailable.
    meta : dict, optional
        Run metadata, only used to find c, γ, η when ``theory`` is None.

    Returns
    -------
    Table
        Columns ``variable`` and :data:`SUMMARY_COLUMNS`; one row per scalar
        component (``lam_top[0]`` is λ_1). ``r_hat`` is NaN for one chain;
        ``mcse_mean``, ESS and ``r_hat`` are NaN for a component whose draws
        are all identical (undefined; :func:`sampling_report` warns);
        ``theory`` and ``diff`` are NaN where THEORY has no value.
    """
    names = _posterior_vars(dt, var_names)
    if theory is None:
        theory = theory_from_datatree(dt, meta)
    with np.errstate(invalid="ignore", divide="ignore"), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: NaN ESS/R-hat, reported by sampling_report
        summ = az.summary(dt, var_names=names, kind="all", fmt="xarray", round_to="none")
    rows = []
    for name in names:
        da = summ[name]
        labels = _component_labels(da)
        other = [d for d in da.dims if d != "summary"]
        stats = {
            col: np.ravel(da.sel(summary=col).transpose(*other).values) if col in da["summary"].values else None
            for col in SUMMARY_COLUMNS[:6]
        }
        draws = dt["posterior"][name]
        values = np.asarray(draws.transpose("chain", "draw", *other).values, dtype=float).reshape(-1, len(labels))
        with np.errstate(invalid="ignore"):
            constant = np.ptp(values, axis=0) == 0 if values.shape[0] else np.ones(len(labels), dtype=bool)
        for i, label in enumerate(labels):
            row: dict[str, Any] = {"variable": label}
            for col in SUMMARY_COLUMNS[:6]:
                row[col] = float(stats[col][i]) if stats[col] is not None else math.nan
            if constant[i]:  # constant draws: ArviZ reports ESS = draws, but no effective sample size is defined
                row.update(mcse_mean=math.nan, ess_bulk=math.nan, ess_tail=math.nan, r_hat=math.nan)
            th = theory_component(theory, name, i)
            row["theory"] = th
            row["diff"] = row["mean"] - th
            rows.append(row)
    return Table(("variable", *SUMMARY_COLUMNS), tuple(rows))


# --------------------------------------------------------------------------
# sampler report
# --------------------------------------------------------------------------
def _sample_sizes(dt) -> tuple[int, int]:
    post = dt["posterior"]
    return int(post.sizes.get("chain", 1)), int(post.sizes.get("draw", 0))


def sampling_report(dt, var_names=SPECTRAL, meta: dict | None = None, table: Table | None = None) -> dict[str, Any]:
    """Sampler diagnostics of a run.

    Parameters
    ----------
    dt : DataTree
        Run DataTree. NUTS runs have a ``sample_stats`` group (``diverging``,
        ``energy``, ``acceptance_rate``, ``step_size``, ``tree_depth``,
        ``n_steps``); SVI runs have one chain and none.
    var_names : sequence of str, default :data:`SPECTRAL`
        Variables over which the worst ESS and R-hat are taken.
    meta : dict, optional
        Run metadata; its ``latent_summary`` (worst ESS/R-hat over every
        latent coordinate) and ``timing`` are copied into the report.
    table : Table, optional
        A :func:`summary_table` of the same run, to avoid recomputing it.

    Returns
    -------
    dict
        ``method`` ("nuts" or "svi"), ``chains``, ``draws``, ``min_ess_bulk``,
        ``min_ess_tail`` (with the variable reaching them), ``max_r_hat`` (NaN
        for one chain) and ``argmax_r_hat``; for NUTS also ``divergences``,
        ``divergence_rate``, ``bfmi`` (list, per chain), ``min_bfmi``,
        ``mean_acceptance`` (and ``acceptance_per_chain``),
        ``max_tree_depth``, ``step_size`` (per chain); ``stuck_chains`` and
        ``repeat_fraction`` (per chain: the share of draws equal to the
        previous one); ``latent_summary`` and ``timing`` when in ``meta``;
        ``warnings``, a list of human-readable problems (empty when none):
        low or undefined ESS, R-hat > :data:`RHAT_WARN` (spectral and latent),
        divergences, low BFMI, chains that never move (all draws identical,
        acceptance ≈ 0, a variable with zero variance within a chain, stuck
        latent coordinates) and non-finite draws.
    """
    chains, draws = _sample_sizes(dt)
    has_stats = _has_sample_stats(dt)
    method = _method(dt)
    if table is None:
        table = summary_table(dt, var_names, theory={})
    report: dict[str, Any] = {"method": method, "chains": chains, "draws": draws}
    warnings: list[str] = []

    ess_b, ess_t, rhat = table.column("ess_bulk"), table.column("ess_tail"), table.column("r_hat")
    labels = table.labels
    for key, values in (("ess_bulk", ess_b), ("ess_tail", ess_t)):
        if values.size and np.any(np.isfinite(values)):
            i = int(np.nanargmin(values))
            report[f"min_{key}"] = float(values[i])
            report[f"argmin_{key}"] = labels[i]
        else:
            report[f"min_{key}"] = math.nan
            report[f"argmin_{key}"] = None
        if report[f"min_{key}"] < _ESS_PER_CHAIN_WARN * chains:
            warnings.append(
                f"low ESS ({key.split('_')[1]}) {report[f'min_{key}']:.0f} < {_ESS_PER_CHAIN_WARN * chains} "
                f"({_ESS_PER_CHAIN_WARN} per chain) for {report[f'argmin_{key}']}"
            )
    undefined = [lab for lab, b, t in zip(labels, ess_b, ess_t) if not (math.isfinite(b) and math.isfinite(t))]
    if undefined:
        warnings.append(f"ESS undefined (NaN) for {_listed(undefined)}: constant or non-finite draws, the estimates cannot be trusted")
    if chains > 1 and rhat.size and np.any(np.isfinite(rhat)):
        i = int(np.nanargmax(rhat))
        report["max_r_hat"] = float(rhat[i])
        report["argmax_r_hat"] = labels[i]
        bad = [f"{lab} ({r:.3f})" for lab, r in zip(labels, rhat) if r > RHAT_WARN]
        if bad:
            warnings.append(f"R-hat > {RHAT_WARN} for {len(bad)} component(s): " + ", ".join(bad))
    else:
        report["max_r_hat"] = math.nan
        report["argmax_r_hat"] = None
    if chains > 1:
        no_rhat = [lab for lab, r in zip(labels, rhat) if not math.isfinite(r)]
        if no_rhat:
            warnings.append(f"R-hat undefined (NaN) for {_listed(no_rhat)}: constant or non-finite draws")

    warnings += _stuck_chains(dt, var_names, report)

    if has_stats:
        ss = dt["sample_stats"]
        if "diverging" in ss.data_vars:
            div = np.asarray(ss["diverging"].values, dtype=bool)
            report["divergences"] = int(div.sum())
            report["divergence_rate"] = float(div.mean()) if div.size else math.nan
            if report["divergences"]:
                warnings.append(f"{report['divergences']} divergent transition(s) ({100 * report['divergence_rate']:.2f} %)")
        if "energy" in ss.data_vars and draws > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                bfmi = np.atleast_1d(np.asarray(az.bfmi(dt)["energy"].values, dtype=float))
            report["bfmi"] = [float(b) for b in bfmi]
            report["min_bfmi"] = float(np.min(bfmi))
            low = [i for i, b in enumerate(bfmi) if b < _BFMI_WARN]
            if low:
                warnings.append(f"BFMI < {_BFMI_WARN} in chain(s) {low}")
        if "acceptance_rate" in ss.data_vars:
            acc = np.asarray(ss["acceptance_rate"].values, dtype=float)
            per_chain = acc.reshape(acc.shape[0], -1).mean(axis=1) if acc.ndim >= 1 else np.atleast_1d(acc)
            report["mean_acceptance"] = float(np.mean(acc))
            report["acceptance_per_chain"] = [float(a) for a in per_chain]
            low = [i for i, a in enumerate(per_chain) if not a >= _ACCEPT_STUCK]
            if low:
                warnings.append(
                    f"acceptance rate ~ 0 in chain(s) {low} (mean {_listed([f'{per_chain[i]:.3g}' for i in low])} < {_ACCEPT_STUCK:g}): "
                    "the sampler is stuck"
                )
        if "tree_depth" in ss.data_vars:
            report["max_tree_depth"] = int(np.max(ss["tree_depth"].values))
        if "step_size" in ss.data_vars:
            step = np.asarray(ss["step_size"].values, dtype=float)
            report["step_size"] = [float(s) for s in step.reshape(step.shape[0], -1).mean(axis=1)] if step.ndim >= 1 else [float(step)]
    elif chains == 1:
        # SVI: independent draws from the guide; ESS ≈ draws, R-hat undefined.
        report["note"] = "single chain of independent guide draws: R-hat undefined, no sampler statistics"
    if meta:
        ls = meta.get("latent_summary")
        if isinstance(ls, dict):
            report["latent_summary"] = dict(ls)
            r = _num(ls.get("max_r_hat"))
            if r > RHAT_WARN:
                warnings.append(f"latent coordinates: max R-hat {r:.3f} > {RHAT_WARN}")
            stuck = _num(ls.get("stuck_coordinates"))
            if stuck > 0:
                warnings.append(f"latent coordinates: {stuck:.0f} of {ls.get('dim', '?')} never move (stuck chain); ESS and R-hat are undefined")
            elif "min_ess_bulk" in ls and not math.isfinite(_num(ls.get("min_ess_bulk"))):
                warnings.append("latent coordinates: ESS undefined (NaN)")
        if isinstance(meta.get("timing"), dict):
            report["timing"] = dict(meta["timing"])
        if "elbo_final" in meta:
            report["elbo_final"] = _num(meta["elbo_final"])
    report["warnings"] = warnings
    return report


def convergence_warnings(dt, meta: dict | None = None, table: Table | None = None, var_names=SPECTRAL) -> list[str]:
    """Every reason not to trust a run's draws, one human-readable line each (empty when none).

    The one source of the warnings printed by ``bayes-sbm fit`` (through
    :func:`bayes_sbm.reports.posterior_table`), stored in ``meta.json`` and
    printed by ``bayes-sbm diagnose``: it is ``sampling_report(...)["warnings"]``.

    Parameters
    ----------
    dt : DataTree
    meta : dict, optional
        Run metadata (its ``latent_summary`` adds the latent R-hat and stuck coordinates).
    table : Table, optional
        A :func:`summary_table` of the same run, to avoid recomputing it.
    var_names : sequence of str, default :data:`SPECTRAL`

    Returns
    -------
    list of str
    """
    return list(sampling_report(dt, var_names, meta=meta, table=table)["warnings"])


def _listed(items, limit: int = 6) -> str:
    items = [str(i) for i in items]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


def _stuck_chains(dt, var_names, report: dict[str, Any]) -> list[str]:
    """Warnings for chains that never move, repeat draws, have a constant variable, or non-finite draws.

    Fills ``report["stuck_chains"]`` and ``report["repeat_fraction"]``.
    """
    post = dt["posterior"]
    names = [n for n in var_names if n in post.data_vars]
    chains, draws = _sample_sizes(dt)
    if not names or draws < 1:
        return []
    same_step = np.ones((chains, max(draws - 1, 0)), dtype=bool)
    constant: list[tuple[int, str]] = []
    nonfinite: list[str] = []
    for name in names:
        da = post[name]
        other = [d for d in da.dims if d not in ("chain", "draw")]
        v = np.asarray(da.transpose("chain", "draw", *other).values, dtype=float).reshape(chains, draws, -1)
        labels = _component_labels(da)
        finite = np.isfinite(v)
        if not finite.all():
            nonfinite += [labels[k] for k in np.flatnonzero(~finite.all(axis=(0, 1)))]
        same_step &= np.all(v[:, 1:] == v[:, :-1], axis=2)
        if draws > 1:
            with np.errstate(invalid="ignore"):
                flat = np.ptp(v, axis=1) == 0  # (chain, component)
            constant += [(int(c), labels[k]) for c, k in np.argwhere(flat)]
    warnings = []
    frozen = [c for c in range(chains) if draws > 1 and same_step[c].all()]
    repeat = same_step.mean(axis=1) if draws > 1 else np.zeros(chains)
    report["stuck_chains"] = frozen
    report["repeat_fraction"] = [float(r) for r in repeat]
    if frozen:
        warnings.append(f"stuck chain(s) {frozen}: all {draws} draws identical (the sampler never moved); "
                        "means, ESS and R-hat of the run cannot be trusted")
    sticky = [c for c in range(chains) if c not in frozen and repeat[c] > _REPEAT_WARN]
    if sticky:
        warnings.append(f"sticky chain(s) {sticky}: {_listed([f'{100 * repeat[c]:.0f} %' for c in sticky])} of consecutive draws "
                        f"identical (> {100 * _REPEAT_WARN:.0f} %): the chain barely moves")
    flat_vars = [f"{lab} (chain {c})" for c, lab in constant if c not in frozen]
    if flat_vars:
        warnings.append(f"zero variance within a chain: {_listed(flat_vars)}: that chain does not explore the variable")
    if nonfinite:
        warnings.append(f"non-finite draws (NaN or inf) in {_listed(nonfinite)}")
    return warnings


# --------------------------------------------------------------------------
# comparison across runs
# --------------------------------------------------------------------------
_COMPARE_OBS = (("lam_1", "lam_top", 0), ("u_1", "u", 0), ("M", "M", None))


def _run_size(dt, meta: dict | None) -> float:
    if "N" in dt.attrs:
        return _num(dt.attrs["N"])
    model = ((meta or {}).get("spec") or {}).get("model") or {}
    if "N" in model:
        return _num(model["N"])
    if "observed_data" in dt.children and "x" in dt["observed_data"].data_vars:
        return float(dt["observed_data"]["x"].shape[-1])
    return math.nan


def comparison_table(dts: dict, metas: dict | None = None, theories: dict | None = None) -> Table:
    """One row per run: N, γ, η, method, phase and λ_1, u_1, M against theory.

    Parameters
    ----------
    dts : dict of str to DataTree
        Runs by label (insertion order is kept).
    metas : dict of str to dict, optional
        ``meta.json`` contents by label (N, c, γ, η when not in the tree).
    theories : dict of str to dict, optional
        :func:`theory_from_datatree` outputs by label; computed when missing.

    Returns
    -------
    Table
        Columns ``run, N, gamma, eta, method, phase`` and, for each of
        ``lam_1, u_1, M``: ``_mean, _sd, _theory, _diff``.
    """
    metas = metas or {}
    theories = theories or {}
    cols = ["run", "N", "gamma", "eta", "method", "phase"]
    for short, _, _ in _COMPARE_OBS:
        cols += [f"{short}_mean", f"{short}_sd", f"{short}_theory", f"{short}_diff"]
    rows = []
    for label, dt in dts.items():
        meta = metas.get(label)
        try:
            c, gamma, eta = run_parameters(dt, meta)
        except ValueError:
            c, gamma, eta = None, math.nan, math.nan
        th = theories.get(label)
        if th is None and c is not None:
            th = theory_from_datatree(dt, meta)
        row: dict[str, Any] = {
            "run": label,
            "N": _run_size(dt, meta),
            "gamma": gamma,
            "eta": eta,
            "method": _method(dt),
            "phase": th["phase"] if th else "n/a",
        }
        post = dt["posterior"]
        for short, name, index in _COMPARE_OBS:
            if name in post.data_vars:
                da = post[name]
                other = [d for d in da.dims if d not in ("chain", "draw")]
                values = np.asarray(da.values, dtype=float).reshape(-1, *[da.sizes[d] for d in other]) if other else np.ravel(da.values)
                if index is not None:
                    values = values.reshape(values.shape[0], -1)[:, index]
                mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if values.size > 1 else math.nan
            else:
                mean, sd = math.nan, math.nan
            theory_value = theory_component(th, name, index)
            row.update({f"{short}_mean": mean, f"{short}_sd": sd, f"{short}_theory": theory_value, f"{short}_diff": mean - theory_value})
        rows.append(row)
    return Table(tuple(cols), tuple(rows))


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------
def _fmt(value, width: int = 11) -> str:
    if isinstance(value, str):
        return f"{value:>{width}s}"
    v = _num(value)
    if math.isnan(v):
        return f"{'-':>{width}s}"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:>{width}.3e}"
    return f"{v:>{width}.5f}"


def format_table(table: Table) -> str:
    """Fixed-width text rendering of a :class:`Table` (NaN shown as ``-``).

    Parameters
    ----------
    table : Table

    Returns
    -------
    str
        Header line and one line per row, no trailing newline.
    """
    first = table.columns[0]
    w0 = max([len(first)] + [len(lab) for lab in table.labels])
    widths = {}
    for col in table.columns[1:]:
        cells = [r.get(col) for r in table.rows]
        w = max([len(col), 11] + [len(c) for c in cells if isinstance(c, str)])
        widths[col] = w
    head = f"{first:<{w0}s} " + " ".join(f"{col:>{widths[col]}s}" for col in table.columns[1:])
    lines = [head]
    for r in table.rows:
        cells = []
        for col in table.columns[1:]:
            v = r.get(col)
            if col.startswith("ess") and not isinstance(v, str) and math.isfinite(_num(v)):
                cells.append(f"{_num(v):>{widths[col]}.0f}")
            elif col == "N" and math.isfinite(_num(v)):
                cells.append(f"{_num(v):>{widths[col]}.0f}")
            else:
                cells.append(_fmt(v, widths[col]))
        lines.append(f"{str(r[first]):<{w0}s} " + " ".join(cells))
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """Human-readable lines of a :func:`sampling_report`.

    Parameters
    ----------
    report : dict

    Returns
    -------
    str
    """
    lines = [f"method = {report['method']}, chains = {report['chains']}, draws = {report['draws']}"]
    if "divergences" in report:
        lines.append(f"divergences = {report['divergences']} ({100 * report['divergence_rate']:.2f} %)")
    if "bfmi" in report:
        lines.append("BFMI per chain = " + ", ".join(f"{b:.3f}" for b in report["bfmi"]))
    if "mean_acceptance" in report:
        lines.append(f"mean acceptance = {report['mean_acceptance']:.3f}")
    if "max_tree_depth" in report:
        lines.append(f"max tree depth = {report['max_tree_depth']}")
    if "step_size" in report:
        lines.append("step size per chain = " + ", ".join(f"{s:.4g}" for s in report["step_size"]))
    lines.append(
        f"min ESS bulk = {report['min_ess_bulk']:.0f} ({report['argmin_ess_bulk']}), "
        f"min ESS tail = {report['min_ess_tail']:.0f} ({report['argmin_ess_tail']})"
    )
    if math.isfinite(_num(report.get("max_r_hat"))):
        lines.append(f"max R-hat = {report['max_r_hat']:.4f} ({report['argmax_r_hat']})")
    else:
        lines.append("max R-hat = n/a (one chain)")
    if "latent_summary" in report:
        ls = report["latent_summary"]
        lines.append("latent coordinates: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in ls.items()))
    if "elbo_final" in report:
        lines.append(f"final ELBO = {report['elbo_final']:.6g}")
    if "timing" in report:
        lines.append("timing: " + ", ".join(f"{k} = {v:.3g} s" if isinstance(v, (int, float)) else f"{k} = {v}" for k, v in report["timing"].items()))
    if "note" in report:
        lines.append(f"note: {report['note']}")
    if report.get("warnings"):
        lines += [f"WARNING: {w}" for w in report["warnings"]]
    else:
        lines.append("no warnings")
    return "\n".join(lines)


def write_summary_csv(table: Table, path: str | os.PathLike) -> Path:
    """Write a :class:`Table` as CSV, atomically.

    Floats are written with ``repr`` (round-trip exact); NaN as ``nan``.

    Parameters
    ----------
    table : Table
    path : str or PathLike

    Returns
    -------
    Path
    """
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.columns)
    for r in table.rows:
        writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in (r.get(c, "") for c in table.columns)])
    return write_text_atomic(path, buf.getvalue())
