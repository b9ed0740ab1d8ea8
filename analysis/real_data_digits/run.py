"""Real data: SBM posteriors of handwritten digits — held-out likelihood, temperature, evidence, generation.

One class of scikit-learn's bundled 8×8 handwritten digits
(``sklearn.datasets.load_digits``: no download; N = 64 pixels, about 180
images per class).  The rows of the class are shuffled (seed 0); the first K
rows, K ∈ {5, 10, 20, 40}, are nested training sets (undersampled: K ≪ N) and
every row after the first 40 is held out, one held-out set for all K.  Each
training set is centred by its own mean and projected onto the sphere
|x|² = N (``[data] center = true, project = true``); the held-out rows go
through the same transform, recorded in each run folder (THEORY.md §3).

Fits — NUTS, aligned parametrisation, 2 chains × (150 + 200) draws, γ = 1 —
run through the sweep machinery (:mod:`bayes_sbm.sweep`: the spec and sweep
files are written to ``OUT/runs/``, and the points are run one after the other
in this process with :func:`bayes_sbm.sweep.run_point`; each sweep gets its
``results.csv``):

* ``fits`` — K × η ∈ {1 (Bayes), 0.5 and 3 (tempered), 30 (MAP-like: the
  tempered posterior concentrates on the MAP as η grows)};
* ``gamma_fits`` — K = 20, η = 1, γ ∈ {0.1, 0.3, 3} (γ = 1 is in ``fits``);
* ``evidence`` — K = 20, η = 1, γ ∈ {0.1, 0.3, 1, 3}, task ``evidence``:
  thermodynamic integration and stepping stone (10 rungs, bisected up to 14,
  × 100 draws) next to the large-N evidence of THEORY.md §5 at the training
  spectrum.

Held-out log-likelihood per point, in nats (densities with respect to the
uniform measure on the sphere: the uniform model scores 0, THEORY.md §1):

* posterior predictive ``log P_pp(x) = log E_W p(x | βW)``: log-mean-exp
  over the draws of the exact rotation average ``E_H p(x | β O W Oᵀ)`` over
  the rotations of the complement of the training span (``heldout_rb.py``,
  Rao–Blackwellised), with its MCSE, Jensen bias and weight ESS; the plain
  log-mean-exp of :mod:`bayes_sbm.predictive` (what ``bayes-sbm predict
  --heldout`` reports) is kept beside it;
* ``E_W log p(x | βW)``, the per-draw average (a lower bound on log P_pp);
* plug-in ``log p(x | βW̄)`` with W̄ the posterior mean of the Bayes fit, and
  the same for the MAP-like fit (η = 30);
* means over the held-out points with their SE over points; model
  differences paired per point.

Temperature (THEORY.md §6): for each K the Bayes held-out curve over β
(posterior predictive on β ∈ {0.7, …, 1.5}, plug-ins on β ∈ {0.5, …, 2}), its
maximiser β* (grid, refined by a parabola through the three best points) and
the theory window (β_c, √(γη)) of the §4 saddle at the training spectrum
(β_c = g_1 where the top mode condenses, u_1 > 0).  Generation: 64 draws of
the K = 20 posterior predictive at β = 1 and at β*, mapped back to pixel
units through the inverse transform (:func:`bayes_sbm.reports.generate_samples`).

Outputs (in ``--out``, default ``analysis/real_data_digits/results``):

* ``learning_curve.csv`` — per (K, model) at β = 1: mean held-out log density
  ± SE, MCSE, bias, weight ESS, the plain estimate, E_W log p;
* ``beta_curve.csv`` — per (K, β): Bayes (posterior predictive), plug-in and
  MAP-like held-out means;
* ``beta_optimum.csv`` — per K: β*, the theory window, the phase, the gain over β = 1;
* ``gamma_grid.csv`` — per γ: log evidence (TI, SS, theory) and held-out log-likelihood;
* ``fits.csv`` — per fit: divergences, min ESS, max R-hat, seconds;
* ``table.md``, ``metadata.json``;
* figures ``learning_curve.png``, ``beta_curve.png``, ``evidence_vs_gamma.png``,
  ``training.png``, ``generated_beta1.png``, ``generated_beta_star.png``;
* ``runs/`` (not committed) — data files, specs, sweep files and run folders.

``--resume`` keeps the finished sweep points in ``OUT/runs/`` (otherwise the
folder is cleared first): a rerun then only recomputes the held-out
evaluation, the tables and the figures.  ``--quick``: K = 5, η ∈ {1, 3, 30},
γ ∈ {1, 3}, β ∈ {0.7, 1, 1.3}, one chain of 40 + 40 draws, 2 rungs × 30
draws (a smoke test, not a result).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    finish_study, float_list, fmt_num, int_list, md_head, md_row, pin_threads, start_study, study_parser, write_csv,
)

pin_threads(1)  # before NumPy/JAX are imported: one core (BLAS and XLA single-threaded)

import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from analysis.real_data_digits import heldout_rb  # noqa: E402
from bayes_sbm import evidence, predictive, reports, runs, sweep, theory  # noqa: E402
from bayes_sbm.data import data_frame, load_data, read_data  # noqa: E402
from bayes_sbm.io import save_npy_atomic, write_text_atomic  # noqa: E402
from bayes_sbm.plots import image_grid, save_figure  # noqa: E402

HERE = Path(__file__).resolve().parent

DIGIT = 3
#: Seed of the shuffle of the class's rows (training sets are its first K rows, the held-out set the rows after max K).
SPLIT_SEED = 0
SIZES = (5, 10, 20, 40)
GAMMA = 1.0
#: Posterior powers of the learning curve: Bayes and a tempered posterior; MAP_ETA is the MAP-like fit.
ETAS = (1.0, 0.5, 3.0)
MAP_ETA = 30.0
GAMMAS = (0.1, 0.3, 1.0, 3.0)
#: β grid of the plug-in curves (one W: cheap) and the sub-grid of the posterior-predictive curves (S·M integrals each).
BETAS = (0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0)
PP_BETAS = (0.7, 0.85, 1.0, 1.15, 1.3, 1.5)
#: K of the γ grid, the evidence and the generated images.
CURVE_K = 20
NUTS = {"num_warmup": 150, "num_samples": 200, "num_chains": 2}
#: TI ladder: 10 rungs t_k = (k/10)^4, bisected up to 14 where the trapezoid's correction is largest (5 rungs left
#: TI and stepping stone 36–170 nats apart at γ ≤ 1; this ladder brings them within ~20).
LADDER = {"rungs": 10, "max_rungs": 14, "samples": 100, "warmup": 50}
#: Generated images per grid, and their PRNG seed.
NUM_GENERATED, GENERATE_SEED = 64, 0
#: Pixel range of the digits (load_digits: integers 0 … 16): the colour range of every image grid.
PIXEL_RANGE = (0.0, 16.0)
IMAGE_SHAPE = (8, 8)

QUICK = {"sizes": (5,), "etas": (1.0, 3.0), "gammas": (1.0, 3.0), "betas": (0.7, 1.0, 1.3), "pp_betas": (0.7, 1.0, 1.3),
         "nuts": {"num_warmup": 40, "num_samples": 40, "num_chains": 1},
         "ladder": {"rungs": 2, "max_rungs": 2, "samples": 30, "warmup": 30}}

LEARNING_COLUMNS = (
    "K", "model", "eta", "beta", "mean", "se", "mcse", "bias", "median_weight_ess", "min_weight_ess", "typical", "typical_se",
    "plain_mean", "plain_median_weight_ess", "diff_vs_bayes", "diff_vs_bayes_se", "num_points", "num_draws", "effective_draws",
)
BETA_COLUMNS = ("K", "beta", "bayes_mean", "bayes_se", "bayes_mcse", "bayes_median_weight_ess", "bayes_typical",
                "plugin_mean", "plugin_se", "map_mean", "map_se")
OPTIMUM_COLUMNS = ("K", "r", "c_1", "phase", "beta_c", "beta_edge", "beta_star_grid", "beta_star", "in_window",
                   "mean_at_beta_star", "mean_at_beta1", "gain", "gain_se", "plugin_beta_star", "map_beta_star")
GAMMA_COLUMNS = ("gamma", "ti", "ti_se", "stepping_stone", "stepping_stone_se", "theory", "phase", "evidence_warnings",
                 "bayes_mean", "bayes_se", "bayes_mcse", "bayes_median_weight_ess", "plugin_mean", "plugin_se", "typical")
FIT_COLUMNS = ("sweep", "point", "K", "gamma", "eta", "divergences", "min_ess_bulk", "max_r_hat", "fit_s", "num_warnings")


# --------------------------------------------------------------------------
# data, specs and sweeps
# --------------------------------------------------------------------------
def write_inputs(work: Path, digit: int, sizes, etas, nuts: dict, ladder: dict, gammas) -> dict:
    """The class's rows, nested training files, the held-out file, one spec per K and the three sweep files."""
    X, y = load_digits(return_X_y=True)
    rows = np.flatnonzero(y == digit)
    perm = np.random.default_rng(SPLIT_SEED).permutation(rows)
    pool = max(sizes)
    work.mkdir(parents=True, exist_ok=True)
    for K in sizes:
        save_npy_atomic(work / f"train_K{K:02d}.npy", X[perm[:K]].astype(np.float64))
        write_text_atomic(work / f"digits_K{K:02d}.toml", spec_text(K, digit, nuts))
    save_npy_atomic(work / "heldout.npy", X[perm[pool:]].astype(np.float64))
    curve_k = CURVE_K if CURVE_K in sizes else max(sizes)
    specs = ", ".join(f'"digits_K{K:02d}.toml"' for K in sizes)
    eta_list = ", ".join(repr(float(e)) for e in (*etas, MAP_ETA))
    write_text_atomic(work / "fits.toml", "\n".join([
        'name = "digits_fits"', 'description = "digits: K x eta (Bayes, tempered, MAP-like)"', 'task = "fit"', 'out = "fits"', "",
        "[grid]", f"spec = [{specs}]", f"model.eta = [{eta_list}]", "", "[set]", f"model.gamma = {GAMMA!r}", ""]))
    others = [g for g in gammas if g != GAMMA]
    if others:
        write_text_atomic(work / "gamma_fits.toml", "\n".join([
            'name = "digits_gamma_fits"', f'description = "digits K = {curve_k}: gamma grid (eta = 1)"', 'task = "fit"',
            f'base = "digits_K{curve_k:02d}.toml"', 'out = "gamma_fits"', "",
            "[grid]", f"model.gamma = [{', '.join(repr(float(g)) for g in others)}]", ""]))
    write_text_atomic(work / "evidence.toml", "\n".join([
        'name = "digits_evidence"', f'description = "digits K = {curve_k}: log evidence over gamma (eta = 1)"', 'task = "evidence"',
        f'base = "digits_K{curve_k:02d}.toml"', 'out = "evidence"', "",
        "[grid]", f"model.gamma = [{', '.join(repr(float(g)) for g in gammas)}]", "",
        "[evidence]", *(f"{k} = {v}" for k, v in ladder.items()), "ti = true", "svi = false", ""]))
    return {"class_rows": int(rows.size), "train_pool": [int(i) for i in perm[:pool]], "heldout_rows": int(rows.size - pool),
            "curve_k": curve_k, "gamma_fits": bool(others)}


def spec_text(K: int, digit: int, nuts: dict) -> str:
    return "\n".join([
        f'name = "digits_K{K:02d}"',
        f'description = "scikit-learn digits, class {digit}: the first {K} shuffled rows, centred and projected (N = 64)"',
        "", "[model]", "N = 64", f"gamma = {GAMMA!r}", "eta = 1.0", 'parametrization = "aligned"',
        "", "[data]", 'source = "file"', f'path = "train_K{K:02d}.npy"', 'heldout_path = "heldout.npy"', "center = true", "project = true",
        "", "[inference]", *(f"{k} = {v}" for k, v in nuts.items()), "seed = 0",
        "", "[predictive]", "num_points = 1", ""])


def k_of(spec) -> int:
    """K of a point's spec (its name is ``digits_K05`` …, kept by the sweep's overrides)."""
    return int(spec.name.rsplit("_K", 1)[1])


def run_sweep_here(path: Path, label: str) -> tuple:
    """Every point of a sweep file, one after the other in this process (finished points reused); ``(sweep, rows)``."""
    sw = sweep.load_sweep(path)
    statuses = sweep.plan(sw)
    rows = {}
    for i, s in enumerate(statuses, 1):
        if s.state == "done":
            rows[s.point.name] = s.row
            print(f"[{label}] {i}/{len(statuses)} {s.point.name}: finished before", flush=True)
            continue
        row = sweep.run_point(s.point, sw.task, release_compiled=True)  # many points in one process: drop each one's programs
        print(f"[{label}] {sweep.format_progress(row, i, len(statuses))}", flush=True)
        if row.get("status") != "ok":
            raise RuntimeError(f"{label}: point {row.get('point')} failed: {row.get('error')}")
        rows[s.point.name] = row
    ordered = [rows[p.name] for p in sw.points]
    sweep.write_results(sw, ordered)
    return sw, ordered


# --------------------------------------------------------------------------
# held-out evaluation of one run folder
# --------------------------------------------------------------------------
class Fitted:
    """A run folder read for evaluation: coupling draws, the training frame, the transformed held-out rows."""

    def __init__(self, run_dir: Path):
        self.run = Path(run_dir)
        W = reports.run_coupling_draws(self.run)  # (chain, draw, N, N); aligned runs: no randomness
        self.N = W.shape[-1]
        train = load_data(self.run / "data.npy")
        frame = data_frame(train)
        self.Q, self.c, self.r = frame.Q, frame.c, int(frame.c.size)
        ll = evidence.log_likelihood_of_couplings(train, W)  # (chain, draw): the draws' training log-likelihood
        self.effective_draws = heldout_rb.effective_draws(ll)
        self.W = W.reshape((-1, self.N, self.N))
        self.W_bar = self.W.mean(axis=0)
        transform = runs.load_run_transform(self.run, self.N)
        self.heldout = transform.apply(read_data(self.run / runs.HELDOUT_FILE), name=str(self.run / runs.HELDOUT_FILE))

    def posterior_predictive(self, beta: float) -> heldout_rb.LogMeanExp:
        lp = heldout_rb.rotation_averaged_log_prob(self.heldout, self.W, self.Q, self.r, beta)
        return heldout_rb.log_mean_exp(lp, effective_draws=self.effective_draws)

    def plain(self, beta: float):
        return predictive.predictive_log_density_with_bias(self.heldout, self.W, beta, effective_draws=self.effective_draws)

    def plugin(self, beta: float) -> np.ndarray:
        return predictive.predictive_log_density(self.heldout, self.W_bar[None], beta)


def mean_se(v) -> tuple[float, float]:
    v = np.asarray(v, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan


def model_row(K, model, eta, beta, values, *, lme=None, plain=None, reference=None) -> dict:
    """One learning-curve row: mean ± SE over points of ``values`` (M,), with the Monte Carlo columns of ``lme``."""
    m, se = mean_se(values)
    row = {"K": K, "model": model, "eta": eta, "beta": beta, "mean": m, "se": se, "num_points": int(np.size(values))}
    if lme is not None:
        t, t_se = mean_se(lme.typical)
        row |= {"mcse": float(lme.mcse.mean()), "bias": float(lme.bias.mean()), "median_weight_ess": float(np.median(lme.weight_ess)),
                "min_weight_ess": float(lme.weight_ess.min()), "typical": t, "typical_se": t_se, "num_draws": lme.num_draws,
                "effective_draws": lme.effective_draws}
    if plain is not None:
        row |= {"plain_mean": float(plain.log_density.mean()), "plain_median_weight_ess": float(np.median(plain.weight_ess))}
    if reference is not None:
        row["diff_vs_bayes"], row["diff_vs_bayes_se"] = mean_se(np.asarray(values) - reference)
    return row


def theory_window(c, gamma: float, eta: float) -> tuple[float, float, str]:
    """(β_c, √(γη), phase) of the THEORY.md §4 saddle at the data spectrum c (β_c = g_1 when u_1 > 0, else NaN; §6)."""
    s = theory.posterior_saddle(c, gamma, eta)
    return (float(s.g[0]) if s.u[0] > 0 else math.nan), math.sqrt(s.kappa), s.phase


def refine_argmax(betas, means) -> tuple[float, float]:
    """(grid argmax, vertex of the parabola through the best point and its neighbours; the grid value at an edge)."""
    b, y = np.asarray(betas, float), np.asarray(means, float)
    i = int(np.nanargmax(y))
    if i == 0 or i == b.size - 1:
        return float(b[i]), float(b[i])
    A = np.vstack([b[i - 1:i + 2] ** 2, b[i - 1:i + 2], np.ones(3)]).T
    a2, a1, _ = np.linalg.solve(A, y[i - 1:i + 2])
    return float(b[i]), float(-a1 / (2 * a2)) if a2 < 0 else float(b[i])


# --------------------------------------------------------------------------
# figures and tables
# --------------------------------------------------------------------------
MODEL_STYLE = {
    "bayes": ("posterior predictive, η = 1", "C0", "o-"),
    "tempered": ("posterior predictive, η = {eta:g}", "C2", "D-"),  # colour by η: TEMPERED_COLORS
    "bayes_beta_star": ("posterior predictive, η = 1, β = β*", "C4", "*-"),
    "plugin": ("plug-in W̄ (η = 1)", "C1", "s--"),
    "map": ("MAP-like plug-in (η = {eta:g})", "C3", "v--"),
    "bayes_plain": ("plain log-mean-exp, η = 1", "0.5", "o:"),
}


#: Colours of the tempered posteriors by η (others: grey).
TEMPERED_COLORS = {0.5: "C2", 3.0: "C5"}


def fmt(v, digits: int = 2) -> str:
    """:func:`analysis._common.fmt_num`, with an empty value (None) as a dash."""
    return "–" if v is None else fmt_num(v, digits)


def plot_learning_curve(rows, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.2, 4.6), layout="constrained")
    ax.axhline(0.0, color="0.3", lw=1.0, ls=":", label="uniform on the sphere (0)")
    models = []
    for r in rows:
        key = (r["model"], r["eta"])
        if key not in models:
            models.append(key)
    for model, eta in models:
        sel = sorted((r for r in rows if r["model"] == model and r["eta"] == eta), key=lambda r: r["K"])
        label, color, style = MODEL_STYLE[model]
        if model == "tempered":
            color = TEMPERED_COLORS.get(eta, "0.6")
        ax.errorbar([r["K"] for r in sel], [r["mean"] for r in sel], yerr=[r["se"] for r in sel], fmt=style, color=color,
                    capsize=3, label=label.format(eta=eta))
    bayes = sorted((r for r in rows if r["model"] == "bayes"), key=lambda r: r["K"])
    if bayes and "plain_mean" in bayes[0]:
        label, color, style = MODEL_STYLE["bayes_plain"]
        ax.plot([r["K"] for r in bayes], [r["plain_mean"] for r in bayes], style, color=color, label=label)
    ax.set_xscale("log", base=2)
    ks = sorted({r["K"] for r in rows})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("training images K (N = 64 pixels)")
    ax.set_ylabel("mean held-out log density per image (nats)")
    ax.set_title("Digits: held-out log-likelihood vs K at β = 1 (± SE over held-out images)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_beta_curve(beta_rows, optima, path: Path) -> Path:
    ks = sorted({r["K"] for r in beta_rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(3.2 * len(ks) + 0.6, 3.6), layout="constrained", squeeze=False)
    for ax, K in zip(axes[0], ks):
        sel = sorted((r for r in beta_rows if r["K"] == K), key=lambda r: r["beta"])
        b = [r["beta"] for r in sel]
        o = next(o for o in optima if o["K"] == K)
        if math.isfinite(o["beta_c"]):
            ax.axvspan(o["beta_c"], o["beta_edge"], color="C0", alpha=0.12, label="theory window (β_c, √γη)")
        else:
            ax.axvline(o["beta_edge"], color="C0", alpha=0.4, label="√γη (no β_c: u_1 = 0)")
        pp = [r for r in sel if r.get("bayes_mean") is not None]
        ax.errorbar([r["beta"] for r in pp], [r["bayes_mean"] for r in pp], yerr=[r["bayes_se"] for r in pp], fmt="o-", color="C0",
                    capsize=2, label="posterior predictive")
        ax.errorbar(b, [r["plugin_mean"] for r in sel], yerr=[r["plugin_se"] for r in sel], fmt="s--", color="C1", capsize=2,
                    label="plug-in W̄")
        ax.errorbar(b, [r["map_mean"] for r in sel], yerr=[r["map_se"] for r in sel], fmt="v--", color="C3", capsize=2,
                    label="MAP-like plug-in")
        ax.axvline(o["beta_star"], color="C0", ls="--", lw=1.0)
        ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
        top = max([r["plugin_mean"] for r in sel] + [r["bayes_mean"] for r in pp])
        ax.set_ylim(max(min(r["bayes_mean"] for r in pp), top - 25.0) - 2.0, top + 2.0)
        ax.set_title(f"K = {K}: β* = {o['beta_star']:.2f}", fontsize=9)
        ax.set_xlabel("sampling inverse temperature β")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean held-out log density (nats)")
    axes[0][0].legend(fontsize=6)
    return save_figure(fig, path)


def plot_evidence(gamma_rows, path: Path) -> Path:
    rows = sorted(gamma_rows, key=lambda r: r["gamma"])
    g = [r["gamma"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.8), layout="constrained")
    a1.errorbar(g, [r["ti"] for r in rows], yerr=[r["ti_se"] for r in rows], fmt="o-", capsize=3, color="C0", label="TI")
    a1.errorbar(g, [r["stepping_stone"] for r in rows], yerr=[r["stepping_stone_se"] for r in rows], fmt="s--", capsize=3,
                color="C2", label="stepping stone")
    a1.plot(g, [r["theory"] for r in rows], "k:", label="large-N theory (§5) at the training spectrum")
    a1.set_ylabel("log evidence log Y (nats)")
    a2.errorbar(g, [r["bayes_mean"] for r in rows], yerr=[r["bayes_se"] for r in rows], fmt="o-", capsize=3, color="C0",
                label="posterior predictive")
    a2.errorbar(g, [r["plugin_mean"] for r in rows], yerr=[r["plugin_se"] for r in rows], fmt="s--", capsize=3, color="C1",
                label="plug-in W̄")
    a2.set_ylabel("mean held-out log density, β = 1 (nats)")
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xlabel("prior precision γ (η = 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    a1.axvline(g[int(np.nanargmax([r["ti"] for r in rows]))], color="C0", lw=0.8, alpha=0.6)
    a2.axvline(g[int(np.nanargmax([r["bayes_mean"] for r in rows]))], color="C0", lw=0.8, alpha=0.6)
    fig.suptitle("Does the evidence pick what generalises? (digits, η = 1)", fontsize=10)
    return save_figure(fig, path)


def cell(m, se, mc=None, digits=2) -> str:
    text = f"{fmt(m, digits)} ± {fmt(se, digits)}"
    return text + (f" [{fmt(mc, digits)}]" if mc is not None and math.isfinite(mc) else "")


def markdown(learning, optima, gamma_rows, fit_rows, info) -> str:
    lines = [f"# Digits (class {info['digit']}): held-out log-likelihood, temperature and evidence", "",
             f"N = 64 pixels; training sets: the first K of {info['class_rows']} shuffled images of the class; "
             f"{info['heldout_rows']} held-out images; centred and projected onto |x|² = N. "
             "Held-out log density per image in nats relative to the uniform distribution on the sphere (uniform = 0). "
             "Cells: mean ± SE over held-out images [mean MCSE of the Monte Carlo estimate].", "",
             "## Learning curve at β = 1", ""]
    models = []
    for r in learning:
        if (r["model"], r["eta"]) not in models:
            models.append((r["model"], r["eta"]))
    head = ["K", *(MODEL_STYLE[m][0].format(eta=e) for m, e in models), "uniform"]
    lines += md_head(head)
    for K in sorted({r["K"] for r in learning}):
        cells = [str(K)]
        for m, e in models:
            r = next((r for r in learning if r["K"] == K and r["model"] == m and r["eta"] == e), None)
            cells.append("–" if r is None else cell(r["mean"], r["se"], r.get("mcse")))
        lines.append(md_row(cells + ["0"]))
    lines += ["", "Paired differences to the posterior predictive (η = 1, β = 1), mean ± SE over held-out images:", ""]
    lines += md_head(["K", *(MODEL_STYLE[m][0].format(eta=e) for m, e in models if m != "bayes")])
    for K in sorted({r["K"] for r in learning}):
        cells = [str(K)]
        for m, e in models:
            if m == "bayes":
                continue
            r = next((r for r in learning if r["K"] == K and r["model"] == m and r["eta"] == e), None)
            cells.append("–" if r is None else cell(r["diff_vs_bayes"], r["diff_vs_bayes_se"]))
        lines.append(md_row(cells))
    lines += ["", "Monte Carlo quality of the posterior-predictive estimates (Rao–Blackwellised vs plain log-mean-exp):", ""]
    lines += md_head(["K", "model", "median weight ESS", "min weight ESS", "mean bias", "plain estimate", "plain median ESS",
                      "E_W log p (lower bound)"])
    for r in learning:
        if "median_weight_ess" in r and r["model"] in ("bayes", "tempered", "bayes_beta_star"):
            lines.append(md_row([str(r["K"]), MODEL_STYLE[r["model"]][0].format(eta=r["eta"]), fmt(r["median_weight_ess"], 1),
                                 fmt(r["min_weight_ess"], 1), fmt(r["bias"], 3), fmt(r.get("plain_mean"), 2),
                                 fmt(r.get("plain_median_weight_ess"), 1), cell(r["typical"], r["typical_se"])]))
    lines += ["", "## Sampling temperature β (THEORY.md §6)", "",
              "β*: maximiser of the Bayes held-out curve (grid, and the vertex of a parabola through the best three points); "
              "theory window (β_c, √(γη)) of the §4 saddle at the training spectrum; gain = held-out log density at β* − at β = 1 "
              "(paired over images).", ""]
    lines += md_head(["K", "r", "c_1", "phase", "window (β_c, √γη)", "β* (grid)", "in window", "at β = 1", "at β*", "gain",
                      "β* plug-in", "β* MAP-like"])
    for o in optima:
        lines.append(md_row([str(o["K"]), str(o["r"]), fmt_num(o["c_1"], 2), o["phase"],
                             f"({fmt_num(o['beta_c'], 3)}, {fmt_num(o['beta_edge'], 3)})",
                             f"{fmt_num(o['beta_star'], 2)} ({fmt_num(o['beta_star_grid'], 2)})", o["in_window"],
                             fmt_num(o["mean_at_beta1"], 2), fmt_num(o["mean_at_beta_star"], 2), cell(o["gain"], o["gain_se"]),
                             fmt_num(o["plugin_beta_star"], 2), fmt_num(o["map_beta_star"], 2)]))
    lines += ["", f"## Evidence vs held-out log-likelihood over γ (K = {info['curve_k']}, η = 1, β = 1)", ""]
    lines += md_head(["γ", "phase (theory)", "log Y: TI", "log Y: stepping stone", "log Y: theory", "held-out: posterior predictive",
                      "held-out: plug-in", "E_W log p", "evidence warnings"])
    for r in sorted(gamma_rows, key=lambda r: r["gamma"]):
        lines.append(md_row([fmt_num(r["gamma"], 2), r["phase"], cell(r["ti"], r["ti_se"], digits=1),
                             cell(r["stepping_stone"], r["stepping_stone_se"], digits=1), fmt_num(r["theory"], 1),
                             cell(r["bayes_mean"], r["bayes_se"], r["bayes_mcse"]), cell(r["plugin_mean"], r["plugin_se"]),
                             fmt_num(r["typical"], 2), str(r["evidence_warnings"])]))
    g_ev = max(gamma_rows, key=lambda r: r["ti"])["gamma"]
    g_ho = max(gamma_rows, key=lambda r: r["bayes_mean"])["gamma"]
    lines += ["", f"γ̂ = argmax log Y (TI) = {fmt_num(g_ev, 2)}; argmax of the held-out log-likelihood = {fmt_num(g_ho, 2)}.", "",
              "## Fits", ""]
    lines += md_head(["sweep", "point", "divergences", "min ESS (latent)", "max R-hat", "seconds"])
    for f in fit_rows:
        lines.append(md_row([f["sweep"], f["point"], fmt(f["divergences"], 0), fmt(f["min_ess_bulk"], 0),
                             fmt(f["max_r_hat"], 3), fmt(f["fit_s"], 1)]))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parser():
    p = study_parser(__doc__, HERE / "results", "smoke test: K = 5, eta in {1, 3, 30}, gamma in {1, 3}, 40 + 40 draws, 2 rungs",
                     "keep the finished sweep points in OUT/runs (default: start afresh)")
    p.add_argument("--digit", type=int, default=DIGIT, help="digit class 0-9 (default %(default)s)")
    p.add_argument("--sizes", type=int_list, help="training sizes K (default 5,10,20,40)")
    p.add_argument("--etas", type=float_list, help="posterior powers of the learning curve, 1 first (default 1,3)")
    p.add_argument("--gammas", type=float_list, help="gamma grid of the evidence (default 0.1,0.3,1,3,10)")
    p.add_argument("--betas", type=float_list, help="beta grid (default 0.5..2, 9 values)")
    return p


def main(argv=None) -> int:
    args, out, t_start = start_study(parser(), argv)
    q = args.quick
    sizes = tuple(sorted(set(args.sizes or (QUICK["sizes"] if q else SIZES))))
    etas = tuple(args.etas or (QUICK["etas"] if q else ETAS))
    gammas = tuple(sorted(set(args.gammas or (QUICK["gammas"] if q else GAMMAS))))
    betas = tuple(sorted(set(args.betas or (QUICK["betas"] if q else BETAS)) | {1.0}))
    pp_betas = tuple(sorted(set(QUICK["pp_betas"] if q else PP_BETAS) & set(betas) | {1.0}))
    nuts = QUICK["nuts"] if q else NUTS
    ladder = QUICK["ladder"] if q else LADDER
    if etas[0] != 1.0:
        raise SystemExit("--etas: must start with 1 (the Bayes posterior)")
    if GAMMA not in gammas:
        raise SystemExit(f"--gammas: must contain gamma = {GAMMA:g} (the gamma of the learning curve)")
    if not 0 <= args.digit <= 9:
        raise SystemExit(f"--digit: must be 0-9, got {args.digit}")
    work = out / "runs"
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    info = write_inputs(work, args.digit, sizes, etas, nuts, ladder, gammas) | {"digit": args.digit}
    curve_k = info["curve_k"]
    timings = {}

    t0 = time.perf_counter()
    fits_sw, fits_rows = run_sweep_here(work / "fits.toml", "fits")
    gamma_sw, gamma_fit_rows = run_sweep_here(work / "gamma_fits.toml", "gamma_fits") if info["gamma_fits"] else (None, [])
    timings["fits_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev_sw, ev_rows = run_sweep_here(work / "evidence.toml", "evidence")
    timings["evidence_s"] = time.perf_counter() - t0

    fit_rows = []
    for label, sw, rows in (("fits", fits_sw, fits_rows), ("gamma_fits", gamma_sw, gamma_fit_rows)):
        for p, r in zip(sw.points if sw else (), rows):
            fit_rows.append({"sweep": label, "point": p.name, "K": k_of(p.spec), "gamma": p.spec.model.gamma,
                             "eta": p.spec.model.eta, **{k: r.get(k) for k in ("divergences", "min_ess_bulk", "max_r_hat", "fit_s",
                                                                                "num_warnings")}})

    def run_of(sw, **values):
        for p in sw.points:
            if all((p.spec.model.eta if k == "eta" else p.spec.model.gamma if k == "gamma" else k_of(p.spec)) == v
                   for k, v in values.items()):
                return p.folder / sweep.RUN_DIR
        raise KeyError(values)

    # ---- learning curve, β curves, β* -------------------------------------------------------------
    t0 = time.perf_counter()
    learning, beta_rows, optima = [], [], []
    bayes_fits = {}
    for K in sizes:
        bayes = Fitted(run_of(fits_sw, K=K, eta=1.0))
        bayes_fits[K] = bayes
        mapf = Fitted(run_of(fits_sw, K=K, eta=MAP_ETA))
        curve = {b: bayes.posterior_predictive(b) for b in pp_betas}
        plug = {b: bayes.plugin(b) for b in betas}
        mapc = {b: mapf.plugin(b) for b in betas}
        ref = curve[1.0].log_density
        learning.append(model_row(K, "bayes", 1.0, 1.0, ref, lme=curve[1.0], plain=bayes.plain(1.0)))
        for eta in etas[1:]:
            tf = Fitted(run_of(fits_sw, K=K, eta=eta))
            learning.append(model_row(K, "tempered", eta, 1.0, tf.posterior_predictive(1.0).log_density,
                                      lme=tf.posterior_predictive(1.0), plain=tf.plain(1.0), reference=ref))
        learning.append(model_row(K, "plugin", 1.0, 1.0, plug[1.0], reference=ref))
        learning.append(model_row(K, "map", MAP_ETA, 1.0, mapc[1.0], reference=ref))
        for b in betas:
            pm, pse = mean_se(plug[b])
            mm, mse = mean_se(mapc[b])
            row = {"K": K, "beta": b, "plugin_mean": pm, "plugin_se": pse, "map_mean": mm, "map_se": mse}
            if b in curve:
                bm, bse = mean_se(curve[b].log_density)
                row |= {"bayes_mean": bm, "bayes_se": bse, "bayes_mcse": float(curve[b].mcse.mean()),
                        "bayes_median_weight_ess": float(np.median(curve[b].weight_ess)), "bayes_typical": float(curve[b].typical.mean())}
            beta_rows.append(row)
        grid_star, star = refine_argmax(pp_betas, [mean_se(curve[b].log_density)[0] for b in pp_betas])
        at_star = bayes.posterior_predictive(star) if star not in curve else curve[star]
        learning.append(model_row(K, "bayes_beta_star", 1.0, star, at_star.log_density, lme=at_star, reference=ref))
        beta_c, edge, phase = theory_window(bayes.c, GAMMA, 1.0)
        gain, gain_se = mean_se(at_star.log_density - ref)
        optima.append({
            "K": K, "r": bayes.r, "c_1": float(bayes.c[0]), "phase": phase, "beta_c": beta_c, "beta_edge": edge,
            "beta_star_grid": grid_star, "beta_star": star,
            "in_window": ("–" if not math.isfinite(beta_c) else "yes" if beta_c <= star <= edge else "below" if star < beta_c else "above"),
            "mean_at_beta_star": float(at_star.log_density.mean()), "mean_at_beta1": float(ref.mean()), "gain": gain, "gain_se": gain_se,
            "plugin_beta_star": refine_argmax(betas, [plug[b].mean() for b in betas])[1],
            "map_beta_star": refine_argmax(betas, [mapc[b].mean() for b in betas])[1],
        })
        print(f"[held-out] K={K}: Bayes {ref.mean():.2f}, plug-in {plug[1.0].mean():.2f}, MAP-like {mapc[1.0].mean():.2f} (beta = 1); "
              f"beta* = {star:.3f}, window ({beta_c:.3f}, {edge:.3f}) {phase}", flush=True)
    timings["heldout_s"] = time.perf_counter() - t0

    # ---- γ grid: evidence and held-out --------------------------------------------------------------
    t0 = time.perf_counter()
    gamma_rows = []
    c_curve = bayes_fits[curve_k].c
    for p, r in zip(ev_sw.points, ev_rows):
        g = p.spec.model.gamma
        rep = reports_evidence(p.folder)
        fitted = bayes_fits[curve_k] if g == GAMMA else Fitted(run_of(gamma_sw, gamma=g))
        lme = fitted.posterior_predictive(1.0)
        bm, bse = mean_se(lme.log_density)
        pm, pse = mean_se(fitted.plugin(1.0))
        est = rep["estimators"]
        gamma_rows.append({
            "gamma": g, "ti": est["ti"]["log_evidence"], "ti_se": est["ti"]["se"],
            "stepping_stone": est["stepping_stone"]["log_evidence"], "stepping_stone_se": est["stepping_stone"]["se"],
            "theory": float(theory.log_evidence(c_curve, g, 1.0)) * fitted.N, "phase": rep["phase"],
            "evidence_warnings": len(rep.get("warnings") or []), "bayes_mean": bm, "bayes_se": bse,
            "bayes_mcse": float(lme.mcse.mean()), "bayes_median_weight_ess": float(np.median(lme.weight_ess)), "plugin_mean": pm,
            "plugin_se": pse, "typical": float(lme.typical.mean()),
        })
        print(f"[gamma] {g:g}: log Y TI {gamma_rows[-1]['ti']:.1f} ± {gamma_rows[-1]['ti_se']:.1f} (theory {gamma_rows[-1]['theory']:.1f}); "
              f"held-out {bm:.2f} ± {bse:.2f}", flush=True)
    timings["gamma_heldout_s"] = time.perf_counter() - t0

    # ---- generation ------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    gen_run = bayes_fits[curve_k].run
    star = next(o for o in optima if o["K"] == curve_k)["beta_star"]
    figures = [plot_learning_curve(learning, out / "learning_curve.png"), plot_beta_curve(beta_rows, optima, out / "beta_curve.png"),
               plot_evidence(gamma_rows, out / "evidence_vs_gamma.png")]
    train_raw = read_data(work / f"train_K{curve_k:02d}.npy")
    figures.append(image_grid(train_raw, out / "training.png", IMAGE_SHAPE, vmin=PIXEL_RANGE[0], vmax=PIXEL_RANGE[1],
                              title=f"the K = {curve_k} training images (digit {args.digit})"))
    keys = jax.random.split(jax.random.key(GENERATE_SEED))
    for key, beta, name in ((keys[0], 1.0, "generated_beta1.png"), (keys[1], star, "generated_beta_star.png")):
        gen = reports.generate_samples(gen_run, key, NUM_GENERATED, beta)
        figures.append(image_grid(gen.data, out / name, IMAGE_SHAPE, vmin=PIXEL_RANGE[0], vmax=PIXEL_RANGE[1],
                                  title=f"posterior predictive, K = {curve_k}, β = {beta:.2f}"))
    timings["generation_s"] = time.perf_counter() - t0

    files = {"learning_curve.csv": (LEARNING_COLUMNS, learning), "beta_curve.csv": (BETA_COLUMNS, beta_rows),
             "beta_optimum.csv": (OPTIMUM_COLUMNS, optima), "gamma_grid.csv": (GAMMA_COLUMNS, gamma_rows),
             "fits.csv": (FIT_COLUMNS, fit_rows)}
    for name, (cols, rows) in files.items():
        write_csv(out / name, cols, rows, none="")
    g_ev = max(gamma_rows, key=lambda r: r["ti"])["gamma"]
    g_ho = max(gamma_rows, key=lambda r: r["bayes_mean"])["gamma"]
    finish_study(
        out, "real_data_digits", t_start, files=list(files), table=markdown(learning, optima, gamma_rows, fit_rows, info),
        figures=figures, seed=SPLIT_SEED,
        checks="held-out log posterior-predictive density of SBM posteriors on real data (THEORY.md §3), temperature window (§6), "
               "evidence (§5) vs held-out choice of gamma",
        quick=bool(q),
        settings={"digit": args.digit, "sizes": list(sizes), "gamma": GAMMA, "etas": list(etas), "map_eta": MAP_ETA,
                  "gammas": list(gammas), "betas": list(betas), "pp_betas": list(pp_betas), "curve_k": curve_k, "nuts": nuts, "ladder": ladder,
                  "parametrization": "aligned", "split_seed": SPLIT_SEED, "nuts_seed": 0, "generate_seed": GENERATE_SEED,
                  "num_generated": NUM_GENERATED, "fb_num_nodes": heldout_rb.FB_NUM_NODES, "resume": bool(args.resume)},
        data={k: info[k] for k in ("class_rows", "heldout_rows", "train_pool")},
        gamma_hat_evidence=g_ev, gamma_best_heldout=g_ho,
        timings=timings, cpu_s=time.process_time(),
    )
    return 0


def reports_evidence(point_folder: Path) -> dict:
    """The ``evidence.json`` of an evidence sweep point (the JSON of ``bayes-sbm evidence --json``)."""
    return json.loads((point_folder / sweep.EVIDENCE_FILE).read_text())


if __name__ == "__main__":
    raise SystemExit(main())
