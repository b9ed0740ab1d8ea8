"""Phase diagrams of the large-N posterior in the (γ, η) plane (THEORY.md §4–5).

Checks, as pictures and numbers:

* the K = 1 five-region diagram at the end of THEORY.md §4 (FMo, FMe, SG,
  PMo, PMe separated by the lines η = 1, γ = 1, η = γ and γη = 1);
* the K = 2 diagram for c = (1.6, 0.4) — the large-N data of the ω = 2.5
  rank-one teacher of §6 — with the BBP outlier lines a_k = √(γη), the
  bulk-edge line γη = 1 and the number d of condensed modes;
* the §5 evidence (1/N) log Y_η across every boundary crossed by the paths
  below and by the teacher–student study (γ-paths at η ∈ {0.5, 1, 2, 5}):
  its one-sided γ- and η-derivatives on both sides (does the first
  derivative jump?) and the one-sided second derivative along the path.

Outputs (in ``--out``, default ``analysis/phase_diagrams/results``):
``phase_diagram_K1.png``, ``phase_diagram_K2.png``, ``evidence_contours.png``,
``phase_map_K1.csv``, ``phase_map_K2.csv`` (the plotted grids),
``boundary_derivatives.csv`` and ``metadata.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    FULL_PRECISION_CSV, finish_study, pin_threads, save_png, start_study, study_parser, write_csv,
)

pin_threads()  # before NumPy is imported; Agg backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from scipy import ndimage  # noqa: E402

from bayes_sbm import theory as T  # noqa: E402

HERE = Path(__file__).resolve().parent

CASES = {"K1": (1.0,), "K2": (1.6, 0.4)}
GAMMA_RANGE = (0.01, 10.0)
ETA_RANGE = (0.02, 100.0)
# category -> (label, colour)
CATEGORIES = [
    (("PMo", 0), "PMo", "#9ecae1"),
    (("PMe", 0), "PMe", "#deebf7"),
    (("FMo", 1), "FMo", "#fdae6b"),
    (("FMo", 2), "FMo (d=2)", "#e6550d"),
    (("FMe", 1), "FMe", "#a1d99b"),
    (("FMe", 2), "FMe (d=2)", "#31a354"),
    (("SG", 1), "SG", "#bcbddc"),
]
# Paths along which boundaries are located: (case, varied parameter, fixed value).
PATHS = [
    ("K1", "gamma", 0.5),
    ("K1", "gamma", 2.0),
    ("K1", "eta", 0.5),
    ("K1", "eta", 3.0),
    # the teacher–student study's γ-paths (c = (1.6, 0.4) is the ω = 2.5 teacher data)
    ("K2", "gamma", 0.5),
    ("K2", "gamma", 1.0),
    ("K2", "gamma", 2.0),
    ("K2", "gamma", 5.0),
    ("K2", "gamma", 20.0),
    ("K2", "eta", 0.05),
    ("K2", "eta", 0.5),
    ("K2", "eta", 3.0),
]
#: Offset of the finite-difference base points from a boundary (relative).
FD_OFFSET = 1e-4
#: Finite-difference step (relative), small against FD_OFFSET so stencils stay on one side.
FD_STEP = 5e-6


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def phase_map(c, gammas, etas):
    """Category index, d, o, μ, M and (1/N) log Y on the grid (shape (len(etas), len(gammas)))."""
    keys = [k for k, _, _ in CATEGORIES]
    shape = (len(etas), len(gammas))
    cat = np.zeros(shape, int)
    d = np.zeros(shape, int)
    o = np.zeros(shape, int)
    mu = np.zeros(shape)
    mm = np.zeros(shape)
    logy = np.zeros(shape)
    phase = np.empty(shape, object)
    for i, e in enumerate(etas):
        for j, g in enumerate(gammas):
            ev = T.evidence_terms(c, g, e)
            s = ev.saddle
            cat[i, j] = keys.index((s.phase, min(s.d, 2) if s.phase != "SG" else 1))
            d[i, j], o[i, j], mu[i, j], mm[i, j] = s.d, s.o, s.mu, s.M
            logy[i, j] = ev.log_evidence
            phase[i, j] = s.phase
    return dict(cat=cat, d=d, o=o, mu=mu, M=mm, logy=logy, phase=phase)


def _label(c, g, e):
    s = T.posterior_saddle(c, g, e)
    return (s.phase, s.d, s.o)


def locate_boundaries(c, var, fixed, lo, hi, n):
    """Boundaries (label changes) along a path: [(x_b, label_below, label_above)]."""

    def lab(x):
        return _label(c, *((x, fixed) if var == "gamma" else (fixed, x)))

    xs = np.geomspace(lo, hi, n)
    labels = [lab(x) for x in xs]
    out = []
    for i in range(n - 1):
        if labels[i] == labels[i + 1]:
            continue
        a, b = xs[i], xs[i + 1]
        for _ in range(200):
            m = 0.5 * (a + b)
            if m in (a, b) or b - a <= 4e-16 * b:
                break
            if lab(m) == labels[i]:
                a = m
            else:
                b = m
        out.append((0.5 * (a + b), labels[i], labels[i + 1]))
    return out


def _grad(c, g, e, hg, he):
    """Central-difference (∂γ, ∂η) of (1/N) log Y at (γ, η)."""
    f = T.log_evidence
    dg = (f(c, g + hg, e) - f(c, g - hg, e)) / (2 * hg)
    de = (f(c, g, e + he) - f(c, g, e - he)) / (2 * he)
    return np.array([dg, de])


def _second_along(c, var, fixed, x, h):
    f = lambda x: T.log_evidence(c, *((x, fixed) if var == "gamma" else (fixed, x)))  # noqa: E731
    return (f(x + h) - 2 * f(x) + f(x - h)) / (h * h)


def boundary_derivatives(case, var, fixed, xb, lab_lo, lab_hi):
    """One-sided derivatives of (1/N) log Y at a boundary, extrapolated from each side.

    On side s the gradient is evaluated at x_b + s·kδ (k = 1, 2, δ = FD_OFFSET·x_b)
    by central differences with step FD_STEP·x_b and extrapolated linearly to
    the boundary (error O(δ²)).
    """
    c = CASES[case]
    g_b, e_b = (xb, fixed) if var == "gamma" else (fixed, xb)
    delta = FD_OFFSET * xb
    out = {}
    for side, sgn in (("below", -1.0), ("above", +1.0)):
        grads, d2 = [], []
        for k in (1, 2):
            x = xb + sgn * k * delta
            g, e = (x, fixed) if var == "gamma" else (fixed, x)
            grads.append(_grad(c, g, e, FD_STEP * g, FD_STEP * e))
            d2.append(_second_along(c, var, fixed, x, 0.25 * delta))
        out[side] = 2 * grads[0] - grads[1]
        out[side + "_d2"] = 2 * d2[0] - d2[1]
    f = T.log_evidence
    if var == "gamma":
        jump0 = f(c, xb * (1 + 1e-7), fixed) - f(c, xb * (1 - 1e-7), fixed)
    else:
        jump0 = f(c, fixed, xb * (1 + 1e-7)) - f(c, fixed, xb * (1 - 1e-7))
    lo, hi = out["below"], out["above"]
    return [
        case, ";".join(f"{v:g}" for v in c), var, f"{'eta' if var == 'gamma' else 'gamma'}={fixed:g}",
        float(g_b), float(e_b), f"{lab_lo[0]}(d={lab_lo[1]};o={lab_lo[2]})",
        f"{lab_hi[0]}(d={lab_hi[1]};o={lab_hi[2]})", float(f(c, g_b, e_b)), float(jump0),
        float(lo[0]), float(hi[0]), float(hi[0] - lo[0]),
        float(lo[1]), float(hi[1]), float(hi[1] - lo[1]),
        float(out["below_d2"]), float(out["above_d2"]), float(out["above_d2"] - out["below_d2"]),
        float(np.max(np.abs(hi - lo) / (1.0 + np.abs(lo)))),
    ]


DERIV_HEADER = [
    "case", "c", "path_var", "path_fixed", "gamma_b", "eta_b", "region_below", "region_above",
    "logY_b", "logY_jump_pm1e-7",
    "dlogY_dgamma_below", "dlogY_dgamma_above", "jump_dgamma",
    "dlogY_deta_below", "dlogY_deta_above", "jump_deta",
    "d2logY_path_below", "d2logY_path_above", "jump_d2_path",
    "max_rel_jump_first",  # max over γ, η of |jump| / (1 + |derivative|): FD noise level ~1e-8
]


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------
def draw_diagram(case, gammas, etas, pm, path: Path):
    c = CASES[case]
    fig, ax = plt.subplots(figsize=(7.0, 5.6))
    cmap = ListedColormap([col for _, _, col in CATEGORIES])
    ax.pcolormesh(gammas, etas, pm["cat"], cmap=cmap, vmin=-0.5, vmax=len(CATEGORIES) - 0.5, shading="nearest")
    # region boundaries (from the label map, d and phase changes)
    for k in range(len(CATEGORIES)):
        mask = (pm["cat"] == k).astype(float)
        if 0 < mask.sum() < mask.size:
            ax.contour(gammas, etas, mask, levels=[0.5], colors="k", linewidths=1.0)
    # analytic lines of §4
    gline = np.geomspace(*GAMMA_RANGE, 400)
    styles = ["--", ":", "-."]
    for k, ck in enumerate(c):
        ax.plot(gline, gline / ck**2, "k", ls=styles[k % 3], lw=1.2, alpha=0.8,
                label=f"outlier line $a_{k + 1}=\\sqrt{{\\gamma\\eta}}$ ($\\eta=\\gamma/c_{k + 1}^2$)")
    ax.plot(gline, 1 / gline, color="crimson", ls="--", lw=1.2, label=r"edge line $\gamma\eta=1$")
    c1 = max(c)
    ax.plot([c1, c1], [1 / c1, ETA_RANGE[1]], color="navy", lw=1.6, label=rf"PM boundary $\gamma=c_1={c1:g}$")
    # phase labels at the deepest interior point of each region
    for k, (_, label, _) in enumerate(CATEGORIES):
        mask = pm["cat"] == k
        if mask.sum() < 4:
            continue
        lab, n = ndimage.label(mask)
        for r in range(1, n + 1):
            comp = lab == r
            if comp.sum() < 4:
                continue
            dist = ndimage.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
            i, j = np.unravel_index(np.argmax(dist), dist.shape)
            ax.text(gammas[j], etas[i], label, ha="center", va="center", fontsize=11, weight="bold")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*GAMMA_RANGE)
    ax.set_ylim(*ETA_RANGE)
    ax.set_xlabel(r"regularisation $\gamma$")
    ax.set_ylabel(r"posterior power $\eta$")
    title = "K = 1, c = (1)" if case == "K1" else "K = 2, c = (1.6, 0.4)  [teacher data, ω = 2.5]"
    ax.set_title(f"Large-N posterior phases (THEORY §4): {title}", fontsize=10)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    save_png(fig, path)


def draw_evidence(gammas, etas, maps, bounds, path: Path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, case in zip(axes, ("K1", "K2")):
        pm = maps[case]
        for k in range(len(CATEGORIES)):
            mask = (pm["cat"] == k).astype(float)
            if 0 < mask.sum() < mask.size:
                ax.contour(gammas, etas, mask, levels=[0.5], colors="0.4", linewidths=0.8)
        z = pm["logy"]
        # sign-preserving log scale so the contours are readable over many decades
        zz = np.sign(z) * np.log10(1 + np.abs(z))
        cs = ax.contour(gammas, etas, zz, levels=25, cmap="viridis", linewidths=1.0)
        fig.colorbar(cs, ax=ax, label=r"sign$\cdot\log_{10}(1+|(1/N)\log Y|)$")
        for row in bounds:
            if row[0] == case:
                ax.plot(row[4], row[5], "r.", ms=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"$\gamma$")
        ax.set_ylabel(r"$\eta$")
        ax.set_title(f"(1/N) log Y (THEORY §5), {case}; grey: phase boundaries, red: FD points", fontsize=9)
    save_png(fig, path)


# --------------------------------------------------------------------------
def main(argv=None) -> int:
    args, out, t0 = start_study(study_parser(__doc__, HERE / "results", "coarse grids (smoke test)"), argv)
    n_grid = 36 if args.quick else 260
    n_path = 60 if args.quick else 400
    gammas = np.geomspace(*GAMMA_RANGE, n_grid)
    etas = np.geomspace(*ETA_RANGE, n_grid)

    maps = {}
    for case, c in CASES.items():
        pm = phase_map(c, gammas, etas)
        maps[case] = pm
        rows = [
            [float(g), float(e), pm["phase"][i, j], int(pm["d"][i, j]), int(pm["o"][i, j]),
             float(pm["mu"][i, j]), float(pm["M"][i, j]), float(pm["logy"][i, j])]
            for i, e in enumerate(etas) for j, g in enumerate(gammas)
        ]
        write_csv(out / f"phase_map_{case}.csv", ["gamma", "eta", "phase", "d", "o", "mu", "M", "log_evidence"], rows,
                  **FULL_PRECISION_CSV)
        draw_diagram(case, gammas, etas, pm, out / f"phase_diagram_{case}.png")

    deriv_rows = []
    for case, var, fixed in PATHS:
        lo, hi = GAMMA_RANGE if var == "gamma" else ETA_RANGE
        for xb, la, lb in locate_boundaries(CASES[case], var, fixed, lo, hi, n_path):
            deriv_rows.append(boundary_derivatives(case, var, fixed, xb, la, lb))
    write_csv(out / "boundary_derivatives.csv", DERIV_HEADER, deriv_rows, **FULL_PRECISION_CSV)
    draw_evidence(gammas, etas, maps, deriv_rows, out / "evidence_contours.png")

    max_jump = max((max(abs(r[12]), abs(r[15])) for r in deriv_rows), default=float("nan"))
    print(f"phase_diagrams: {len(deriv_rows)} boundaries, max |jump of first derivative| = {max_jump:.3g}")
    finish_study(
        out, "phase_diagrams", t0, files=[f"phase_map_{case}.csv" for case in CASES] + ["boundary_derivatives.csv"],
        figures=[out / f"phase_diagram_{case}.png" for case in CASES] + [out / "evidence_contours.png"],
        quick=bool(args.quick),
        parameters={
            "cases": {k: list(v) for k, v in CASES.items()},
            "gamma_range": GAMMA_RANGE,
            "eta_range": ETA_RANGE,
            "paths": PATHS,
            "fd_offset": FD_OFFSET,
            "fd_step": FD_STEP,
            "boundary_rtol": T.BOUNDARY_RTOL,
        },
        n_grid=n_grid,
        n_path=n_path,
        n_boundaries=len(deriv_rows),
        max_abs_first_derivative_jump=max_jump,
        **{"max_abs_logY_jump_pm1e-7": max((abs(r[9]) for r in deriv_rows), default=float("nan"))},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
