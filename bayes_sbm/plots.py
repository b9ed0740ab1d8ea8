"""Diagnostic and comparison figures of fitted runs (PNG files).

Plots take run DataTrees (:func:`bayes_sbm.runs.to_datatree` layout) or
computed tables, write PNGs atomically and close their figures:

* :func:`diagnostic_plots` — ``trace.png``, ``rank.png``, ``energy.png``
  (NUTS only), ``ess.png``, ``rhat.png`` and ``observables.png`` (posterior
  densities of λ_1, u_1, M, e_1ᵀWe_1, μ and (1/N) log Z with the THEORY.md
  §4 large-N values as dashed reference lines);
* :func:`compare_plots` — ``forest.png`` and ``density.png`` of λ_1, u_1 and
  M across runs, with each run's theory value.

ArviZ 1.x plotting (``arviz_plots``, matplotlib backend) is used where it
works; every ArviZ call is wrapped so that a failure for an unusual structure
falls back to a plain matplotlib version of the same plot (with a
``RuntimeWarning`` naming the error) instead of losing the figure.

Importing this module selects matplotlib's non-interactive ``Agg`` backend
(the figures are written to files, never shown); importing the package does
not.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
import arviz as az  # noqa: E402
import arviz_plots as ap  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from . import diagnostics  # noqa: E402
from .io import atomic_path  # noqa: E402

__all__ = [
    "OBSERVABLES",
    "COMPARED",
    "DPI",
    "save_figure",
    "observables_dataset",
    "diagnostic_plots",
    "compare_plots",
]

#: Resolution of the written PNGs.
DPI = 110

#: (plot label, posterior variable, index along its non-sample axis or None)
#: of the observables in ``observables.png`` (THEORY.md §4 symbols).
OBSERVABLES = (
    ("λ₁", "lam_top", 0),
    ("u₁", "u", 0),
    ("M", "M", None),
    ("e₁ᵀWe₁", "signal", 0),
    ("μ", "mu", None),
    ("N⁻¹ log Z", "log_z_per_n", None),
)

#: The observables compared across runs by :func:`compare_plots`.
COMPARED = OBSERVABLES[:3]

_THEORY_STYLE = {"color": "#d62728", "linestyle": "--", "linewidth": 1.6}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG atomically and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or PathLike

    Returns
    -------
    Path
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _figure_kwargs(width: float, height: float) -> dict[str, Any]:
    return {"figure_kwargs": {"figsize": (width, height), "layout": "constrained"}}


def _arviz_or_fallback(what: str, arviz_plot: Callable[[], Any], fallback: Callable[[], Any]):
    """Figure from an ArviZ plot (a PlotCollection) or, if that raises, from ``fallback``.

    Figures left open by a failed ArviZ call are closed.
    """
    before = set(plt.get_fignums())
    try:
        pc = arviz_plot()
        return pc.get_viz("figure"), pc
    except Exception as exc:  # any ArviZ failure: keep the figure, in plain matplotlib
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
        warnings.warn(f"ArviZ {what} failed ({type(exc).__name__}: {exc}); using a plain matplotlib plot", RuntimeWarning, stacklevel=3)
        return fallback(), None


def _components(dt, names) -> list[tuple[str, np.ndarray]]:
    """``(label, draws of shape (chain, draw))`` for every scalar component of ``names``."""
    post = dt["posterior"]
    out = []
    for name in names:
        da = post[name]
        other = [d for d in da.dims if d not in ("chain", "draw")]
        values = np.asarray(da.transpose("chain", "draw", *other).values, dtype=float)
        if not other:
            out.append((name, values))
            continue
        for idx in np.ndindex(*values.shape[2:]):
            out.append((f"{name}[{','.join(map(str, idx))}]", values[(slice(None), slice(None), *idx)]))
    return out


def _n_components(dt, names) -> int:
    post = dt["posterior"]
    return sum(int(np.prod([post[n].sizes[d] for d in post[n].dims if d not in ("chain", "draw")], dtype=int)) for n in names)


def _grid(n: int, ncols: int = 4, size=(3.0, 2.3)):
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows + 0.6), layout="constrained", squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    return fig, axes.ravel()


def _scalar_draws(dt, name: str, index) -> np.ndarray | None:
    """Draws (chain, draw) of one scalar observable, or None when absent."""
    post = dt["posterior"]
    if name not in post.data_vars:
        return None
    da = post[name]
    other = [d for d in da.dims if d not in ("chain", "draw")]
    values = np.asarray(da.transpose("chain", "draw", *other).values, dtype=float)
    if index is None:
        return values.reshape(values.shape[0], values.shape[1], -1)[..., 0]
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    return flat[..., index] if index < flat.shape[-1] else None


def _theory_value(theory: Mapping | None, name: str, index) -> float:
    if not theory or name not in theory:
        return math.nan
    value = np.ravel(np.asarray(theory[name], dtype=float))
    i = 0 if index is None else index
    return float(value[i]) if i < value.size else math.nan


def observables_dataset(dt, observables=OBSERVABLES):
    """The scalar observables of one run as an xarray Dataset named by their symbols.

    Parameters
    ----------
    dt : DataTree
        Run DataTree.
    observables : sequence of (label, variable, index), default :data:`OBSERVABLES`

    Returns
    -------
    xarray.Dataset
        Variables named by ``label`` (dims ``chain, draw``); observables
        missing from the run are left out.
    """
    post = dt["posterior"]
    data = {}
    for label, name, index in observables:
        draws = _scalar_draws(dt, name, index)
        if draws is not None:
            data[label] = (("chain", "draw"), draws)
    return xr.Dataset(data, coords={"chain": post["chain"].values, "draw": post["draw"].values})


def _with_index_coords(dt):
    """``dt`` with integer coordinates on posterior dims that have none.

    ``to_datatree`` leaves ``rank`` and ``mode`` without coordinates, and
    ArviZ's ``plot_rank`` (multi-chain test) fails on such dims.
    """
    post = dt["posterior"].to_dataset()
    missing = {d: np.arange(post.sizes[d]) for d in post.dims if d not in post.coords}
    if not missing:
        return dt
    out = dt.copy()
    out["posterior"] = post.assign_coords(missing)
    return out


def _as_tree(ds):
    return xr.DataTree.from_dict({"posterior": ds})


def _run_title(theory: Mapping | None) -> str:
    if not theory:
        return ""
    return f" (THEORY.md §4 phase {theory.get('phase', '?')})"


# --------------------------------------------------------------------------
# plain-matplotlib fallbacks
# --------------------------------------------------------------------------
def _fallback_trace(dt, names):
    comps = _components(dt, names)
    fig, axes = plt.subplots(len(comps), 2, figsize=(12, 1.6 * len(comps) + 0.6), layout="constrained", squeeze=False)
    for (label, draws), (ax_d, ax_t) in zip(comps, axes):
        for ch, row in enumerate(draws):
            ax_d.hist(row, bins=30, density=True, histtype="step", color=f"C{ch}")
            ax_t.plot(row, lw=0.7, color=f"C{ch}")
        ax_d.set_title(label, fontsize=9)
        ax_t.set_ylabel(label, fontsize=9)
    axes[-1, 1].set_xlabel("draw")
    return fig


def _fallback_rank(dt, names):
    comps = _components(dt, names)
    fig, axes = _grid(len(comps))
    for ax, (label, draws) in zip(axes, comps):
        flat = draws.ravel()
        ranks = np.argsort(np.argsort(flat)).reshape(draws.shape) / max(flat.size - 1, 1)
        for ch, row in enumerate(ranks):
            ax.hist(row, bins=20, range=(0, 1), histtype="step", color=f"C{ch}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("fractional rank")
    return fig


def _fallback_energy(dt):
    energy = np.asarray(dt["sample_stats"]["energy"].values, dtype=float)
    fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
    centred = energy - energy.mean(axis=1, keepdims=True)
    ax.hist(centred.ravel(), bins=40, density=True, alpha=0.5, label="marginal energy")
    ax.hist(np.diff(energy, axis=1).ravel(), bins=40, density=True, alpha=0.5, label="energy transition")
    ax.legend()
    ax.set_xlabel("energy − mean")
    return fig


def _fallback_ess(table: diagnostics.Table):
    labels = table.labels
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(labels) + 1.5), layout="constrained")
    ax.scatter(table.column("ess_bulk"), y, label="bulk")
    ax.scatter(table.column("ess_tail"), y, marker="s", label="tail")
    ax.axvline(400, color="gray", linestyle="-.", label="400")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("effective sample size")
    ax.legend()
    return fig


def _fallback_dist(datasets: Mapping[str, Any], labels):
    fig, axes = _grid(len(labels), ncols=3, size=(3.8, 2.8))
    for ax, label in zip(axes, labels):
        for i, (run, ds) in enumerate(datasets.items()):
            if label in ds.data_vars:
                ax.hist(np.ravel(ds[label].values), bins=40, density=True, histtype="step", color=f"C{i}", label=run)
        ax.set_title(label)
        ax.set_yticks([])
    if len(datasets) > 1:
        axes[0].legend(fontsize=8)
    return fig


def _fallback_forest(datasets: Mapping[str, Any], labels, values: Mapping[str, Mapping[str, float]]):
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(labels) * len(datasets) + 1.5), layout="constrained")
    ticks, names = [], []
    pos = 0.0
    for label in labels:
        for i, (run, ds) in enumerate(datasets.items()):
            if label in ds.data_vars:
                v = np.ravel(ds[label].values)
                lo, hi = np.quantile(v, [0.055, 0.945])
                ax.plot([lo, hi], [pos, pos], color=f"C{i}", lw=1.5, label=run if label == labels[0] else None)
                ax.plot(np.mean(v), pos, "o", color=f"C{i}", mfc="white")
                th = values.get(run, {}).get(label, math.nan)
                if math.isfinite(th):
                    ax.scatter([th], [pos], marker="x", s=70, color=f"C{i}", linewidths=2, zorder=5)
            pos -= 1
        ticks.append(pos + len(datasets) / 2 + 0.5)
        names.append(label)
        pos -= 0.8
    ax.set_yticks(ticks, names)
    ax.legend(title="run", loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


# --------------------------------------------------------------------------
# single-run diagnostics
# --------------------------------------------------------------------------
def _plot_trace(dt, names, out: Path) -> Path:
    n = len(names)
    fig, _ = _arviz_or_fallback(
        "plot_trace_dist",
        lambda: az.plot_trace_dist(dt, var_names=list(names), compact=True, backend="matplotlib", **_figure_kwargs(12, 1.9 * n + 0.8)),
        lambda: _fallback_trace(dt, names),
    )
    fig.suptitle("Marginal densities and traces (one line per chain)")
    return save_figure(fig, out)


def _plot_rank(dt, names, out: Path) -> Path:
    rows = math.ceil(_n_components(dt, names) / 4)
    chains = int(dt["posterior"].sizes.get("chain", 1))
    # The default multi-chain test ("mtc_c") needs two chains; one chain gets the envelope.
    method = "mtc_c" if chains > 1 else "envelope"
    fig, _ = _arviz_or_fallback(
        "plot_rank",
        lambda: az.plot_rank(dt, var_names=list(names), method=method, backend="matplotlib", **_figure_kwargs(12, 2.3 * rows + 0.8)),
        lambda: _fallback_rank(dt, names),
    )
    if chains > 1:
        fig.suptitle("Fractional-rank Δ-ECDF per chain (chains agree when the curves stay near 0)")
    else:
        fig.suptitle("Fractional-rank Δ-ECDF (single chain: uniform by construction, no between-chain check)")
    return save_figure(fig, out)


def _plot_energy(dt, out: Path) -> Path:
    fig, _ = _arviz_or_fallback(
        "plot_energy",
        lambda: az.plot_energy(dt, backend="matplotlib", **_figure_kwargs(11, 3.8)),
        lambda: _fallback_energy(dt),
    )
    fig.suptitle("NUTS energy: marginal vs transition distribution, BFMI per chain (dashed: 0.3)")
    return save_figure(fig, out)


def _plot_ess(dt, names, table, out: Path) -> Path:
    rows = math.ceil(_n_components(dt, names) / 4)
    fig, pc = _arviz_or_fallback(
        "plot_ess",
        lambda: az.plot_ess(dt, var_names=list(names), backend="matplotlib", **_figure_kwargs(12, 2.3 * rows + 0.8)),
        lambda: _fallback_ess(table),
    )
    if pc is not None:
        fig.suptitle("Local effective sample size per quantile (dash-dot: 400)")
    else:
        fig.suptitle("Bulk and tail effective sample size (dash-dot: 400)")
    return save_figure(fig, out)


def _plot_rhat(table: diagnostics.Table, out: Path) -> Path:
    # ArviZ 1.x has no per-variable R-hat dot plot: plain matplotlib.
    labels = table.labels
    rhat = table.column("r_hat")
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(labels) + 1.6), layout="constrained")
    finite = np.isfinite(rhat)
    if np.any(finite):
        bad = finite & (rhat > diagnostics.RHAT_WARN)
        ax.scatter(rhat[finite & ~bad], y[finite & ~bad], color="C0", zorder=3, label=f"≤ {diagnostics.RHAT_WARN}")
        if np.any(bad):
            ax.scatter(rhat[bad], y[bad], color="C3", zorder=3, label=f"> {diagnostics.RHAT_WARN}")
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.axvline(diagnostics.RHAT_WARN, color="C1", linestyle="--", lw=1.2, label=f"{diagnostics.RHAT_WARN}")
        ax.axvline(1.1, color="C3", linestyle=":", lw=1.2, label="1.1")
        lo = min(0.99, float(np.nanmin(rhat)) - 0.005)
        ax.set_xlim(lo, max(1.12, float(np.nanmax(rhat)) + 0.02))
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Rank-normalised split R-hat per component")
    else:
        ax.text(0.5, 0.5, "R-hat needs at least two chains", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("R-hat (undefined for a single chain)")
    ax.set_yticks(y, labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("R-hat")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out)


def _add_theory_lines_dist(pc, values: dict[str, float]) -> None:
    """Dashed vertical THEORY lines on an ArviZ plot_dist collection (manual if add_lines fails)."""
    values = {k: v for k, v in values.items() if math.isfinite(v)}
    if not values:
        return
    try:
        ap.add_lines(pc, values, visuals={"ref_line": dict(_THEORY_STYLE)})
    except Exception:  # fall back to drawing on the targets directly
        for label, v in values.items():
            try:
                pc.get_target(label, {}).axvline(v, **_THEORY_STYLE)
            except Exception:
                pass


def _plot_observables(dt, theory: Mapping | None, out: Path) -> Path | None:
    ds = observables_dataset(dt)
    labels = list(ds.data_vars)
    if not labels:
        return None
    values = {label: _theory_value(theory, name, index) for label, name, index in OBSERVABLES if label in labels}
    rows = math.ceil(len(labels) / 3)
    fig, pc = _arviz_or_fallback(
        "plot_dist",
        lambda: az.plot_dist(
            _as_tree(ds), backend="matplotlib", col_wrap=3, visuals={"point_estimate_text": False}, **_figure_kwargs(12, 3.0 * rows + 0.8)
        ),
        lambda: _fallback_dist({"run": ds}, labels),
    )
    if pc is not None:
        _add_theory_lines_dist(pc, values)
    else:
        for ax, label in zip(fig.axes, labels):
            if math.isfinite(values.get(label, math.nan)):
                ax.axvline(values[label], **_THEORY_STYLE)
    shown = "densities (all chains), mean and 89 % interval" if pc is not None else "histograms (all chains)"
    fig.suptitle(f"Posterior {shown}; red dashed: large-N THEORY value" + _run_title(theory))
    return save_figure(fig, out)


def diagnostic_plots(
    dt,
    out_dir: str | os.PathLike,
    theory: Mapping | None = None,
    var_names=diagnostics.SPECTRAL,
    table: diagnostics.Table | None = None,
) -> list[Path]:
    """Write the diagnostic figures of one run.

    Parameters
    ----------
    dt : DataTree
        Run DataTree (``posterior``; ``sample_stats`` for NUTS).
    out_dir : str or PathLike
        Folder for the PNGs (created).
    theory : mapping, optional
        :func:`bayes_sbm.diagnostics.theory_from_datatree` output; by default
        computed from the run's ``constant_data`` (no reference lines when
        that is impossible).
    var_names : sequence of str, default ``diagnostics.SPECTRAL``
        Posterior variables of the trace, rank, ESS and R-hat plots (absent
        ones are skipped).
    table : Table, optional
        :func:`bayes_sbm.diagnostics.summary_table` of the run (computed when
        not given; used for the R-hat plot).

    Returns
    -------
    list of Path
        ``trace.png``, ``rank.png``, ``energy.png`` (only with NUTS energy),
        ``ess.png``, ``rhat.png``, ``observables.png``, in that order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    post_vars = set(dt["posterior"].data_vars)
    names = [v for v in var_names if v in post_vars]
    if not names:
        raise ValueError(f"none of {list(var_names)} is in the posterior (it has {sorted(post_vars)})")
    if theory is None:
        theory = diagnostics.theory_from_datatree(dt)
    if table is None:
        table = diagnostics.summary_table(dt, names, theory=theory or {})
    dt = _with_index_coords(dt)
    written = [_plot_trace(dt, names, out / "trace.png"), _plot_rank(dt, names, out / "rank.png")]
    if "sample_stats" in dt.children and "energy" in dt["sample_stats"].data_vars:
        written.append(_plot_energy(dt, out / "energy.png"))
    written.append(_plot_ess(dt, names, table, out / "ess.png"))
    written.append(_plot_rhat(table, out / "rhat.png"))
    obs = _plot_observables(dt, theory, out / "observables.png")
    if obs is not None:
        written.append(obs)
    return written


# --------------------------------------------------------------------------
# comparison across runs
# --------------------------------------------------------------------------
def _run_colors(pc, runs) -> dict[str, Any]:
    """Colour of each run in an ArviZ collection faceted by ``model`` (C0, C1, … if unknown)."""
    colors = {run: f"C{i}" for i, run in enumerate(runs)}
    try:
        mapping = pc.aes["color"]["mapping"]
        for run in runs:
            colors[run] = mapping.sel(model=run).item()
    except Exception:
        pass
    return colors


def _forest_theory_markers(pc, runs, values: dict[str, dict[str, float]]) -> None:
    """Mark each run's theory value on its forest row (uses the plotted interval's y)."""
    colors = _run_colors(pc, runs)
    for run in runs:
        for label, v in values[run].items():
            if not math.isfinite(v):
                continue
            try:
                line = pc.viz["twig"][label].sel(model=run).item()
                y = float(np.mean(line.get_ydata()))
                line.axes.scatter([v], [y], marker="x", s=70, color=colors[run], linewidths=2, zorder=5)
            except Exception:
                continue


def _pooled_common_size(datasets: Mapping[str, Any]) -> dict[str, Any]:
    """Each run's draws pooled into one chain and thinned to the smallest run's size.

    ArviZ stacks the runs along a ``model`` dimension with an outer join, so
    runs with different chain or draw counts (NUTS vs SVI, different lengths)
    would be padded with NaN and lose their summaries; an evenly spaced
    subsample of the pooled draws keeps every run intact.
    """
    sizes = {run: int(ds.sizes.get("chain", 1) * ds.sizes.get("draw", 1)) for run, ds in datasets.items()}
    n = min(sizes.values())
    out = {}
    for run, ds in datasets.items():
        keep = np.linspace(0, sizes[run] - 1, n).round().astype(int)
        data = {v: (("chain", "draw"), np.ravel(ds[v].transpose("chain", "draw").values)[keep][None, :]) for v in ds.data_vars}
        out[run] = xr.Dataset(data, coords={"chain": [0], "draw": np.arange(n)})
    return out


def _theories_for(dts: Mapping[str, Any], theories: Mapping | None) -> dict[str, Mapping | None]:
    theories = dict(theories or {})
    return {run: theories[run] if run in theories else diagnostics.theory_from_datatree(dt) for run, dt in dts.items()}


def compare_plots(dts: Mapping[str, Any], out_dir: str | os.PathLike, theories: Mapping | None = None) -> list[Path]:
    """Forest and density plots of λ_1, u_1 and M across runs.

    Parameters
    ----------
    dts : mapping of str to DataTree
        Runs by label (the labels name the runs in the legends).
    out_dir : str or PathLike
        Folder for ``forest.png`` and ``density.png`` (created).
    theories : mapping of str to mapping, optional
        :func:`bayes_sbm.diagnostics.theory_from_datatree` per run label;
        missing ones are computed from each run's ``constant_data``.

    Returns
    -------
    list of Path
        ``[forest.png, density.png]``.
    """
    if not dts:
        raise ValueError("compare_plots needs at least one run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(dts)
    datasets = {run: observables_dataset(dt, COMPARED) for run, dt in dts.items()}
    labels = [label for label, _, _ in COMPARED if all(label in ds.data_vars for ds in datasets.values())]
    if not labels:
        raise ValueError("the runs share none of the observables λ_1, u_1, M")
    datasets = _pooled_common_size({run: ds[labels] for run, ds in datasets.items()})
    th = _theories_for(dts, theories)
    values = {
        run: {label: _theory_value(th[run], name, index) for label, name, index in COMPARED if label in labels}
        for run in runs
    }
    trees = {run: _as_tree(ds) for run, ds in datasets.items()}

    fig, pc = _arviz_or_fallback(
        "plot_forest",
        lambda: az.plot_forest(trees, combined=True, backend="matplotlib", **_figure_kwargs(10, 0.55 * len(labels) * len(runs) + 1.8)),
        lambda: _fallback_forest(datasets, labels, values),
    )
    if pc is not None:
        try:
            pc.add_legend("model", title="run")
        except Exception:
            pass
        _forest_theory_markers(pc, runs, values)
    intervals = "89 % / 50 % intervals" if pc is not None else "89 % interval"
    fig.suptitle(f"Posterior mean and {intervals} per run; ×: large-N THEORY value")
    written = [save_figure(fig, out / "forest.png")]

    rows = math.ceil(len(labels) / 3)
    fig, pc = _arviz_or_fallback(
        "plot_dist",
        lambda: az.plot_dist(
            trees, backend="matplotlib", col_wrap=3, visuals={"point_estimate_text": False}, **_figure_kwargs(13, 3.3 * rows + 0.8)
        ),
        lambda: _fallback_dist(datasets, labels),
    )
    if pc is not None:
        try:
            pc.add_legend("model", title="run")
        except Exception:
            pass
        colors = _run_colors(pc, runs)
        targets = {}
        for label in labels:
            try:
                targets[label] = pc.get_target(label, {})
            except Exception:
                targets[label] = None
    else:
        colors = {run: f"C{i}" for i, run in enumerate(runs)}
        targets = dict(zip(labels, fig.axes))
    for label in labels:
        ax = targets.get(label)
        finite = {run: values[run][label] for run in runs if math.isfinite(values[run][label])}
        if ax is None or not finite:
            continue
        # runs with the same theory value share one neutral line (colours would overdraw each other)
        groups: list[list[str]] = []
        for run, v in finite.items():
            for group in groups:
                if abs(finite[group[0]] - v) <= 1e-12 * max(1.0, abs(v)):
                    group.append(run)
                    break
            else:
                groups.append([run])
        for group in groups:
            color = colors[group[0]] if len(group) == 1 else "0.25"
            ax.axvline(finite[group[0]], color=color, linestyle="--", linewidth=1.4)
    shown = "densities, mean and 89 % interval" if pc is not None else "histograms"
    fig.suptitle(f"Posterior {shown} per run; dashed: each run's large-N THEORY value (grey when shared)")
    written.append(save_figure(fig, out / "density.png"))
    return written
