"""Tests of ``bayes_sbm.theory`` (THEORY.md §2, §4, §5, §6).

Every expected value here comes from an independent route: hand-reduced
closed forms of THEORY.md, the explicit K = 1 five-region phase description,
numerical quadrature, finite differences, or sampled random matrices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from bayes_sbm import theory as T

# --------------------------------------------------------------------------
# tolerances (each with its reason)
# --------------------------------------------------------------------------
#: Two float64 evaluations of the same closed form by different algebra: a few hundred ulps.
ROUNDING_RTOL = 1e-12
#: Half-width of the boundary ± offsets (the brief's 1e-7).
BOUNDARY_STEP = 1e-7
#: |f(b + δ) − f(b − δ)| for a continuous f with |f′| ≲ 20 is ≤ 4e-6; a jump would be ≳ 1e-3.
CONTINUITY_ATOL = 1e-5
#: Step of the central finite differences of F (truncation h² ~ 1e-12, rounding eps/h ~ 1e-10).
FD_STEP = 1e-6
#: Accuracy of those central differences (rounding eps·|F|/h dominates, ≲ 1e-9).
FD_ATOL = 1e-8
#: scipy.integrate.quad of a smooth (or endpoint-√/log-singular) integrand on a finite interval.
QUAD_ATOL = 1e-8
#: Matrix size of the random-matrix cross-checks.
N_RMT = 2000
#: Outlier eigenvalues: Gaussian CLT with sd ≤ √(2/(κN)); allow this many sd.
OUTLIER_SD = 5.0
#: Overlap² of outlier eigenvectors: fluctuations O(1/√N) with O(1) constant; allow 5/√N.
OVERLAP_ATOL = 5.0 / math.sqrt(N_RMT)
#: Large-N log Z of one sampled spectrum: linear-statistic and outlier terms are O(1)/N in (1/N) log Z.
LARGE_N_LOGZ_ATOL = 5.0 / N_RMT
#: Exact vs large-N (1/N) log Z: condensed correction ≈ (¼ log N + 0.15)/N plus O(1)/N sample terms.
FINITE_N_LOGZ_ATOL = (math.log(N_RMT) + 3.0) / N_RMT
#: Kummer-exact (1/N) log Z of a rank-one spectrum vs large N: ½ log N/N + O(1/N) at N ≥ 200.
KUMMER_ATOL_FACTOR = 2.0  # times (log N + 1)/N

K1 = np.array([1.0])
C2 = np.array([1.6, 0.4])
OMEGA = 2.5


def _close(a, b, rtol=ROUNDING_RTOL, scale=1.0):
    return abs(a - b) <= rtol * max(scale, abs(a), abs(b))


# --------------------------------------------------------------------------
# §2 semicircle closed forms
# --------------------------------------------------------------------------
SEMI_CASES = [
    pytest.param(0.25, 1.0, id="c=0.25,z=edge"),
    pytest.param(0.25, 1.3, id="c=0.25,z=1.3edge"),
    pytest.param(1.0, 1.0, id="c=1,z=edge"),
    pytest.param(1.0, 2.5, id="c=1,z=2.5edge"),
    pytest.param(4.0, 1.01, id="c=4,z=1.01edge"),
    pytest.param(4.0, 7.0, id="c=4,z=7edge"),
]


@pytest.mark.parametrize(("c", "zfac"), SEMI_CASES)
def test_semicircle_F_and_G_against_quadrature(c, zfac):
    ell = 2 / math.sqrt(c)
    z = zfac * ell
    rho = lambda x: c / (2 * math.pi) * math.sqrt(max(4 / c - x * x, 0.0))  # noqa: E731
    F_quad, _ = integrate.quad(lambda x: math.log(z - x) * rho(x), -ell, ell, limit=200)
    assert abs(T.semicircle_log_potential(z, c) - F_quad) < QUAD_ATOL
    assert abs(T.semicircle_action(z, c) - (z - F_quad)) < QUAD_ATOL
    if zfac > 1:
        G_quad, _ = integrate.quad(lambda x: rho(x) / (z - x), -ell, ell, limit=200)
        assert abs(T.semicircle_stieltjes(z, c) - G_quad) < QUAD_ATOL


@pytest.mark.parametrize("c", [0.1, 1.0, 3.0], ids=["c=0.1", "c=1", "c=3"])
def test_semicircle_density_normalised_with_variance_one_over_c(c):
    ell = 2 / math.sqrt(c)
    mass, _ = integrate.quad(lambda x: T.semicircle_density(x, c), -ell, ell)
    var, _ = integrate.quad(lambda x: x * x * T.semicircle_density(x, c), -ell, ell)
    assert abs(mass - 1) < QUAD_ATOL and abs(var - 1 / c) < QUAD_ATOL
    assert T.semicircle_density(1.01 * ell, c) == 0.0


@pytest.mark.parametrize("c", [0.3, 1.0, 2.0, 50.0], ids=lambda c: f"c={c}")
def test_semicircle_edge_values_and_pm_multiplier(c):
    ell = 2 / math.sqrt(c)
    assert _close(T.semicircle_edge(c), ell)
    assert _close(T.semicircle_stieltjes(ell, c), math.sqrt(c))
    assert _close(T.semicircle_stieltjes_inverse(math.sqrt(c), c), ell)
    if c >= 1:  # PM with a semicircle bulk: μ = 1 + 1/c, G(μ) = 1, (1/N) log Z = 1/(4c)
        mu = 1 + 1 / c
        assert _close(T.semicircle_stieltjes(mu, c), 1.0)
        assert _close(0.5 * (T.semicircle_action(mu, c) - 1), 1 / (4 * c))


@settings(max_examples=200, deadline=None)
@given(c=st.floats(0.05, 20.0), zfac=st.floats(1.01, 20.0))
def test_F_prime_equals_G_by_finite_differences(c, zfac):
    z = zfac * 2 / math.sqrt(c)
    h = FD_STEP * max(1.0, z)
    dF = (T.semicircle_log_potential(z + h, c) - T.semicircle_log_potential(z - h, c)) / (2 * h)
    assert abs(dF - T.semicircle_stieltjes(z, c)) < FD_ATOL
    # S′ = 1 − G, and G⁻¹ inverts G
    dS = (T.semicircle_action(z + h, c) - T.semicircle_action(z - h, c)) / (2 * h)
    assert abs(dS - (1 - T.semicircle_stieltjes(z, c))) < FD_ATOL
    assert _close(T.semicircle_stieltjes_inverse(T.semicircle_stieltjes(z, c), c), z, 1e-10)


def test_semicircle_helpers_broadcast():
    c = np.array([[0.5], [2.0]])
    z = np.array([3.0, 4.0, 5.0])
    for fn in (T.semicircle_stieltjes, T.semicircle_log_potential, T.semicircle_action):
        out = fn(z, c)
        assert out.shape == (2, 3)
        assert _close(out[1, 2], fn(5.0, 2.0))
    g = T.semicircle_stieltjes_inverse(np.array([0.1, 0.5]), 1.0)
    assert g.shape == (2,) and _close(g[1], 2.5)


@pytest.mark.parametrize(
    ("fn", "args", "word"),
    [
        pytest.param(T.semicircle_stieltjes, (0.5, 1.0), "edge", id="G-inside-bulk"),
        pytest.param(T.semicircle_action, (-3.0, 1.0), "edge", id="S-inside-bulk"),
        pytest.param(T.semicircle_stieltjes, (3.0, -1.0), "c", id="G-negative-c"),
        pytest.param(T.semicircle_stieltjes_inverse, (2.0, 1.0), "g", id="Ginv-above-sqrt-c"),
        pytest.param(T.semicircle_stieltjes_inverse, (0.0, 1.0), "g", id="Ginv-zero"),
    ],
)
def test_semicircle_domain_errors(fn, args, word):
    with pytest.raises(ValueError, match=word):
        fn(*args)


# --------------------------------------------------------------------------
# §2 large-N log Z of a spectrum (exact special cases)
# --------------------------------------------------------------------------
def test_large_n_log_z_zero_and_shift():
    n = 300
    r = T.large_n_log_partition(np.zeros(n))
    assert abs(r.log_z) < 1e-14 and not r.condensed and abs(r.mu - 1) < 1e-14
    rng = np.random.default_rng(5)
    lam = rng.normal(size=n) * 0.3
    s = 0.7  # Z(W + sI) = e^{Ns/2} Z(W)
    assert _close(T.large_n_log_partition(lam + s).log_z, T.large_n_log_partition(lam).log_z + s / 2, 1e-11)
    batch = T.large_n_log_partition(np.stack([lam, lam + s]))
    assert batch.log_z.shape == (2,)


@pytest.mark.parametrize("omega", [0.5, 1.5, 3.0], ids=lambda w: f"omega={w}")
@pytest.mark.parametrize("n", [200, 2000], ids=lambda n: f"N={n}")
def test_large_n_log_z_rank_one_against_kummer(omega, n):
    mpmath = pytest.importorskip("mpmath")
    lam = np.zeros(n)
    lam[0] = omega
    r = T.large_n_log_partition(lam)
    exact = float(mpmath.log(mpmath.hyp1f1(0.5, n / 2, n * omega / 2))) / n
    teacher = 0.5 * (omega - 1 - math.log(omega)) if omega > 1 else 0.0  # §2 rank-one teacher
    tol = KUMMER_ATOL_FACTOR * (math.log(n) + 1) / n
    assert abs(r.log_z - exact) < tol
    assert abs(r.log_z - teacher) < tol
    assert r.condensed == (omega > 1)
    assert abs(r.M - (1 - 1 / omega if omega > 1 else 0.0)) < 2.0 / n


# --------------------------------------------------------------------------
# §4 phases, K = 1 (oracle: the explicit five-region description)
# --------------------------------------------------------------------------
def k1_oracle(gamma: float, eta: float) -> str:
    """THEORY.md §4, last paragraph, verbatim (exact arithmetic assumed)."""
    if gamma < 1 < eta:
        return "FMo"
    if gamma < eta <= 1:
        return "FMe"
    if eta <= gamma and gamma * eta < 1:
        return "SG"
    if 1 <= gamma < eta:
        return "PMo"
    if eta <= gamma and gamma * eta >= 1:
        return "PMe"
    raise AssertionError("regions do not cover the plane")


DYADIC = [0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0]


@pytest.mark.parametrize("gamma", DYADIC, ids=lambda g: f"gamma={g}")
def test_k1_phases_on_exact_grid(gamma):
    # every product and equality on this grid is exact in float64, boundaries included
    for eta in DYADIC:
        assert T.posterior_saddle(K1, gamma, eta).phase == k1_oracle(gamma, eta), (gamma, eta)


K1_BOUNDARY_CASES = [
    pytest.param(1.0, 2.0, "PMo", id="gamma=1,eta>1"),
    pytest.param(1 - 2**-53, 2.0, "PMo", id="gamma=1-ulp,eta>1"),
    pytest.param(0.5, 1.0, "FMe", id="eta=1,gamma<1"),
    pytest.param(0.5, 1 + 2**-52, "FMe", id="eta=1+ulp,gamma<1"),
    pytest.param(0.3, 0.1 + 0.2, "SG", id="eta=gamma+ulp,SG"),
    pytest.param(2.0, 2.0, "PMe", id="eta=gamma>1"),
    pytest.param(1.0, 1.0, "PMe", id="gamma=eta=1"),
    pytest.param(49.0, 1 / 49, "PMe", id="gamma*eta=1-ulp"),
    pytest.param(2.0, 0.5, "PMe", id="gamma*eta=1"),
    pytest.param(1 / 3, 1 / 3, "SG", id="eta=gamma<1"),
    pytest.param(0.999, 1.001, "FMo", id="FMo-near-corner"),
    pytest.param(1.001, 0.9995, "PMe", id="PMe-near-corner"),
    pytest.param(1.001, 0.998, "SG", id="SG-near-corner"),
]


@pytest.mark.parametrize(("gamma", "eta", "phase"), K1_BOUNDARY_CASES)
def test_k1_phase_boundaries_and_rounding(gamma, eta, phase):
    s = T.posterior_saddle(K1, gamma, eta)
    assert s.phase == phase
    assert 0.0 <= s.M < 1.0


@settings(max_examples=300, deadline=None)
@given(st.floats(0.02, 20.0), st.floats(0.02, 20.0))
def test_k1_phases_random(gamma, eta):
    margins = [abs(gamma - 1), abs(eta - 1), abs(eta - gamma), abs(gamma * eta - 1)]
    if min(margins) < 1e-9:
        return  # on a boundary, covered by the exact tables above
    assert T.posterior_saddle(K1, gamma, eta).phase == k1_oracle(gamma, eta)


# Hand reductions of §4/§5 for K = 1 in each region (c_1 = 1, a = b = η, κ = γη).
def k1_log_evidence(gamma: float, eta: float) -> float:
    ph = k1_oracle(gamma, eta)
    if ph in ("PMo", "PMe"):
        return (eta - 1) / (4 * gamma)
    if ph == "FMo":  # g = √γ
        return (eta - 1) / 4 * (1 - math.log(gamma))
    if ph == "FMe":  # g = √κ, u > 0
        return 0.75 * (eta - 1) + 0.25 * (1 - eta) * math.log(gamma * eta) - 0.5 * math.log(eta)
    # SG: u = 0, μ = ℓ
    return eta / (4 * gamma) + 0.75 * eta - math.sqrt(eta / gamma) - eta / 4 * math.log(gamma * eta)


K1_INTERIOR = [
    pytest.param(0.5, 2.0, id="FMo"),
    pytest.param(0.1, 7.0, id="FMo-deep"),
    pytest.param(0.3, 0.7, id="FMe"),
    pytest.param(0.6, 0.4, id="SG"),
    pytest.param(3.0, 0.2, id="SG-large-gamma"),
    pytest.param(1.5, 3.0, id="PMo"),
    pytest.param(3.0, 2.0, id="PMe"),
]


@pytest.mark.parametrize(("gamma", "eta"), K1_INTERIOR)
def test_k1_saddle_and_evidence_closed_forms(gamma, eta):
    s = T.posterior_saddle(K1, gamma, eta)
    kappa = gamma * eta
    ph = k1_oracle(gamma, eta)
    assert s.phase == ph
    expected = {  # (μ, M, u_1)
        "FMo": (1 / math.sqrt(gamma) + math.sqrt(gamma) / kappa, 1 - math.sqrt(gamma), 1 - math.sqrt(gamma) / eta),
        "FMe": (2 / math.sqrt(kappa), 1 - math.sqrt(kappa), 1 - math.sqrt(kappa) / eta),
        "SG": (2 / math.sqrt(kappa), 1 - math.sqrt(kappa), 0.0),
        "PMo": (1 + 1 / kappa, 0.0, 1 - gamma / eta),
        "PMe": (1 + 1 / kappa, 0.0, 0.0),
    }[ph]
    assert _close(s.mu, expected[0]) and abs(s.M - expected[1]) < 1e-13 and abs(s.u[0] - expected[2]) < 1e-13
    assert (s.d, s.o) == {"FMo": (1, 1), "FMe": (1, 1), "SG": (1, 0), "PMo": (0, 1), "PMe": (0, 0)}[ph]
    assert _close(T.log_evidence(K1, gamma, eta), k1_log_evidence(gamma, eta), scale=1 + eta)


# --------------------------------------------------------------------------
# §4 general properties
# --------------------------------------------------------------------------
c_lists = st.lists(st.floats(0.01, 5.0), min_size=1, max_size=5)
pos = st.floats(0.01, 30.0)


@settings(max_examples=300, deadline=None)
@given(c_lists, pos, pos, st.randoms(use_true_random=False))
def test_permutation_invariance_and_invariants(c, gamma, eta, rnd):
    perm = list(c)
    rnd.shuffle(perm)
    s1, s2 = T.posterior_saddle(c, gamma, eta), T.posterior_saddle(perm, gamma, eta)
    assert s1.phase == s2.phase and s1.d == s2.d and s1.o == s2.o
    for f in ("g", "u", "xi", "lam"):
        np.testing.assert_allclose(getattr(s1, f), getattr(s2, f), rtol=ROUNDING_RTOL)
    y1, y2 = T.log_evidence(c, gamma, eta), T.log_evidence(perm, gamma, eta)
    assert _close(y1, y2, scale=1 + eta * sum(c) + eta * sum(x * x for x in c) / gamma)
    # invariants of the §4 solution
    kappa = gamma * eta
    assert np.all(np.diff(s1.c) <= 0)
    assert s1.phase in T.PHASES
    assert 0.0 <= s1.M < 1.0 and np.all((s1.u >= 0) & (s1.u <= 1))
    assert np.all(s1.g <= math.sqrt(kappa) * (1 + 1e-12)) and np.all(s1.g > 0)
    assert s1.lam[0] == s1.lam.max() and s1.mu >= s1.lam[0] * (1 - 1e-12)
    a = eta * s1.c
    ties = int(np.sum(np.isclose(a, math.sqrt(kappa), rtol=1e-9, atol=0)))
    assert abs(s1.o - int(np.sum(a > math.sqrt(kappa)))) <= ties
    if kappa > 1:
        assert s1.phase in ("PMo", "PMe", "FMo")  # step 3 needs κ ≤ 1
        if s1.phase.startswith("PM"):  # ... and PM only where step 1 holds (up to rounding)
            assert kappa >= a[0] * (1 - 1e-9)
    if s1.phase == "FMo":
        # stationarity written the other way round: Σ_{k≤d} a_k = dκ/g + b(1 − g)
        g, d, a = s1.g[0], s1.d, eta * s1.c
        assert _close(a[:d].sum(), d * kappa / g + eta * s1.c.sum() * (1 - g), 1e-10)
        assert _close(s1.mu, 1 / g + g / kappa) and _close(s1.M, 1 - g)
    # μ is consistent with G: G(μ_Z) = g_Z (semicircle, §5)
    assert _close(T.semicircle_stieltjes(s1.mu_z, kappa), s1.g_z, 1e-9)
    # posterior mean of the signal blocks is c_k/γ in PM
    if s1.phase.startswith("PM"):
        np.testing.assert_allclose(s1.signal, s1.c / gamma, rtol=1e-10)


@settings(max_examples=100, deadline=None)
@given(c_lists, pos, pos, st.integers(1, 3))
def test_zero_eigenvalues_do_not_change_evidence(c, gamma, eta, nzero):
    y = T.log_evidence(c, gamma, eta)
    y0 = T.log_evidence(list(c) + [0.0] * nzero, gamma, eta)
    assert _close(y, y0, 1e-10, scale=1 + eta * sum(c) + eta * sum(x * x for x in c) / gamma)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.05, 3.0), min_size=1, max_size=4),
    st.floats(1.0 + 1e-9, 10.0),
    st.integers(-40, 40),
    st.floats(-1e-10, 1e-10),
)
def test_rounding_never_sends_kappa_above_one_to_step3(c, kappa, ulps, rel):
    # sit on the PM/FMo boundary κ = a_1 (γ = c_1), up to a few ulps or ~1e-10 relative:
    # steps 1 and 2 compare numbers that agree to ~rel there
    c1 = max(c)
    eta = kappa / c1
    gamma = c1 * (1 + rel) + ulps * np.spacing(c1)
    s = T.posterior_saddle(c, gamma, eta)
    assert s.phase in ("PMo", "PMe", "FMo")
    assert 0.0 <= s.M < 1e-9 and abs(s.mu - (1 + 1 / (gamma * eta))) < 1e-9


@pytest.mark.parametrize("rel", [-2e-12, -1.5e-12, -1.2e-12], ids=lambda r: f"rel={r}")
@pytest.mark.parametrize(
    ("c", "kappa"),
    [pytest.param([1.0], 2.0, id="K1"), pytest.param([1.6, 0.4], 1.5, id="K2"), pytest.param([1.2, 0.6, 0.2], 4.8, id="3modes")],
)
def test_boundary_band_where_steps_1_and_2_both_refuse(c, kappa, rel):
    # γ just inside the ±1e-12 band below the PM/FMo boundary: step 1 refuses (g_1^PM < 1 − tol)
    # and step 2 refuses (g ≥ 1 − tol); κ > 1, so this must be PM, not step 3
    gamma = max(c) * (1 + rel)
    s = T.posterior_saddle(c, gamma, kappa / max(c))
    assert s.phase in ("PMo", "PMe", "FMo") and 0.0 <= s.M < 1e-9


# --------------------------------------------------------------------------
# §5 evidence
# --------------------------------------------------------------------------
PM_CASES = [
    pytest.param([1.0], 2.0, 1.5, id="K1-PMo"),
    pytest.param([1.0], 3.0, 0.5, id="K1-PMe"),
    pytest.param([1.6, 0.4], 2.0, 3.0, id="K2-PMo"),
    pytest.param([1.6, 0.4], 5.0, 0.3, id="K2-PMe"),
    pytest.param([2.5, 1.0, 0.5], 4.0, 2.0, id="K4-3modes"),
    pytest.param([0.2, 0.3, 0.1, 0.4], 1.2, 10.0, id="K1-4modes-hot"),
]


@pytest.mark.parametrize(("c", "gamma", "eta"), PM_CASES)
def test_pm_evidence_closed_form(c, gamma, eta):
    s = T.posterior_saddle(c, gamma, eta)
    assert s.phase in ("PMo", "PMe")
    K = sum(c)
    closed = (eta * sum(x * x for x in c) - K) / (4 * gamma)
    assert _close(T.log_evidence(c, gamma, eta), closed, scale=1 + eta * K)


def _label(c, gamma, eta):
    s = T.posterior_saddle(c, gamma, eta)
    return (s.phase, s.d, s.o)


def locate_boundaries(fn_label, lo, hi, n=400):
    """Points where a label changes along [lo, hi] (log grid + bisection to 1e-14)."""
    xs = np.geomspace(lo, hi, n)
    labels = [fn_label(x) for x in xs]
    out = []
    for i in range(n - 1):
        if labels[i] != labels[i + 1]:
            a, b = xs[i], xs[i + 1]
            la = labels[i]
            for _ in range(200):
                m = 0.5 * (a + b)
                if m in (a, b) or b - a < 1e-14 * b:
                    break
                if fn_label(m) == la:
                    a = m
                else:
                    b = m
            out.append((0.5 * (a + b), labels[i], labels[i + 1]))
    return out


def _smooth_quantities(c, gamma, eta):
    ev = T.evidence_terms(c, gamma, eta)
    s = ev.saddle
    return np.concatenate([[ev.log_evidence, ev.phi, s.mu, s.M, s.mu_z, s.g_z], s.g, s.u, s.xi, s.lam])


PATHS = [  # (c, which parameter varies, fixed value, range)
    pytest.param([1.0], "gamma", 2.0, (0.05, 10.0), id="K1-eta=2"),
    pytest.param([1.0], "gamma", 0.5, (0.05, 10.0), id="K1-eta=0.5"),
    pytest.param([1.0], "eta", 0.5, (0.05, 10.0), id="K1-gamma=0.5"),
    pytest.param([1.0], "eta", 3.0, (0.05, 10.0), id="K1-gamma=3"),
    pytest.param([1.6, 0.4], "gamma", 3.0, (0.01, 10.0), id="K2-eta=3"),
    pytest.param([1.6, 0.4], "gamma", 0.7, (0.01, 10.0), id="K2-eta=0.7"),
    pytest.param([1.6, 0.4], "eta", 0.1, (0.05, 50.0), id="K2-gamma=0.1"),
    pytest.param([1.6, 0.4], "eta", 0.5, (0.05, 50.0), id="K2-gamma=0.5"),
    pytest.param([1.6, 0.4], "eta", 2.0, (0.05, 50.0), id="K2-gamma=2"),
    pytest.param([1.2, 0.6, 0.2], "eta", 0.3, (0.05, 50.0), id="K2-3modes-gamma=0.3"),
]


@pytest.mark.parametrize(("c", "var", "fixed", "rng"), PATHS)
def test_continuity_across_every_boundary(c, var, fixed, rng):
    def args(x):
        return (x, fixed) if var == "gamma" else (fixed, x)

    bounds = locate_boundaries(lambda x: _label(c, *args(x)), *rng)
    assert bounds, "path crosses no boundary"
    for x0, la, lb in bounds:
        lo = _smooth_quantities(c, *args(x0 - BOUNDARY_STEP))
        hi = _smooth_quantities(c, *args(x0 + BOUNDARY_STEP))
        assert np.all(np.abs(hi - lo) < CONTINUITY_ATOL), (x0, la, lb, np.abs(hi - lo).max())
        if len(c) == 1:  # K = 1: the located boundary is one of the analytic lines of §4
            g, e = args(x0)
            assert min(abs(g - 1), abs(e - 1), abs(e - g), abs(g * e - 1)) < 1e-10


def test_k2_diagram_has_two_condensed_modes_somewhere():
    # c = (1.6, 0.4): at small γ, large η both data modes condense (d = 2)
    s = T.posterior_saddle(C2, 0.05, 20.0)
    assert s.phase == "FMo" and s.d == 2 and s.lam[0] == s.lam[1]


# --------------------------------------------------------------------------
# §6 teacher–student
# --------------------------------------------------------------------------
TS_PM = [
    pytest.param(2.0, 2.0, id="PMo"),
    pytest.param(5.0, 0.5, id="PMe"),
    pytest.param(3.0, 5.0, id="PMo-eta5"),
    pytest.param(10.0, 10.0, id="PMo-deep"),
]


@pytest.mark.parametrize(("gamma", "eta"), TS_PM)
def test_pm_teacher_student_closed_forms(gamma, eta):
    w = OMEGA
    r = T.teacher_student_kls(gamma, eta, w)
    assert r.phase in ("PMo", "PMe")
    kappa = gamma * eta
    # typical reverse KL: the Gaussian-model value of §6
    assert _close(r.rev_typ, 0.5 * (w - math.log(w) - 1 + 1 / (2 * kappa)))
    # typical forward KL with ξ_1 − 1 = η c_1²/γ and c_1 = (2ω − 1)/ω (hand reduction)
    assert _close(r.fwd_typ, 0.5 * math.log(w) + 1 / (4 * kappa) - (1 - 1 / w) ** 2 / gamma)
    # PM: q_1 = q_2 = 0, so the cubic's roots are {c_1, c_2, 1/η} and D(P_pp‖P*)/N = log Z*/N
    np.testing.assert_allclose(np.sort(r.c_tilde_pp), np.sort([2 - 1 / w, 1 / w, 1 / eta]), rtol=1e-9)
    assert _close(r.rev_pp, 0.5 * (w - 1 - math.log(w)), 1e-9)
    if r.phase_fwd_pp.startswith("PM"):  # Σc̃² − Σc² = 1/η² + (c_1 − c_2)²/η
        assert _close(r.fwd_pp, 0.5 * math.log(w) - (2 - 2 / w) ** 2 / (4 * gamma), 1e-10)


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.0, 5.0], ids=lambda e: f"eta={e}")
@pytest.mark.parametrize("gamma", [0.05, 0.3, 1.0, 1.7, 3.0], ids=lambda g: f"gamma={g}")
def test_forward_kl_at_beta_one_is_typical(gamma, eta):
    r = T.teacher_student_kls(gamma, eta, OMEGA)
    assert _close(T.forward_kl_typical_beta(gamma, eta, OMEGA, 1.0), r.fwd_typ, 1e-10, scale=1 + abs(r.fwd_typ))
    expected = {"PMo": "sPM", "PMe": "sPM", "FMo": "sFM" if gamma * eta >= 1 else "sSG"}.get(r.phase, "sSG")
    assert T.sampling_phase(gamma, eta, OMEGA, 1.0) == expected
    assert all(math.isfinite(v) for v in (r.fwd_typ, r.rev_typ, r.fwd_pp, r.rev_pp))
    assert min(r.fwd_typ, r.rev_typ, r.fwd_pp, r.rev_pp) > 0  # KLs are non-negative


@pytest.mark.parametrize("gamma", [1.7, 2.0, 3.0], ids=lambda g: f"gamma={g}")
def test_temperature_window_and_tuning(gamma):
    eta = 5.0
    kappa = gamma * eta
    a1 = eta * (2 - 1 / OMEGA)
    beta_c, beta_e = T.temperature_window(gamma, eta, OMEGA)
    assert _close(beta_c, kappa / a1) and _close(beta_e, math.sqrt(kappa))  # PMo: g_1 = κ/a_1
    assert T.sampling_phase(gamma, eta, OMEGA, 0.5 * beta_c) == "sPM"
    assert T.sampling_phase(gamma, eta, OMEGA, 0.5 * (beta_c + beta_e)) == "sFM"
    assert T.sampling_phase(gamma, eta, OMEGA, 1.5 * beta_e) == "sSG"
    betas = np.linspace(0.2, 1.5 * beta_e, 400)
    kl = np.array([T.forward_kl_typical_beta(gamma, eta, OMEGA, b) for b in betas])
    best = betas[np.argmin(kl)]
    assert beta_c < best < beta_e  # tuning β inside the window lowers the forward KL
    assert kl.min() < T.forward_kl_typical_beta(gamma, eta, OMEGA, 1.0)
    # the phase switches exactly at the window ends
    assert T.sampling_phase(gamma, eta, OMEGA, beta_c * (1 - 1e-9)) == "sPM"
    assert T.sampling_phase(gamma, eta, OMEGA, beta_c * (1 + 1e-9)) == "sFM"
    assert T.sampling_phase(gamma, eta, OMEGA, beta_e * (1 - 1e-9)) == "sFM"
    assert T.sampling_phase(gamma, eta, OMEGA, beta_e * (1 + 1e-9)) == "sSG"
    # sPM: S(1 + 1/c_eff; c_eff) = 1 + 1/(2 c_eff) with c_eff = κ/β²
    b = 0.5 * beta_c
    e_fwd = -(1 - 1 / OMEGA) ** 2 / gamma  # PM: ξ_1 − 1 = η c_1²/γ, c_1 = (2ω − 1)/ω
    expected_spm = b * e_fwd + 0.5 + b * b / (4 * kappa) - 0.5 * (1 - math.log(OMEGA))
    assert _close(T.forward_kl_typical_beta(gamma, eta, OMEGA, b), expected_spm)
    # the β-curve is continuous at both window ends
    for b in (beta_c, beta_e):
        lo = T.forward_kl_typical_beta(gamma, eta, OMEGA, b - BOUNDARY_STEP)
        hi = T.forward_kl_typical_beta(gamma, eta, OMEGA, b + BOUNDARY_STEP)
        assert abs(hi - lo) < CONTINUITY_ATOL


@pytest.mark.parametrize(
    ("eta", "monotone"),
    [pytest.param(1.30, True, id="eta=1.30<eta*"), pytest.param(1.40, False, id="eta=1.40>eta*")],
)
def test_double_descent_changes_character_at_eta_star(eta, monotone):
    # THEORY §6: at ω = 2.5 the typical reverse-KL curves change character at η* ≈ 1.34
    gammas = np.linspace(0.1, 6.0, 600)
    rev = np.array([T.teacher_student_kls(g, eta, OMEGA).rev_typ for g in gammas])
    assert bool(np.all(np.diff(rev) < 0)) == monotone


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.0, 5.0], ids=lambda e: f"eta={e}")
def test_teacher_student_kls_continuous_across_boundaries(eta):
    def labels(g):
        r = T.teacher_student_kls(g, eta, OMEGA)
        s = r.saddle
        return (r.phase, s.d, s.o, r.phase_fwd_pp, r.phase_rev_pp)

    def vals(g):
        r = T.teacher_student_kls(g, eta, OMEGA)
        return np.array([r.fwd_typ, r.rev_typ, r.fwd_pp, r.rev_pp])

    bounds = locate_boundaries(labels, 0.05, 8.0, n=200)
    assert bounds
    for x0, la, lb in bounds:
        assert np.all(np.abs(vals(x0 + BOUNDARY_STEP) - vals(x0 - BOUNDARY_STEP)) < CONTINUITY_ATOL), (x0, la, lb)


@pytest.mark.parametrize(
    ("gamma", "eta"),
    [
        pytest.param(0.3, 0.5, id="FMe"),
        pytest.param(0.3, 2.0, id="FMo-kappa<1"),
        pytest.param(1.0, 2.0, id="FMo-kappa>1"),
        pytest.param(0.05, 20.0, id="FMo-deep"),
        pytest.param(2.0, 0.3, id="SG"),
    ],
)
def test_predictive_kls_assembled_as_in_theory(gamma, eta):
    """Transcribe the §6 predictive formulas independently (numpy.polynomial, evidence_terms)."""
    w = OMEGA
    r = T.teacher_student_kls(gamma, eta, w)
    assert r.saddle.condensed
    c1, c2 = 2 - 1 / w, 1 / w
    kappa = gamma * eta
    s = T.posterior_saddle([c1, c2], gamma, eta)
    phi = T.evidence_terms([c1, c2], gamma, eta).phi
    q1 = c1 / 2 - gamma / (2 * eta) * (s.xi[0] - 1) / c1
    q2 = c2 / 2 - gamma / (2 * eta) * (s.xi[1] - 1) / c2
    q0 = 1 - q1 - q2
    poly = np.polynomial.Polynomial(
        [-q0 * c1 * c2 / eta, c1 * c2 + (q1 * c2 + q2 * c1 + q0 * (c1 + c2)) / eta, -(c1 + c2 + 1 / eta), 1.0]
    )
    roots = np.sort(poly.roots().real)[::-1]
    np.testing.assert_allclose(r.c_tilde_pp, roots, rtol=1e-9, atol=1e-12)
    e_pp = 0.5 * ((gamma / eta) * w**2 / (2 * w - 1) ** 2 * (s.xi[0] - 1) - 1) * (w - 1)
    phi_pp = T.evidence_terms(np.clip(roots, 0, None), gamma, eta).phi
    assert _close(r.rev_pp, e_pp + 0.5 * (w - math.log(w)) + 0.5 * math.log(kappa) + phi_pp - phi, 1e-9)
    # forward: c̃ = {λ₊, λ₋, c_2} with the textbook ± formula
    delta = math.sqrt((c1 - 1 / eta) ** 2 + (2 / eta) * (c1 - c2) ** 2)
    lt = [(c1 + 1 / eta + delta) / 2, (c1 + 1 / eta - delta) / 2, c2]
    phi_t = T.evidence_terms(lt, gamma, eta).phi
    assert _close(r.fwd_pp, -(0.5 * math.log(kappa) + phi_t - phi) - 0.5 * (1 - math.log(w)), 1e-9)


def test_cubic_root_domain_rules():
    assert T._clean_roots(np.array([1.0, 0.5, -5e-7])).tolist() == [1.0, 0.5, 0.0]
    assert T._clean_roots(np.array([1.0, 0.5, -1e-3])) is None
    # (λ − 2)(λ² + 1): complex pair -> no spectrum
    assert T._cubic_real_roots(np.array([1.0, -2.0, 1.0, -2.0])) is None
    np.testing.assert_allclose(T._cubic_real_roots(np.poly([3.0, 1.0, 0.25])), [3.0, 1.0, 0.25], rtol=1e-14)
    # a zero root is a non-condensed mode contributing h = −½ log κ to Φ
    gamma, eta = 0.3, 4.0
    phi0, s0 = T._phi_fresh(np.array([0.0, 1.0, 0.5]), gamma, eta)
    phi = T.evidence_terms([1.0, 0.5, 0.0], gamma, eta).phi
    assert s0.d < 3 and _close(phi0, phi)
    assert _close(phi0, T.evidence_terms([1.0, 0.5], gamma, eta).phi - 0.5 * math.log(gamma * eta))


# --------------------------------------------------------------------------
# invalid arguments
# --------------------------------------------------------------------------
BAD = [
    pytest.param(lambda: T.posterior_saddle([1.0], 0.0, 1.0), "gamma", "0.0", id="gamma=0"),
    pytest.param(lambda: T.posterior_saddle([1.0], -2.0, 1.0), "gamma", "-2.0", id="gamma<0"),
    pytest.param(lambda: T.posterior_saddle([1.0], float("nan"), 1.0), "gamma", "nan", id="gamma=nan"),
    pytest.param(lambda: T.posterior_saddle([1.0], 1.0, 0.0), "eta", "0.0", id="eta=0"),
    pytest.param(lambda: T.log_evidence([1.0], 1.0, -1.0), "eta", "-1.0", id="eta<0"),
    pytest.param(lambda: T.posterior_saddle([], 1.0, 1.0), "c", "[]", id="c-empty"),
    pytest.param(lambda: T.posterior_saddle([1.0, -0.5], 1.0, 1.0), "c", "-0.5", id="c-negative"),
    pytest.param(lambda: T.posterior_saddle([float("nan")], 1.0, 1.0), "c", "nan", id="c-nan"),
    pytest.param(lambda: T.posterior_saddle([0.0, 0.0], 1.0, 1.0), "c", "0.0", id="c-all-zero"),
    pytest.param(lambda: T.teacher_student_kls(1.0, 1.0, 1.0), "omega", "1.0", id="omega=1"),
    pytest.param(lambda: T.teacher_student_kls(1.0, 1.0, 0.5), "omega", "0.5", id="omega<1"),
    pytest.param(lambda: T.forward_kl_typical_beta(1.0, 1.0, 2.5, 0.0), "beta", "0.0", id="beta=0"),
    pytest.param(lambda: T.sampling_phase(1.0, 1.0, 2.5, -1.0), "beta", "-1.0", id="beta<0"),
    pytest.param(lambda: T.sampling_phase(1.0, 1.0, 2.5, float("nan")), "beta", "nan", id="beta=nan"),
]


@pytest.mark.parametrize(("call", "name", "value"), BAD)
def test_invalid_arguments_raise_with_name_and_value(call, name, value):
    with pytest.raises(ValueError) as exc:
        call()
    msg = str(exc.value)
    assert (msg.startswith(name + ": ") or msg.startswith(name + " ")) and value in msg


# --------------------------------------------------------------------------
# random-matrix cross-checks (N = 2000, two eigendecompositions)
# --------------------------------------------------------------------------
RMT_CASES = {
    # PMo: κ = 4 > 1, one outlier a = 3.5 ∈ (√κ, κ)
    "PM": dict(c=[0.875], gamma=1.0, eta=4.0, seed=11),
    # condensed on an outlier: κ = 0.5 < 1, two outliers a = (2, 1.2) > √κ
    "condensed": dict(c=[1.0, 0.6], gamma=0.25, eta=2.0, seed=12),
}


def _spiked_goe(c, gamma, eta, seed):
    """C/γ + GOE(σ² = 1/(γη)), C = Σ c_k e_k e_kᵀ with random orthonormal e_k."""
    rng = np.random.default_rng(seed)
    n = N_RMT
    sigma2 = 1.0 / (gamma * eta)
    a = rng.standard_normal((n, n))
    h = (a + a.T) * math.sqrt(sigma2 / (2 * n))  # off-diagonal σ²/N, diagonal 2σ²/N
    e, _ = np.linalg.qr(rng.standard_normal((n, len(c))))
    w = h + (e * (np.asarray(c) / gamma)) @ e.T
    lam, v = np.linalg.eigh(w)
    return lam[::-1].copy(), v[:, ::-1][:, : len(c)].copy(), e


@pytest.fixture(scope="module", params=list(RMT_CASES), ids=list(RMT_CASES))
def rmt(request):
    p = RMT_CASES[request.param]
    lam, v, e = _spiked_goe(p["c"], p["gamma"], p["eta"], p["seed"])
    return request.param, p, lam, v, e


def test_rmt_outliers_match_pm_formulas(rmt):
    _, p, lam, v, e = rmt
    kappa = p["gamma"] * p["eta"]
    a = p["eta"] * np.asarray(p["c"])
    sd = math.sqrt(2 / (kappa * N_RMT))
    for k in range(len(a)):
        assert abs(lam[k] - (1 / a[k] + a[k] / kappa)) < OUTLIER_SD * sd
        assert abs((v[:, k] @ e[:, k]) ** 2 - (1 - kappa / a[k] ** 2)) < OVERLAP_ATOL
    # the first non-outlier eigenvalue sits at the bulk edge
    assert abs(lam[len(a)] - 2 / math.sqrt(kappa)) < OUTLIER_SD * sd


def test_rmt_large_n_log_z(rmt):
    name, p, lam, _, _ = rmt
    kappa = p["gamma"] * p["eta"]
    r = T.large_n_log_partition(lam)
    if name == "PM":
        assert not r.condensed
        assert abs(r.log_z - 1 / (4 * kappa)) < LARGE_N_LOGZ_ATOL
    else:
        assert r.condensed and r.mu == lam[0]
        assert abs(r.log_z - 0.5 * (T.semicircle_action(lam[0], kappa) - 1)) < LARGE_N_LOGZ_ATOL
        assert abs(r.M - (1 - T.semicircle_stieltjes(lam[0], kappa))) < LARGE_N_LOGZ_ATOL


def test_rmt_exact_log_z_against_theory(rmt):
    sphere = pytest.importorskip("bayes_sbm.sphere")
    if not hasattr(sphere, "log_partition"):
        pytest.skip("bayes_sbm.sphere.log_partition not available yet")
    name, p, lam, _, _ = rmt
    kappa = p["gamma"] * p["eta"]
    exact = float(sphere.log_partition(np.ascontiguousarray(lam[::-1]))) / N_RMT
    theory = 1 / (4 * kappa) if name == "PM" else 0.5 * (T.semicircle_action(lam[0], kappa) - 1)
    assert abs(exact - theory) < FINITE_N_LOGZ_ATOL
