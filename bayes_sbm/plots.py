"""Diagnostic and comparison figures of fitted runs (PNG files).

Plots take run DataTrees in the ArviZ-conformant layout of
:func:`bayes_sbm.runs.to_datatree` (integer coordinates on every dim,
``rank``/``mode`` from 1) and already computed tables and theory values
(:mod:`bayes_sbm.diagnostics`); they call ArviZ 1.x (``arviz_plots``,
matplotlib backend) directly, add the THEORY.md §4 reference values as
dashed lines, label every axis, write PNGs atomically and close their
figures:

* :func:`diagnostic_plots` — ``trace.png`` (one row per scalar component:
  marginal density and trace per chain), ``rank.png`` (rank Δ-ECDF per
  component; several chains only), ``energy.png`` (NUTS), ``ess.png`` (local
  ESS per component), ``rhat.png`` (several chains only),
  ``observables.png`` (λ_1, u_1, M, e_1ᵀWe_1, μ, (1/N) log Z) and
  ``elbo.png`` (SVI, when the ELBO trace is available);
* :func:`compare_plots` — ``forest.png`` (one panel per observable, one row
  per run) and ``density.png`` of λ_1, u_1 and M across runs;
* :func:`heldout_plot` — ``heldout.png``: mean held-out log density vs β
  (posterior predictive and plug-in, ± SE over points, uniform baseline 0)
  from the dict of :meth:`bayes_sbm.reports.HeldoutReport.as_dict`;
* :func:`image_grid` — rows of already computed data (e.g. generated samples
  mapped back to pixel units) shown as a grid of small images.

SVI runs (tree attribute ``method == "svi"``) are one pseudo-chain of
independent draws from the fitted guide: they get no rank plot and no R-hat
plot (nothing to compare chains with).

The figures of the latest :func:`diagnostic_plots` / :func:`compare_plots`
call stay readable (closed, not destroyed) in :data:`_last_figures`, keyed
by file name, for tests.

Importing this module selects matplotlib's non-interactive ``Agg`` backend
(the figures are written to files, never shown); importing the package does
not.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from arviz_base.labels import BaseLabeller  # noqa: E402

from . import diagnostics  # noqa: E402
from .io import atomic_path  # noqa: E402

__all__ = [
    "OBSERVABLES",
    "COMPARED",
    "DPI",
    "CI_PROB",
    "THEORY_STYLE",
    "SymbolLabeller",
    "save_figure",
    "observables_dataset",
    "diagnostic_plots",
    "compare_plots",
    "heldout_plot",
    "image_grid",
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

#: Probability of the credible intervals drawn (equal-tailed; the forest plot adds a 50 % one).
CI_PROB = 0.89

#: The older, looser R-hat threshold (Gelman et al., BDA3), drawn in ``rhat.png`` next to ``diagnostics.RHAT_WARN``.
RHAT_LOOSE = 1.1

#: Style of every THEORY reference line (tests look for the dashed style).
THEORY_STYLE = {"color": "#d62728", "linestyle": "--", "linewidth": 1.4, "zorder": 4}

#: Figures of the latest :func:`diagnostic_plots` / :func:`compare_plots` call, by PNG file name.
_last_figures: dict[str, Any] = {}

_SUBSCRIPTS = str.maketrans("0123456789-", "₀₁₂₃₄₅₆₇₈₉₋")
#: THEORY.md symbols of the posterior variables (``{k}``: the 1-based component as a subscript).
_SYMBOLS = {
    "lam_top": "λ{k}",
    "u": "u{k}",
    "M": "M",
    "signal": "e{k}ᵀWe{k}",
    "mu": "μ",
    "log_z_per_n": "N⁻¹ log Z",
    "z": "z{k}",
}


class SymbolLabeller(BaseLabeller):
    """ArviZ labeller writing the THEORY.md symbols: ``lam_top`` at ``rank = 1`` is ``λ₁``.

    Variables with one non-sample dim get the coordinate value (1-based for
    ``rank``/``mode``) as a subscript; other variables keep ArviZ's labels.
    """

    def _symbol(self, var_name, sel):
        template = _SYMBOLS.get(var_name)
        if template is None:
            return None
        sel = dict(sel or {})
        if "{k}" not in template:
            return template if not sel else None
        if len(sel) != 1:
            return None
        value = next(iter(sel.values()))
        if not isinstance(value, (int, np.integer)):
            return None
        return template.format(k=str(int(value)).translate(_SUBSCRIPTS))

    def make_label_vert(self, var_name, sel, isel):  # noqa: D102  (BaseLabeller API)
        return self._symbol(var_name, sel) or super().make_label_vert(var_name, sel, isel)

    def make_label_flat(self, var_name, sel, isel):  # noqa: D102
        return self._symbol(var_name, sel) or super().make_label_flat(var_name, sel, isel)


_LABELLER = SymbolLabeller()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG atomically and close it.

    The closed figure is kept in :data:`_last_figures` under the file name.

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
    _last_figures[path.name] = fig
    return path


def _figure_kwargs(width: float, height: float, **extra) -> dict[str, Any]:
    return {"figure_kwargs": {"figsize": (width, height), "figsize_units": "inches", "layout": "constrained", **extra}}


def _components(post, names) -> list[tuple[str, dict, int]]:
    """``(variable, selection, flat index)`` of every scalar component of ``names``, in table order."""
    out = []
    for name in names:
        da = post[name]
        other = [d for d in da.dims if d not in ("chain", "draw")]
        if not other:
            out.append((name, {}, 0))
            continue
        coords = [da[d].values for d in other]
        for flat, idx in enumerate(np.ndindex(*[da.sizes[d] for d in other])):
            sel = {d: coords[i][j].item() for i, (d, j) in enumerate(zip(other, idx))}
            out.append((name, sel, flat))
    return out


def _label(name: str, sel: dict) -> str:
    return _LABELLER.make_label_flat(name, sel, {})


def _is_svi(dt) -> bool:
    return str(dt.attrs.get("method", "")).lower() == "svi"


def _n_chains(dt) -> int:
    return int(dt["posterior"].sizes.get("chain", 1))


def _chain_legend(pc, dt) -> None:
    if _n_chains(dt) > 1:
        pc.add_legend("chain", title="chain")


def _require_coords(dt) -> None:
    """Refuse a posterior with a dim lacking coordinates (a tree older than the conformant layout)."""
    post = dt["posterior"]
    missing = [d for d in post.dims if d not in post.coords]
    if missing:
        raise ValueError(
            f"posterior dims {missing} have no coordinates: not the ArviZ-conformant layout of "
            "bayes_sbm.runs.to_datatree (integer coordinates on every dim; rank/mode from 1)"
        )


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
        if name not in post.data_vars:
            continue
        da = post[name]
        other = [d for d in da.dims if d not in ("chain", "draw")]
        flat = np.asarray(da.transpose("chain", "draw", *other).values, dtype=float).reshape(da.sizes["chain"], da.sizes["draw"], -1)
        i = 0 if index is None else index
        if i < flat.shape[-1]:
            data[label] = (("chain", "draw"), flat[..., i])
    return xr.Dataset(data, coords={"chain": post["chain"].values, "draw": post["draw"].values})


def _as_tree(ds):
    return xr.DataTree.from_dict({"posterior": ds})


def _run_title(theory: Mapping | None) -> str:
    if not theory or "phase" not in theory:
        return ""
    return f" (THEORY.md §4 phase {theory['phase']})"


# --------------------------------------------------------------------------
# single-run diagnostics
# --------------------------------------------------------------------------
def _plot_trace(dt, names, theory, out: Path) -> Path:
    post = dt["posterior"]
    comps = _components(post, names)
    pc = az.plot_trace_dist(
        dt, var_names=list(names), compact=False, labeller=_LABELLER, backend="matplotlib",
        **_figure_kwargs(11, 1.45 * len(comps) + 1.0),
    )
    for name, sel, flat in comps:
        ax_dist = pc.get_target(name, {**sel, "column": "dist"})
        ax_trace = pc.get_target(name, {**sel, "column": "trace"})
        label = _label(name, sel)
        ax_dist.set_xlabel(label)
        ax_dist.set_ylabel("density")
        ax_trace.set_xlabel("draw")
        ax_trace.set_ylabel(label)
        value = diagnostics.theory_component(theory, name, flat)
        if math.isfinite(value):
            ax_dist.axvline(value, **THEORY_STYLE)
            ax_trace.axhline(value, **THEORY_STYLE)
    _chain_legend(pc, dt)
    fig = pc.get_viz("figure")
    chains = "one line per chain" if _n_chains(dt) > 1 else "one pseudo-chain"
    fig.suptitle(f"Marginal densities and traces ({chains}); red dashed: large-N THEORY value" + _run_title(theory))
    return save_figure(fig, out)


def _wrap_height(n: int, ncols: int, row: float) -> float:
    return row * math.ceil(n / ncols) + 0.9


def _plot_rank(dt, names, out: Path) -> Path:
    comps = _components(dt["posterior"], names)
    pc = az.plot_rank(
        dt, var_names=list(names), labeller=_LABELLER, backend="matplotlib", col_wrap=4,
        visuals={"remove_axis": False}, **_figure_kwargs(12, _wrap_height(len(comps), 4, 2.4)),
    )
    for name, sel, _ in comps:
        ax = pc.get_target(name, sel)
        ax.set_xlabel("fractional rank")
        ax.set_ylabel("ECDF − uniform")
    _chain_legend(pc, dt)
    pc.get_viz("figure").suptitle("Fractional-rank Δ-ECDF per chain (chains agree when the curves stay inside the band)")
    return save_figure(pc.get_viz("figure"), out)


def _plot_energy(dt, out: Path) -> Path:
    pc = az.plot_energy(dt, backend="matplotlib", **_figure_kwargs(11, 3.6))
    chains = dt["sample_stats"]["chain"].values
    ax_bfmi = pc.get_target("energy", {"column": "bfmi"})
    ax_energy = pc.get_target("energy", {"column": "energy"})
    ax_bfmi.set_yticks(chains, [str(int(c)) for c in chains])
    ax_bfmi.set_ylim(chains.min() - 0.5, chains.max() + 0.5)
    ax_bfmi.set_xlabel("BFMI")
    ax_bfmi.set_ylabel("chain")
    ax_energy.set_xlabel("energy − mean energy")
    ax_energy.set_ylabel("density")
    pc.get_viz("figure").suptitle("NUTS energy: marginal vs transition distribution; BFMI per chain (dashed: 0.3)")
    return save_figure(pc.get_viz("figure"), out)


def _plot_ess(dt, names, out: Path) -> Path:
    comps = _components(dt["posterior"], names)
    pc = az.plot_ess(
        dt, var_names=list(names), labeller=_LABELLER, backend="matplotlib", col_wrap=4,
        **_figure_kwargs(12, _wrap_height(len(comps), 4, 2.4)),
    )
    for name, sel, _ in comps:
        ax = pc.get_target(name, sel)
        ax.set_xlabel("quantile")
        ax.set_ylabel("local ESS")
    pc.get_viz("figure").suptitle("Local effective sample size per quantile (dash-dot: 400)")
    return save_figure(pc.get_viz("figure"), out)


def _plot_rhat(dt, names, table: diagnostics.Table, out: Path) -> Path:
    # ArviZ 1.x has no per-variable R-hat dot plot: drawn here from the summary table.
    comps = _components(dt["posterior"], names)
    labels = [_label(n, s) for n, s, _ in comps] if len(comps) == len(table) else table.labels
    rhat = table.column("r_hat")
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(labels) + 1.6), layout="constrained")
    finite = np.isfinite(rhat)
    bad = finite & (rhat > diagnostics.RHAT_WARN)
    ax.scatter(rhat[finite & ~bad], y[finite & ~bad], color="C0", zorder=3, label=f"≤ {diagnostics.RHAT_WARN}")
    if np.any(bad):
        ax.scatter(rhat[bad], y[bad], color="C3", zorder=3, label=f"> {diagnostics.RHAT_WARN}")
    ax.axvline(1.0, color="gray", lw=0.8)
    ax.axvline(diagnostics.RHAT_WARN, color="C1", linestyle="-.", lw=1.2, label=f"{diagnostics.RHAT_WARN}")
    ax.axvline(RHAT_LOOSE, color="C3", linestyle=":", lw=1.2, label=f"{RHAT_LOOSE}")
    if np.any(finite):
        ax.set_xlim(min(0.99, float(np.nanmin(rhat)) - 0.005), max(1.12, float(np.nanmax(rhat)) + 0.02))
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Rank-normalised split R-hat per component")
    ax.set_yticks(y, labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("R-hat")
    ax.set_ylabel("component")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out)


def _plot_observables(dt, theory: Mapping | None, out: Path) -> Path | None:
    ds = observables_dataset(dt)
    labels = list(ds.data_vars)
    if not labels:
        return None
    pc = az.plot_dist(
        _as_tree(ds), backend="matplotlib", col_wrap=3, ci_prob=CI_PROB, visuals={"point_estimate_text": False, "title": False},
        **_figure_kwargs(12, _wrap_height(len(labels), 3, 2.9)),
    )
    for label, name, index in OBSERVABLES:
        if label not in labels:
            continue
        ax = pc.get_target(label, {})
        ax.set_xlabel(label)
        ax.set_ylabel("posterior density")
        value = diagnostics.theory_component(theory, name, index)
        if math.isfinite(value):
            ax.axvline(value, **THEORY_STYLE)
    pc.get_viz("figure").suptitle(
        f"Posterior densities (all chains), mean and {CI_PROB:.0%} interval; red dashed: large-N THEORY value" + _run_title(theory)
    )
    return save_figure(pc.get_viz("figure"), out)


def _plot_elbo(elbo, out: Path) -> Path:
    # ArviZ has no optimisation-trace plot: plain matplotlib of the stored ELBO per step.
    elbo = np.ravel(np.asarray(elbo, dtype=float))
    steps = np.arange(1, elbo.size + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
    window = max(1, elbo.size // 50)
    smooth_x = steps[window - 1 :]
    smooth = np.convolve(elbo, np.ones(window) / window, mode="valid")
    for ax, start, title in ((axes[0], 0, "all steps"), (axes[1], elbo.size // 2, "second half")):
        ax.plot(steps[start:], elbo[start:], color="C0", lw=0.6, alpha=0.6, label="ELBO")
        keep = smooth_x > start
        ax.plot(smooth_x[keep], smooth[keep], color="C1", lw=1.4, label=f"running mean ({window} steps)")
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("ELBO")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("SVI: evidence lower bound per optimisation step")
    return save_figure(fig, out)


def _find_elbo(out: Path):
    """``RUN/elbo.npy`` next to the output folder (``RUN/diagnostics``), or None."""
    for candidate in (out.parent / "elbo.npy", out / "elbo.npy"):
        if candidate.is_file():
            return np.load(candidate, allow_pickle=False)
    return None


def diagnostic_plots(
    dt,
    out_dir: str | os.PathLike,
    theory: Mapping | None = None,
    var_names=diagnostics.SPECTRAL,
    table: diagnostics.Table | None = None,
    elbo=None,
) -> list[Path]:
    """Write the diagnostic figures of one run.

    Parameters
    ----------
    dt : DataTree
        Run DataTree in the :func:`bayes_sbm.runs.to_datatree` layout
        (``posterior``; ``sample_stats`` for NUTS; attribute ``method``).
    out_dir : str or PathLike
        Folder for the PNGs (created).
    theory : mapping, optional
        :func:`bayes_sbm.diagnostics.theory_from_datatree` output; by default
        computed from the run's ``constant_data`` (no reference lines when
        that is impossible, or for ``{}``).
    var_names : sequence of str, default ``diagnostics.SPECTRAL``
        Posterior variables of the trace, rank, ESS and R-hat plots (absent
        ones are skipped).
    table : Table, optional
        :func:`bayes_sbm.diagnostics.summary_table` of the run over
        ``var_names`` (computed when not given; used for the R-hat plot).
    elbo : array_like, optional
        ELBO per SVI step; by default read from ``elbo.npy`` in the folder
        above ``out_dir`` (``RUN/elbo.npy`` for ``RUN/diagnostics``), if any.

    Returns
    -------
    list of Path
        ``trace.png``, ``rank.png`` (several chains, not SVI), ``energy.png``
        (NUTS energy), ``ess.png``, ``rhat.png`` (several chains, not SVI),
        ``observables.png``, ``elbo.png`` (when an ELBO is given or found),
        in that order.

    Raises
    ------
    ValueError
        None of ``var_names`` is in the posterior, or a posterior dim has no
        coordinates (a tree not in the conformant layout).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    post_vars = set(dt["posterior"].data_vars)
    names = [v for v in var_names if v in post_vars]
    if not names:
        raise ValueError(f"none of {list(var_names)} is in the posterior (it has {sorted(post_vars)})")
    _require_coords(dt)
    if theory is None:
        theory = diagnostics.theory_from_datatree(dt)
    multi_chain = _n_chains(dt) > 1 and not _is_svi(dt)
    if multi_chain and table is None:
        table = diagnostics.summary_table(dt, names, theory=theory or {})
    if elbo is None and _is_svi(dt):
        elbo = _find_elbo(out)
    _last_figures.clear()
    written = [_plot_trace(dt, names, theory, out / "trace.png")]
    if multi_chain:
        written.append(_plot_rank(dt, names, out / "rank.png"))
    if "sample_stats" in dt.children and "energy" in dt["sample_stats"].data_vars:
        written.append(_plot_energy(dt, out / "energy.png"))
    written.append(_plot_ess(dt, names, out / "ess.png"))
    if multi_chain:
        written.append(_plot_rhat(dt, names, table, out / "rhat.png"))
    obs = _plot_observables(dt, theory, out / "observables.png")
    if obs is not None:
        written.append(obs)
    if elbo is not None and np.size(elbo) > 1:
        written.append(_plot_elbo(elbo, out / "elbo.png"))
    return written


# --------------------------------------------------------------------------
# comparison across runs
# --------------------------------------------------------------------------
def _run_colors(pc, runs) -> dict[str, Any]:
    """Colour of each run in an ArviZ collection whose colour is mapped to ``model``."""
    mapping = pc.get_aes_as_dataset("color")
    first = next(iter(mapping.data_vars))
    return {run: mapping[first].sel(model=run).item() for run in runs}


def _pooled_common_size(datasets: Mapping[str, Any]) -> dict[str, Any]:
    """Each run's draws pooled into one chain and thinned to the smallest run's size.

    ArviZ stacks the runs along a ``model`` dimension with an outer join, so
    runs with different chain or draw counts (NUTS vs SVI, different lengths)
    would be padded with NaN; an evenly spaced subsample of the pooled draws
    keeps every run intact.
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


#: Theory values this close (relative, floor 1) are one line: the same formula evaluated for runs with equal inputs.
SAME_THEORY_RTOL = 1e-12


def _theory_groups(values: Mapping[str, float]) -> list[list[str]]:
    """Runs grouped by equal (finite) theory value."""
    groups: list[list[str]] = []
    for run, v in values.items():
        if not math.isfinite(v):
            continue
        for group in groups:
            if abs(values[group[0]] - v) <= SAME_THEORY_RTOL * max(1.0, abs(v)):
                group.append(run)
                break
        else:
            groups.append([run])
    return groups


def _plot_forest(trees, runs, labels, values, out: Path) -> Path:
    pc = az.plot_forest(
        trees, combined=True, ci_probs=(0.5, CI_PROB), backend="matplotlib", rows=["__variable__"], labels=[],
        visuals={"ticklabels": False, "remove_axis": False},
        **_figure_kwargs(9, 1.0 + 0.45 * len(runs) * len(labels) + 0.5 * len(labels), sharex=False, sharey=False,
                         width_ratios=[0.001, 1]),
    )
    colors = _run_colors(pc, runs)
    for label in labels:
        pc.get_target(label, {"column": "labels"}).set_axis_off()
        ax = pc.get_target(label, {"column": "forest"})
        ys = {run: float(np.mean(pc.viz["twig"][label].sel(model=run).item().get_ydata())) for run in runs}
        step = abs(ys[runs[0]] - ys[runs[1]]) if len(runs) > 1 else 0.4
        for run in runs:
            v = values[run][label]
            if math.isfinite(v):
                ax.plot([v, v], [ys[run] - 0.45 * step, ys[run] + 0.45 * step], color=colors[run], linestyle="--", lw=1.6, zorder=4)
        ax.set_yticks(list(ys.values()), runs)
        ax.set_ylim(min(ys.values()) - 0.6 * step, max(ys.values()) + 0.6 * step)
        ax.set_xlabel(label)
        ax.set_ylabel("run")
    pc.add_legend("model", title="run")
    pc.get_viz("figure").suptitle(f"Posterior mean, 50 % and {CI_PROB:.0%} intervals; dashed: each run's large-N THEORY value")
    return save_figure(pc.get_viz("figure"), out)


def _plot_compare_density(trees, runs, labels, values, out: Path) -> Path:
    pc = az.plot_dist(
        trees, backend="matplotlib", col_wrap=3, ci_prob=CI_PROB, visuals={"point_estimate_text": False, "title": False},
        **_figure_kwargs(13, _wrap_height(len(labels), 3, 3.2)),
    )
    colors = _run_colors(pc, runs)
    for label in labels:
        ax = pc.get_target(label, {})
        ax.set_xlabel(label)
        ax.set_ylabel("posterior density")
        finite = {run: values[run][label] for run in runs}
        # runs with the same theory value share one neutral line (colours would overdraw each other)
        for group in _theory_groups(finite):
            color = colors[group[0]] if len(group) == 1 else "0.25"
            ax.axvline(finite[group[0]], **{**THEORY_STYLE, "color": color})
    pc.add_legend("model", title="run")
    pc.get_viz("figure").suptitle(
        f"Posterior densities, mean and {CI_PROB:.0%} interval per run; dashed: each run's large-N THEORY value (grey when shared)"
    )
    return save_figure(pc.get_viz("figure"), out)


def compare_plots(dts: Mapping[str, Any], out_dir: str | os.PathLike, theories: Mapping | None = None) -> list[Path]:
    """Forest and density plots of λ_1, u_1 and M across runs, one panel per observable.

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
    values = {run: {label: diagnostics.theory_component(th[run], name, index) for label, name, index in COMPARED if label in labels} for run in runs}
    trees = {run: _as_tree(ds) for run, ds in datasets.items()}
    _last_figures.clear()
    return [
        _plot_forest(trees, runs, labels, values, out / "forest.png"),
        _plot_compare_density(trees, runs, labels, values, out / "density.png"),
    ]


def heldout_plot(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``heldout.png``: mean held-out log density vs β, posterior predictive and plug-in W̄, with ± SE error bars.

    Parameters
    ----------
    report : mapping
        :meth:`bayes_sbm.reports.HeldoutReport.as_dict` (``rows`` with
        ``beta``, ``mean``, ``se``, ``plugin_mean``, ``plugin_se``; ``best_beta``,
        ``plugin_best_beta``, ``N``, ``num_points``, ``num_draws``).
    path : path-like
        The PNG to write (atomically).

    Returns
    -------
    Path
    """
    rows = sorted(report["rows"], key=lambda r: r["beta"])

    def col(key):
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])

    beta = col("beta")
    span = float(np.ptp(beta)) if beta.size > 1 else max(abs(float(beta[0])), 1.0)
    shift = 0.008 * span  # plug-in points beside the predictive ones, not on top of them
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.axhline(0.0, color="0.4", lw=1.0, ls=":", label="uniform on the sphere (0)")
    ax.errorbar(beta - shift, col("mean"), yerr=np.nan_to_num(col("se")), fmt="o-", color="C0", capsize=3,
                label="posterior predictive  log E_W[p(x|βW)]")
    ax.errorbar(beta + shift, col("plugin_mean"), yerr=np.nan_to_num(col("plugin_se")), fmt="s--", color="C1", capsize=3,
                label="plug-in  log p(x|βW̄), W̄ = posterior mean")
    for key, color in (("best_beta", "C0"), ("plugin_best_beta", "C1")):
        if report.get(key) is not None:
            ax.axvline(float(report[key]), color=color, lw=0.8, alpha=0.5)
    ax.set_xlabel("sampling inverse temperature β")
    ax.set_ylabel("mean held-out log density per point (nats)")
    ax.set_title(f"Held-out log-likelihood: N = {report.get('N')}, {report.get('num_points')} points, "
                 f"{report.get('num_draws')} draws (± SE over points)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def image_grid(images, path: str | os.PathLike, shape: tuple[int, int], *, ncols: int | None = None, vmin: float | None = None,
               vmax: float | None = None, cmap: str = "gray_r", title: str | None = None, cell: float = 0.6) -> Path:
    """A grid of small images, one per row of ``images`` (e.g. generated digits), written as a PNG.

    Parameters
    ----------
    images : array_like, shape (M, H·W)
        Finite values, one flattened image per row (row-major, as
        ``image.reshape(H, W)``).
    path : path-like
        The PNG to write (atomically).
    shape : (int, int)
        ``(H, W)`` of one image; ``H·W`` must equal the number of columns.
    ncols : int, optional
        Images per row of the grid (default ``ceil(√M)``).
    vmin, vmax : float, optional
        Colour range shared by every image (default: the range of all the
        values, so the images are comparable with each other).
    cmap : str, default "gray_r"
        Matplotlib colour map (``gray_r``: larger values darker, ink on paper).
    title : str, optional
    cell : float, default 0.6
        Inches per image.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        One line naming ``images`` or ``shape`` for a wrong shape or non-finite values.
    """
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape: must be two positive integers (height, width), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"shape: must be two positive integers (height, width), got {shape!r}")
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"images: expected shape (M, H*W) with M >= 1, got {arr.shape}")
    if arr.shape[1] != h * w:
        raise ValueError(f"images: {arr.shape[1]} values per row, shape {h}x{w} needs {h * w}")
    if not np.all(np.isfinite(arr)):
        row = int(np.argmax(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"images: row {row} has a non-finite value")
    m = arr.shape[0]
    ncols = int(ncols) if ncols else int(math.ceil(math.sqrt(m)))
    if ncols < 1:
        raise ValueError(f"ncols: must be >= 1, got {ncols}")
    nrows = int(math.ceil(m / ncols))
    lo = float(arr.min()) if vmin is None else float(vmin)
    hi = float(arr.max()) if vmax is None else float(vmax)
    gap, pad, top = 0.08, 0.05, (0.32 if title else 0.05)  # inches: between images, around, above (title)
    iw, ih = cell * w / max(h, w), cell * h / max(h, w)
    width = max(ncols * iw + (ncols - 1) * gap + 2 * pad, 2.6 if title else 0.0)
    height = nrows * ih + (nrows - 1) * gap + pad + top
    fig = plt.figure(figsize=(width, height))
    x0 = (width - (ncols * iw + (ncols - 1) * gap)) / 2
    for i in range(m):
        row, col = divmod(i, ncols)
        left = x0 + col * (iw + gap)
        bottom = height - top - (row + 1) * ih - row * gap
        ax = fig.add_axes((left / width, bottom / height, iw / width, ih / height))
        ax.set_axis_off()
        ax.imshow(arr[i].reshape(h, w), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1.0, interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=8, y=1.0 - 0.06 / height, va="top")
    return save_figure(fig, path)
