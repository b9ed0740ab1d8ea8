"""The digits study (``analysis/real_data_digits``): its Rao–Blackwellised held-out density, its smoke run, its README quotes.

* :func:`heldout_rb.log_fisher_bingham` — ``E_u exp(½ Σλ_i u_i² + b·u)`` over
  a sphere — against three independent values: ``b = 0`` is the SBM
  partition function (``bayes_sbm.sphere.log_partition``); ``λ = 0`` is the
  von Mises–Fisher constant ``Γ(n/2)(κ/2)^(1−n/2) I_{n/2−1}(κ)``,
  κ = ρ|b| (any radius ρ); n = 2 and n = 3 by adaptive quadrature on the
  circle and the sphere;
* :func:`heldout_rb.rotation_averaged_log_prob` against a brute-force Monte
  Carlo average of ``p(x | O W Oᵀ)`` over explicit Haar rotations O that fix
  the first r frame directions;
* :func:`heldout_rb.log_mean_exp` against a direct NumPy computation;
* the study's ``--quick`` run (slow): its files, Jensen's inequality between
  the columns, and the plug-in column recomputed from a run folder;
* the README's digits paragraph quotes the committed results
  (``analysis/real_data_digits/results``) exactly as recomputed here.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.special import gammaln, ive, logsumexp

from bayes_sbm import sphere

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from analysis.real_data_digits import heldout_rb  # noqa: E402
from conftest import run_script_main  # noqa: E402

RESULTS = ROOT / "analysis" / "real_data_digits" / "results"
#: The study's 24 contour nodes (heldout_rb.FB_NUM_NODES) are accurate to ≤ 3e-7 nats; closed forms and quadrature
#: are exact to ~1e-12 (dblquad ~1e-10): any error in the formula, the saddle or the contour shows up far above this.
FB_ATOL = 1e-6
#: Brute-force Haar averages: 4 Monte Carlo standard errors of the log of a mean (false alarm ~6e-5 per value).
MC_SE = 4.0
#: Small test batches: one compiled chunk shape for every call below (with the study's node count, one compilation per n).
CHUNK = 16


def _vmf(b, rho2=None) -> float:
    """log E exp(b·u), u uniform on the sphere |u|² = ρ² in R^n (default ρ² = n): the von Mises–Fisher constant."""
    n = b.size
    rho = math.sqrt(n if rho2 is None else rho2)
    kappa = rho * float(np.linalg.norm(b))
    return gammaln(n / 2) + (1 - n / 2) * math.log(kappa / 2) + math.log(ive(n / 2 - 1, kappa)) + kappa


@pytest.mark.parametrize("n", [3, 40])
def test_fisher_bingham_reduces_to_the_partition_function_and_von_mises_fisher(n):
    """b = 0: the SBM partition function (three spectra, one condensed); λ = 0: von Mises–Fisher (κ ~ 0.1 … 100, three radii)."""
    rng = np.random.default_rng(n)
    lam = np.stack([rng.normal(size=n) * 0.8, rng.normal(size=n) * 0.3, np.r_[6.0, rng.normal(size=n - 1) * 0.5]])
    b = np.stack([rng.normal(size=n) * s for s in (0.05, 0.7, 4.0)])
    rho2 = np.array([float(n), float(n), float(n), float(n), 2.5, 0.3 * n])
    got = heldout_rb.log_fisher_bingham(np.concatenate([lam, np.zeros_like(b)]), np.concatenate([np.zeros_like(lam), b]), rho2,
                                        chunk=CHUNK)  # one call: one compiled shape per n
    expected = [*np.asarray(sphere.log_partition(lam)), *(_vmf(bi, r) for bi, r in zip(b, rho2[3:]))]
    np.testing.assert_allclose(got, expected, rtol=0, atol=FB_ATOL)


def test_fisher_bingham_on_the_circle_and_the_sphere_by_quadrature():
    # n = 2, radius √2: u = √2 (cos θ, sin θ)
    lam, b = np.array([3.0, -1.0]), np.array([1.5, -0.7])

    def circle(t):
        u = math.sqrt(2) * np.array([math.cos(t), math.sin(t)])
        return math.exp(0.5 * float(lam @ (u * u)) + float(b @ u))

    ref2 = math.log(integrate.quad(circle, 0, 2 * math.pi, epsabs=0, epsrel=1e-13, limit=200)[0] / (2 * math.pi))
    # n = 3, radius ρ = 1.7: u = ρ (sin t cos p, sin t sin p, cos t), area element sin t
    lam3, b3, rho = np.array([4.0, 1.0, -2.0]), np.array([0.5, 2.0, -1.0]), 1.7

    def sphere3(p, t):
        u = rho * np.array([math.sin(t) * math.cos(p), math.sin(t) * math.sin(p), math.cos(t)])
        return math.exp(0.5 * float(lam3 @ (u * u)) + float(b3 @ u)) * math.sin(t)

    ref3 = math.log(integrate.dblquad(sphere3, 0, math.pi, 0, 2 * math.pi, epsabs=0, epsrel=1e-12)[0] / (4 * math.pi))
    got2 = heldout_rb.log_fisher_bingham(lam, b, chunk=CHUNK)
    got3 = heldout_rb.log_fisher_bingham(lam3, b3, rho**2, chunk=CHUNK)
    assert abs(got2 - ref2) < FB_ATOL and abs(got3 - ref3) < FB_ATOL, (got2 - ref2, got3 - ref3)


def test_fisher_bingham_errors():
    with pytest.raises(ValueError, match=r"^eigenvalues, linear: need equal shapes"):
        heldout_rb.log_fisher_bingham(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"^eigenvalues, linear: must be finite"):
        heldout_rb.log_fisher_bingham(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match=r"^radius2: must be > 0"):
        heldout_rb.log_fisher_bingham(np.zeros(2), np.zeros(2), 0.0)


def _haar(rng, num: int, n: int) -> np.ndarray:
    """Haar-distributed orthogonal n×n matrices (QR of Gaussians with the signs of R's diagonal fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(num, n, n)))
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]


def test_rotation_average_matches_brute_force_haar_average():
    rng = np.random.default_rng(11)
    N, r, beta, num = 5, 2, 0.8, 60_000
    A = rng.normal(size=(2, N, N))
    W = (A + A.transpose(0, 2, 1)) / 2
    Q = np.linalg.qr(rng.normal(size=(N, N)))[0]
    x = rng.normal(size=(3, N))
    x *= math.sqrt(N) / np.linalg.norm(x, axis=1, keepdims=True)
    got = heldout_rb.rotation_averaged_log_prob(x, W, Q, r, beta, chunk=CHUNK)
    assert got.shape == (2, 3)
    H = _haar(rng, num, N - r)
    O = np.zeros((num, N, N))
    O[:, :r, :r] = np.eye(r)
    O[:, r:, r:] = H
    O = Q @ O @ Q.T  # rotations fixing span(Q[:, :r]) pointwise
    log_zs = np.asarray(sphere.log_partition(np.linalg.eigvalsh(beta * W)))
    for s in range(2):
        log_z = float(log_zs[s])
        for m in range(3):
            y = np.einsum("kji,j->ki", O, x[m])  # Oᵀx for every rotation: xᵀ(O W Oᵀ)x = (Oᵀx)ᵀ W (Oᵀx)
            lp = 0.5 * beta * np.einsum("ki,ij,kj->k", y, W[s], y) - log_z
            w = np.exp(lp - lp.max())
            ref = lp.max() + math.log(w.mean())
            se = w.std(ddof=1) / (w.mean() * math.sqrt(num))
            assert abs(got[s, m] - ref) < MC_SE * se + 1e-6, (s, m, got[s, m], ref, se)


def test_log_mean_exp_against_numpy():
    rng = np.random.default_rng(2)
    lp = rng.normal(size=(50, 4)) * np.array([0.1, 1.0, 3.0, 10.0]) - 7.0
    res = heldout_rb.log_mean_exp(lp, effective_draws=20.0)
    np.testing.assert_allclose(res.log_density, logsumexp(lp, axis=0) - math.log(50), rtol=1e-13)
    w = np.exp(lp)
    ess = w.sum(0) ** 2 / (w**2).sum(0)
    np.testing.assert_allclose(res.weight_ess, ess, rtol=1e-12)
    np.testing.assert_allclose(res.bias, -(50 / ess - 1) / (2 * 20.0), rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(res.typical, lp.mean(0), rtol=1e-13)
    assert np.all(res.log_density >= res.typical)  # Jensen
    with pytest.raises(ValueError, match=r"^lp: need shape \(S, M\)"):
        heldout_rb.log_mean_exp(lp[:1])


# --------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------
def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_quick_study_runs_and_its_columns_agree(tmp_path):
    pytest.importorskip("sklearn")
    from bayes_sbm import evidence, reports, runs
    from bayes_sbm.data import read_data

    out = tmp_path / "digits"
    text = run_script_main("analysis/real_data_digits/run.py", "--quick", "--out", str(out))
    assert "wrote learning_curve.csv" in text
    for name in ("learning_curve.csv", "beta_curve.csv", "beta_optimum.csv", "gamma_grid.csv", "fits.csv", "table.md",
                 "metadata.json", "learning_curve.png", "beta_curve.png", "evidence_vs_gamma.png", "training.png",
                 "generated_beta1.png", "generated_beta_star.png"):
        assert (out / name).is_file(), name
    learning = _rows(out / "learning_curve.csv")
    models = {(r["model"], float(r["eta"])) for r in learning}
    assert {("bayes", 1.0), ("tempered", 3.0), ("plugin", 1.0), ("map", 30.0), ("bayes_beta_star", 1.0)} <= models
    for r in learning:
        assert math.isfinite(float(r["mean"])) and math.isfinite(float(r["se"]))
        if r["typical"]:
            assert float(r["mean"]) >= float(r["typical"])  # log-mean-exp >= mean of logs, per point and so on average
    # the plug-in column, recomputed from the Bayes run folder: mean over points of ½xᵀW̄x − log Z(W̄)
    run = next((out / "runs" / "fits").glob("spec=digits_K05__model.eta=1.0")) / "run"
    W_bar = reports.run_coupling_draws(run).reshape(-1, 64, 64).mean(axis=0)
    X = runs.load_run_transform(run, 64).apply(read_data(run / runs.HELDOUT_FILE))
    direct = float(evidence.log_likelihood_of_couplings(X, W_bar)) / X.shape[0]
    plug = next(float(r["mean"]) for r in learning if r["model"] == "plugin")
    assert abs(plug - direct) < 1e-9 * max(1.0, abs(direct))
    gam = _rows(out / "gamma_grid.csv")
    assert [float(r["gamma"]) for r in gam] == [1.0, 3.0]


# --------------------------------------------------------------------------
# the README: the workflow commands and the numbers it quotes from the committed results
# --------------------------------------------------------------------------
README = ROOT / "README.md"
SECTION = "## Your own data"


def _readme_section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end]


def _committed(name: str) -> list[dict]:
    return _rows(RESULTS / name)


def _learning(K: int, model: str, eta: float = None) -> dict:
    return next(r for r in _committed("learning_curve.csv")
                if int(r["K"]) == K and r["model"] == model and (eta is None or float(r["eta"]) == eta))


def _pm(row: dict, key: str = "mean", se: str = "se", sign: float = 1.0, digits: int = 2) -> str:
    return f"{sign * float(row[key]):.{digits}f} ± {float(row[se]):.{digits}f}"


def _quotes() -> dict[str, str]:
    """Every number the README's digits paragraph quotes, formatted as it quotes it (two decimals at most)."""
    opt = {int(o["K"]): o for o in _committed("beta_optimum.csv")}
    gam = sorted(_committed("gamma_grid.csv"), key=lambda r: float(r["gamma"]))
    learning = _committed("learning_curve.csv")
    ks = sorted({int(r["K"]) for r in learning})
    gains = [float(opt[k]["gain"]) for k in ks]
    ess = [float(r["median_weight_ess"]) for r in learning if r["model"] == "bayes"]
    plain_ess = [float(r["plain_median_weight_ess"]) for r in learning if r["model"] == "bayes"]
    g_ev = max(gam, key=lambda r: float(r["ti"]))["gamma"]
    g_ho = max(gam, key=lambda r: float(r["bayes_mean"]))["gamma"]
    by_gamma = {float(r["gamma"]): r for r in gam}
    bayes = [r for r in learning if r["model"] == "bayes"]
    plain_gap = max(float(r["mean"]) - float(r["plain_mean"]) for r in bayes)
    theory_ratio = max(float(r["theory"]) / float(r["ti"]) for r in gam)
    return {
        "Bayes at K = 5": _pm(_learning(5, "bayes")),
        "plug-in at K = 5": _pm(_learning(5, "plugin")),
        "Bayes minus plug-in at K = 5": _pm(_learning(5, "plugin"), "diff_vs_bayes", "diff_vs_bayes_se", -1.0),
        "Bayes minus plug-in at K = 10": _pm(_learning(10, "plugin"), "diff_vs_bayes", "diff_vs_bayes_se", -1.0),
        "plug-in minus Bayes at K = 40": _pm(_learning(40, "plugin"), "diff_vs_bayes", "diff_vs_bayes_se"),
        "eta = 3 minus Bayes at K = 40": _pm(_learning(40, "tempered", 3.0), "diff_vs_bayes", "diff_vs_bayes_se"),
        "MAP-like minus Bayes at K = 40": _pm(_learning(40, "map"), "diff_vs_bayes", "diff_vs_bayes_se"),
        "temperature gains": f"{min(gains):.2f} to {max(gains):.2f} nats",
        "beta* at K = 5 and 40": f"β* = {float(opt[5]['beta_star']):.2f} at K = 5 and {float(opt[40]['beta_star']):.2f} at K = 40",
        "window at K = 5": f"({float(opt[5]['beta_c']):.2f}, {float(opt[5]['beta_edge']):.2f})",
        "TI at gamma = 0.1 and 0.3": f"TI {_pm(by_gamma[0.1], 'ti', 'ti_se', digits=1)} vs {_pm(by_gamma[0.3], 'ti', 'ti_se', digits=1)}",
        "stepping stone at gamma = 0.1 and 0.3": (f"stepping stone {_pm(by_gamma[0.1], 'stepping_stone', 'stepping_stone_se', digits=1)} vs "
                                                  f"{_pm(by_gamma[0.3], 'stepping_stone', 'stepping_stone_se', digits=1)}"),
        "held-out at gamma = 0.1 and 0.3": f"held-out {_pm(by_gamma[0.1], 'bayes_mean', 'bayes_se')} vs {_pm(by_gamma[0.3], 'bayes_mean', 'bayes_se')}",
        "gamma-hat": f"γ̂ = {float(g_ev):g}",
        "best held-out gamma": f"held-out likelihood is also highest at γ = {float(g_ho):g}",
        "plug-in at gamma = 0.3 and 1": (f"{_pm(by_gamma[0.3], 'plugin_mean', 'plugin_se')} at γ = 0.3, "
                                         f"{_pm(by_gamma[1.0], 'plugin_mean', 'plugin_se')} at γ = 1"),
        "theory over TI": f"a factor {theory_ratio:.1f}",
        "weight ESS": f"from {min(plain_ess):.0f}–{max(plain_ess):.0f} to {min(ess):.0f}–{max(ess):.0f}",
        "plain estimate gap": f"lower by up to {plain_gap:.1f} nats",
    }


def test_readme_quotes_the_committed_digits_results():
    section = " ".join(_readme_section().split())  # line breaks of the prose are spaces
    missing = {what: text for what, text in _quotes().items() if " ".join(text.split()) not in section}
    assert not missing, f"README.md '{SECTION}' no longer matches analysis/real_data_digits/results: it should contain {missing}"


def test_readme_workflow_commands_parse_and_its_spec_validates(tmp_path):
    import shlex

    from bayes_sbm import cli
    from bayes_sbm.specs import load_spec

    section = _readme_section()
    start = section.index("```bash")
    block = section[start + len("```bash"):section.index("```", start + 1)]
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("bayes-sbm ")]
    assert {argv[1] for argv in commands} >= {"fit", "diagnose", "predict", "evidence", "generate"}
    for argv in commands:
        cli.build_parser().parse_args(argv[1:])  # a renamed or removed option fails here
    spec_text = block[block.index("<<'EOF'\n") + len("<<'EOF'\n"):block.index("\nEOF")]
    np.save(tmp_path / "threes_train.npy", np.ones((2, 64)))
    np.save(tmp_path / "threes_heldout.npy", np.ones((2, 64)))
    (tmp_path / "threes.toml").write_text(spec_text + "\n")
    spec = load_spec(tmp_path / "threes.toml")
    assert spec.data.center and spec.data.project and spec.model.N == 64
