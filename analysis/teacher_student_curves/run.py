"""Teacher–student curves at ω = 2.5 (THEORY.md §6).

Checks, as pictures and numbers:

* "Regularisation (double descent)": the typical forward/reverse KLs and the
  predictive forward/reverse KLs of the K = 2 rank-one teacher as functions
  of γ for η ∈ {0.5, 1, 2, 5}; the typical reverse KL dips, rises across the
  FM/PM boundary (γ = c_1 = 2 − 1/ω) and falls again for η above
  η* ≈ 1.34 (the curve at η* is drawn for reference, and the local extrema
  of every curve are recorded in metadata.json);
* "Sampling temperature β (temperature tuning)": the typical forward KL
  ⟨D(P*‖P_{βW})⟩/N vs β at η = 5, γ ∈ {1.7, 2, 3}, with the window
  (β_c, √(γη)) shaded, in which the sampler condenses on the outlier and the
  forward KL is lowered.

Outputs (in ``--out``, default ``analysis/teacher_student_curves/results``):
``double_descent.png``, ``temperature_tuning.png``, ``kl_vs_gamma.csv``,
``kl_vs_beta.csv``, ``temperature_windows.csv`` and ``metadata.json``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bayes_sbm and analysis._common

from analysis._common import (  # noqa: E402
    FULL_PRECISION_CSV, finish_study, pin_threads, save_png, start_study, study_parser, write_csv,
)

pin_threads()  # before NumPy is imported; Agg backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bayes_sbm import theory as T  # noqa: E402

HERE = Path(__file__).resolve().parent

OMEGA = 2.5
ETAS = (0.5, 1.0, 2.0, 5.0)
ETA_STAR = 1.34  # THEORY.md §6: the curves change character here (reference curve)
GAMMA_RANGE = (0.02, 10.0)
BETA_ETA = 5.0
BETA_GAMMAS = (1.7, 2.0, 3.0)
BETA_RANGE = (0.05, 5.0)
KL_FIELDS = ("fwd_typ", "rev_typ", "fwd_pp", "rev_pp")
KL_TITLES = {
    "fwd_typ": r"typical forward $\langle D(P^*\|P_W)\rangle/N$",
    "rev_typ": r"typical reverse $\langle D(P_W\|P^*)\rangle/N$",
    "fwd_pp": r"predictive forward $D(P^*\|P_{pp})/N$",
    "rev_pp": r"predictive reverse $D(P_{pp}\|P^*)/N$",
}


# --------------------------------------------------------------------------
# computations
# --------------------------------------------------------------------------
def kl_curves(etas, gammas):
    rows = []
    for eta in etas:
        for g in gammas:
            r = T.teacher_student_kls(g, eta, OMEGA)
            rows.append([
                float(eta), float(g), r.phase, int(r.saddle.d), int(r.saddle.o),
                r.fwd_typ, r.rev_typ, r.fwd_pp, r.rev_pp, r.phase_fwd_pp, r.phase_rev_pp,
            ])
    return rows


def local_extrema(x, y):
    """[(x, 'min'|'max', y)] at sign changes of the discrete slope.

    Steps below 1e-10 (rounding on the flat stretches, e.g. the PM plateau of
    the predictive reverse KL) count as flat and are skipped.
    """
    d = np.diff(y)
    flat = np.abs(d) <= 1e-10 * (1.0 + np.abs(y[:-1]))
    idx = [i for i in range(len(d)) if not flat[i]]
    out = []
    for i, j in zip(idx[:-1], idx[1:]):
        if d[i] * d[j] < 0:
            out.append((float(x[j]), "min" if d[i] < 0 else "max", float(y[j])))
    return out


SLOPE_KEYS = ("dkl_dbeta_below_c", "dkl_dbeta_above_c", "dkl_dbeta_below_edge", "dkl_dbeta_above_edge")


def _window_slopes(gamma, beta_c, beta_edge, h=1e-5):
    """One-sided dKL/dβ (second-order stencils) on both sides of the sampling transitions."""

    def f(b):
        return T.forward_kl_typical_beta(gamma, BETA_ETA, OMEGA, b)

    def side(b0, s):
        return s * (-3 * f(b0) + 4 * f(b0 + s * h) - f(b0 + 2 * s * h)) / (2 * h)

    out = {}
    for name, b0 in (("c", beta_c), ("edge", beta_edge)):
        ok = math.isfinite(b0)
        out[f"dkl_dbeta_below_{name}"] = side(b0, -1.0) if ok else math.nan
        out[f"dkl_dbeta_above_{name}"] = side(b0, +1.0) if ok else math.nan
    return out


def phase_changes(gammas, phases):
    return [float(np.sqrt(gammas[i] * gammas[i + 1])) for i in range(len(phases) - 1) if phases[i] != phases[i + 1]]


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------
def draw_double_descent(gammas, rows, star_rows, path: Path):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True)
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(ETAS)))
    c1 = 2 - 1 / OMEGA
    for ax, field in zip(axes.ravel(), KL_FIELDS):
        col = 5 + KL_FIELDS.index(field)
        for eta, colour in zip(ETAS, colours):
            sel = [r for r in rows if r[0] == eta]
            y = np.array([r[col] for r in sel])
            ax.plot(gammas, y, color=colour, lw=1.8, label=rf"$\eta={eta:g}$")
            ph = [r[2] for r in sel]
            for gb in phase_changes(gammas, ph):
                yb = T.teacher_student_kls(gb, eta, OMEGA)
                ax.plot(gb, getattr(yb, field), "o", color=colour, ms=5, mec="k", mew=0.6)
        ys = np.array([r[col] for r in star_rows])
        ax.plot(gammas, ys, color="0.5", ls="--", lw=1.0, label=rf"$\eta^*\approx{ETA_STAR}$")
        ax.axvline(c1, color="k", ls=":", lw=1.0)
        ax.text(c1, 1.0, r" $\gamma=c_1$ (FM/PM)", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        ax.set_xscale("log")
        ax.set_title(KL_TITLES[field], fontsize=10)
        ax.grid(alpha=0.3)
        top = np.nanpercentile([r[col] for r in rows], 97)
        ax.set_ylim(0, 1.15 * top)
    for ax in axes[1]:
        ax.set_xlabel(r"regularisation $\gamma$")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        rf"Teacher–student KLs per N vs $\gamma$, rank-one teacher $\omega={OMEGA}$, K = 2 (THEORY §6); "
        "dots: posterior phase boundaries",
        fontsize=11,
    )
    fig.tight_layout()
    save_png(fig, path)


def draw_temperature(betas, beta_rows, windows, path: Path):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colours = plt.cm.plasma(np.linspace(0.0, 0.75, len(BETA_GAMMAS)))
    for g, colour in zip(BETA_GAMMAS, colours):
        y = np.array([r[3] for r in beta_rows if r[0] == g])
        w = windows[g]
        ax.axvspan(w["beta_c"], w["beta_edge"], color=colour, alpha=0.12)
        for b in (w["beta_c"], w["beta_edge"]):
            ax.axvline(b, color=colour, lw=0.8, ls=":")
        ax.plot(betas, y, color=colour, lw=1.8,
                label=rf"$\gamma={g:g}$: window $({w['beta_c']:.3g}, {w['beta_edge']:.3g})$")
        ax.plot(w["beta_min"], w["kl_min"], "v", color=colour, mec="k", ms=8)
        ax.plot(1.0, w["kl_beta1"], "o", color=colour, mec="k", ms=6)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel(r"sampling inverse temperature $\beta$")
    ax.set_ylabel(r"$\langle D(P^*\|P_{\beta W})\rangle/N$")
    ax.set_title(
        rf"Temperature tuning, $\eta={BETA_ETA:g}$, $\omega={OMEGA}$ (THEORY §6): shaded $(\beta_c, \sqrt{{\gamma\eta}})$; "
        r"$\blacktriangledown$ minimum, $\bullet$ $\beta=1$",
        fontsize=9,
    )
    lo = min(r[3] for r in beta_rows)
    ax.set_ylim(lo - 0.1, min(3.0, max(r[3] for r in beta_rows)))
    ax.set_xlim(*BETA_RANGE)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    save_png(fig, path)


# --------------------------------------------------------------------------
def main(argv=None) -> int:
    args, out, t0 = start_study(study_parser(__doc__, HERE / "results", "coarse grids (smoke test)"), argv)
    n_gamma = 50 if args.quick else 600
    n_beta = 50 if args.quick else 600

    gammas = np.geomspace(*GAMMA_RANGE, n_gamma)
    rows = kl_curves(ETAS, gammas)
    star_rows = kl_curves((ETA_STAR,), gammas)
    header = ["eta", "gamma", "phase", "d", "o", *KL_FIELDS, "phase_fwd_pp", "phase_rev_pp"]
    write_csv(out / "kl_vs_gamma.csv", header, rows + star_rows, **FULL_PRECISION_CSV)
    draw_double_descent(gammas, rows, star_rows, out / "double_descent.png")

    betas = np.linspace(*BETA_RANGE, n_beta)
    beta_rows, windows = [], {}
    for g in BETA_GAMMAS:
        bc, be = T.temperature_window(g, BETA_ETA, OMEGA)
        kls = []
        for b in betas:
            st = T.sampling_state(g, BETA_ETA, OMEGA, b)
            kls.append(st.forward_kl)
            beta_rows.append([float(g), float(BETA_ETA), float(b), st.forward_kl, st.phase, st.c_eff, st.mu, st.g])
        i = int(np.argmin(kls))
        windows[g] = dict(
            beta_c=bc, beta_edge=be, beta_min=float(betas[i]), kl_min=float(kls[i]),
            **_window_slopes(g, bc, be),
            kl_beta1=T.forward_kl_typical_beta(g, BETA_ETA, OMEGA, 1.0),
            posterior_phase=T.posterior_saddle(T.teacher_data_eigenvalues(OMEGA), g, BETA_ETA).phase,
        )
    write_csv(out / "kl_vs_beta.csv",
              ["gamma", "eta", "beta", "forward_kl", "sampling_phase", "c_eff", "mu_tilde", "g_tilde"], beta_rows,
              **FULL_PRECISION_CSV)
    write_csv(out / "temperature_windows.csv",
              ["gamma", "eta", "beta_c", "beta_edge", "beta_min", "kl_min", "kl_beta1", "posterior_phase", *SLOPE_KEYS],
              [[float(g), float(BETA_ETA), w["beta_c"], w["beta_edge"], w["beta_min"], w["kl_min"], w["kl_beta1"],
                w["posterior_phase"], *(w[k] for k in SLOPE_KEYS)] for g, w in windows.items()],
              **FULL_PRECISION_CSV)
    draw_temperature(betas, beta_rows, windows, out / "temperature_tuning.png")

    extrema = {
        f"eta={eta:g}": {
            f: local_extrema(gammas, np.array([r[5 + KL_FIELDS.index(f)] for r in rows + star_rows if r[0] == eta]))
            for f in KL_FIELDS
        }
        for eta in (*ETAS, ETA_STAR)
    }
    finish_study(
        out, "teacher_student_curves", t0,
        files=["kl_vs_gamma.csv", "kl_vs_beta.csv", "temperature_windows.csv"],
        figures=[out / "double_descent.png", out / "temperature_tuning.png"],
        quick=bool(args.quick),
        parameters={
            "omega": OMEGA, "etas": ETAS, "eta_star_reference": ETA_STAR, "gamma_range": GAMMA_RANGE,
            "n_gamma": n_gamma, "beta_eta": BETA_ETA, "beta_gammas": BETA_GAMMAS, "beta_range": BETA_RANGE,
            "n_beta": n_beta,
        },
        temperature_windows={f"gamma={g:g}": w for g, w in windows.items()},
        local_extrema_vs_gamma=extrema,
        nan_count=int(sum(1 for r in rows for v in r[5:9] if not math.isfinite(v))),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
