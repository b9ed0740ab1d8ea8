"""Large-N theory of the spherical Boltzmann machine (THEORY.md §2, §4, §5, §6).

Pure NumPy/SciPy, float64 throughout. Every numerical result of the toolkit
is checked against the functions here, so they are written to be exact to
rounding and to assign phase-boundary points deterministically:

* §2 semicircle closed forms (:func:`semicircle_stieltjes`,
  :func:`semicircle_stieltjes_inverse`, :func:`semicircle_log_potential`,
  :func:`semicircle_action`, :func:`semicircle_density`), vectorised with
  NumPy broadcasting, and the large-N ``(1/N) log Z`` of a given spectrum
  (:func:`large_n_log_partition`);
* §4 the posterior spectral saddle point and its phases
  (:func:`posterior_saddle`);
* §5 the evidence (:func:`log_evidence`, :func:`evidence_terms`);
* §6 the teacher–student divergences (:func:`teacher_student_kls`) and the
  sampling temperature β (:func:`forward_kl_typical_beta`,
  :func:`sampling_phase`, :func:`sampling_state`,
  :func:`temperature_window`).

Notation is THEORY.md's: ``c_k`` are data eigenvalues, ``kappa = γη`` is the
bulk precision (the plain ``c`` of §4 and the ``κ`` of §6), ``a_k = η c_k``,
``b = η τ`` with ``τ = Σ c_k``, ``ℓ = 2/√κ`` the bulk edge.

Phase boundaries: on a boundary the two quantities compared in §4 steps 1–2
are equal, so they are compared with the relative tolerance
:data:`BOUNDARY_RTOL`; all reported quantities are continuous there, only the
discrete labels (``phase``, ``d``, ``o``) depend on the tie-break.

Ambiguities resolved
--------------------
1. *Which side owns a boundary.* Taken from the explicit K = 1 five-region
   description at the end of §4 and generalised: step 1 accepts PM when
   ``g_1^PM ≥ 1`` up to ``BOUNDARY_RTOL`` (so γ = 1 is PMo and γη = 1 is
   PMe); a mode is an outlier only when ``a_k > √κ`` by more than
   ``BOUNDARY_RTOL`` (so η = γ is PMe/SG, not PMo/FMe); step 2 accepts ``d``
   only when ``g < min(1, g_{d+1}^PM)`` by more than ``BOUNDARY_RTOL`` (so
   η = 1, γ < 1 is FMe, and at a d → d + 1 boundary the larger ``d`` wins).
2. *Step 3 with κ > 1.* §4 says step 3 needs κ ≤ 1 and that a κ > 1 case
   belongs to PM; if step 2 accepts no ``d`` and κ > 1 the PM solution of
   step 1 is returned (phase PMo/PMe by the outlier test). This is reached
   only inside the tolerance band just below the PM/FMo boundary (e.g. K = 1,
   γ = 1 − 1.5e-12, η = 2), where step 1 refuses because
   ``g_1^PM < 1 − BOUNDARY_RTOL`` and step 2 refuses because ``g ≥ 1 −
   BOUNDARY_RTOL``; every reported quantity there is within ~1e-11 of both
   sides.
3. *Overlaps never negative.* Step 2's ``u_k = 1 − g/a_k`` is reported as
   ``max(0, 1 − g/a_k)`` (identical whenever the formula is positive, which
   was every step-2 case with ``a_k > 0`` in 60 000 random draws); PM and
   step-3 overlaps are 0 for modes that are not outliers by the tolerance of
   item 1.
4. *Zero eigenvalues in ``c``.* Allowed (needed for the §6 cubic roots): a
   zero mode is a non-outlier with ``u = 0``, ``ξ = 1`` (the limit of
   ``a·G⁻¹(a)`` as a → 0) and contributes ``h = −½ log κ`` to Φ, which the
   ``(r/2) log κ`` of §5 cancels, so zeros do not change ``log Y``. ``c``
   must still have a positive entry (τ > 0). ``r`` is ``len(c)``.
5. *τ for arbitrary ``c``.* τ = Σ c_k is used everywhere (the normalised
   convention K = Σc of §5), also in the §6 fresh solutions (τ = 2 + 1/η).
6. *§5 condensed-mode term.* Used for ``k ≤ d`` with ``u_k > 0`` and the
   phase condensed (FMo, FMe, SG), with ``g = g_1`` (the common step-2 g, or
   √κ in step 3). In SG ``u_1 = 0`` so every mode takes the "other" term.
7. *``E_pp`` in PM.* Set to exactly 0 in PM phases as §6 says (the formula
   gives 0 up to rounding there, because (γ/η)ω²(ξ_1 − 1)/(2ω − 1)² = 1).
8. *§6 cubic roots.* Roots are taken from ``numpy.roots`` and polished by
   Newton steps; an imaginary part above 1e-6·max(1, |root|) means no real
   spectrum (NaN); "within 1e-6 below zero" is read as an absolute
   threshold (−1e-6 ≤ root < 0 → 0); a root < −1e-6 → NaN; a zero root
   that §4 puts among the condensed modes ``k ≤ d`` (where ``u_k = 1 − g/a_k``
   and the §5 term need a positive eigenvalue) → NaN. (That last case cannot
   actually occur: a zero mode has the same ``t`` as the mode above it and a
   larger ``g``, so step 2 never adds it, and it is never a step-3 outlier;
   the guard is kept.) A zero root is otherwise kept as the third mode
   (r = 3, τ = 2 + 1/η as §6 says). The same rules are applied to ``c̃`` of
   the predictive forward KL, whose entries are > 0 for ω > 2/3 (λ₋ is
   computed from λ₊λ₋ = (c_1 − (c_1 − c_2)²/2)/η, without cancellation). No
   NaN occurred on a 7 × 60 × 60 grid of ω ∈ [1.01, 100], γ, η ∈ [e⁻⁶, e⁵].
9. *Sampling temperature ties.* ``c_eff ≥ 1`` and ``βλ_1 ≤ μ_pm`` are
   compared with ``BOUNDARY_RTOL`` (ties go to sPM); λ_1 is ``lam[0]`` of §4
   (the bulk edge ℓ when the top mode has no outlier). The label sSG is used
   for every ``c_eff < 1`` case, also when βλ_1 is an outlier.
10. *β_c.* ``temperature_window`` returns ``β_c = g_1`` only when ``u_1 > 0``
    (§6), NaN otherwise; the upper end is always √(γη).
11. *Large-N log Z of a finite spectrum.* "G(λ_1⁺) ≥ 1 in the N → ∞ sense"
    is read as: drop the top level λ_1 (its multiplicity m counted with
    ``BOUNDARY_RTOL``), ``G_rest(λ_1) = (1/N) Σ_{λ_i < λ_1} 1/(λ_1 − λ_i)``;
    the spectrum condenses iff ``G_rest(λ_1) < 1 − m/N``. Then ``μ = λ_1``,
    ``M = 1 − G_rest(λ_1)`` and the (divergent, o(1) per mode) ``log(μ −
    λ_1)`` terms are dropped from the sum. Otherwise μ is the finite-N root
    of ``G(μ) = 1`` above λ_1 (the exact saddle z* of §2) and M = 0. This is
    exact for λ_1 = … = λ_N (Z = e^{Nλ/2}), puts the rank-one teacher's
    transition exactly at ω = 1 and is shift-covariant (W → W + sI adds s/2).
12. *``phase`` of the teacher–student result* is the §4 phase of the teacher
    data c = (2 − 1/ω, 1/ω); the phases of the two fresh §6 solutions are
    reported separately (``phase_fwd_pp``, ``phase_rev_pp``).
13. *Semicircle helpers at the edge.* Arguments below the edge by no more
    than ``BOUNDARY_RTOL`` (relative) are clipped to the edge; clearly
    inside the bulk they raise ``ValueError`` (G is complex there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _checks

__all__ = [
    "BOUNDARY_RTOL",
    "CUBIC_ROOT_ATOL",
    "PHASES",
    "SAMPLING_PHASES",
    "PosteriorSaddle",
    "EvidenceTerms",
    "TeacherStudentKL",
    "SamplingState",
    "LargeNLogZ",
    "semicircle_edge",
    "semicircle_density",
    "semicircle_stieltjes",
    "semicircle_stieltjes_inverse",
    "semicircle_log_potential",
    "semicircle_action",
    "large_n_log_partition",
    "posterior_saddle",
    "evidence_terms",
    "log_evidence",
    "ObservableReference",
    "observable_reference",
    "teacher_data_eigenvalues",
    "teacher_student_kls",
    "sampling_state",
    "sampling_phase",
    "forward_kl_typical_beta",
    "temperature_window",
]

#: Relative tolerance of the §4 boundary comparisons (THEORY.md §4: "~1e-12").
BOUNDARY_RTOL = 1e-12
#: §6: cubic roots within this distance below zero are rounding (set to 0).
CUBIC_ROOT_ATOL = 1e-6

PHASES = ("PMo", "PMe", "FMo", "FMe", "SG")
SAMPLING_PHASES = ("sPM", "sFM", "sSG")


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def _positive_scalar(name: str, value) -> float:
    return _checks.positive_scalar(name, value)


def _teacher_omega(value) -> float:
    w = _positive_scalar("omega", value)
    if w <= 1.0:
        raise ValueError(
            f"omega: must be > 1 (a condensed rank-one teacher, THEORY.md §3/§6), got {value!r}"
        )
    return w


def _eigenvalues_c(c) -> np.ndarray:
    try:
        arr = np.asarray(c, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"c must be a 1-D array of non-negative numbers, got {c!r}") from None
    arr = np.atleast_1d(arr)
    if arr.ndim != 1:
        raise ValueError(f"c must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("c must not be empty, got []")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"c must be finite, got {arr.tolist()!r}")
    if np.any(arr < 0):
        raise ValueError(f"c must be non-negative, got {arr.tolist()!r}")
    if not np.any(arr > 0):
        raise ValueError(f"c must contain a positive eigenvalue, got {arr.tolist()!r}")
    return np.sort(arr)[::-1].copy()


def _c_param(c) -> np.ndarray:
    arr = np.asarray(c, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))] if arr.ndim else arr
        raise ValueError(f"c (bulk precision) must be positive and finite, got {np.ravel(bad)[0]!r}")
    return arr


def _frozen(x) -> np.ndarray:
    a = np.array(x, dtype=np.float64)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------
# §2 semicircle closed forms
# --------------------------------------------------------------------------
def semicircle_edge(c):
    """Bulk edge ``ℓ = 2/√c`` of a semicircle of variance 1/c (THEORY.md §2).

    Parameters
    ----------
    c : array_like, positive
        Bulk precision (any shape).

    Returns
    -------
    ndarray or float
        ``2/√c``, same shape as ``c``.
    """
    c = _c_param(c)
    out = 2.0 / np.sqrt(c)
    return out[()] if out.ndim == 0 else out


def semicircle_density(lam, c):
    """Semicircle density ``ρ(λ) = (c/2π) √(4/c − λ²)`` (0 outside the bulk), §2.

    Parameters
    ----------
    lam, c : array_like
        Broadcast together; ``c > 0``.

    Returns
    -------
    ndarray or float
        Density values, broadcast shape.
    """
    c = _c_param(c)
    lam = np.asarray(lam, dtype=np.float64)
    out = (c / (2 * np.pi)) * np.sqrt(np.clip(4.0 / c - lam**2, 0.0, None))
    return out[()] if out.ndim == 0 else out


def _z_outside(z, c, name="z"):
    z = np.asarray(z, dtype=np.float64)
    ell = 2.0 / np.sqrt(c)
    z, ell = np.broadcast_arrays(z, ell)
    if np.any(np.isnan(z)):
        raise ValueError(f"{name} must not be NaN")
    below = z < ell * (1.0 - BOUNDARY_RTOL)
    if np.any(below):
        bad = z[below].ravel()[0]
        edge = ell[below].ravel()[0]
        raise ValueError(
            f"{name} must lie at or above the bulk edge 2/sqrt(c) = {edge!r}, got {bad!r}"
        )
    return np.maximum(z, ell)


def semicircle_stieltjes(z, c):
    """Stieltjes transform ``G(z) = (c/2)(z − √(z² − ℓ²))`` for ``z ≥ ℓ`` (§2).

    Evaluated as ``2/(z + √((z − ℓ)(z + ℓ)))`` (no cancellation for large z).

    Parameters
    ----------
    z : array_like
        Points at or above the edge ``ℓ = 2/√c``; broadcast with ``c``.
    c : array_like, positive
        Bulk precision (semicircle variance 1/c).

    Returns
    -------
    ndarray or float
        ``G(z)``, in ``(0, √c]``; ``G(ℓ) = √c``.
    """
    c = _c_param(c)
    z = _z_outside(z, c)
    ell = 2.0 / np.sqrt(c)
    out = 2.0 / (z + np.sqrt((z - ell) * (z + ell)))
    return out[()] if out.ndim == 0 else out


def semicircle_stieltjes_inverse(g, c):
    """Inverse Stieltjes transform ``G⁻¹(g) = 1/g + g/c`` for ``0 < g ≤ √c`` (§2).

    Parameters
    ----------
    g, c : array_like
        Broadcast together; ``g`` in ``(0, √c]`` (up to ``BOUNDARY_RTOL``).

    Returns
    -------
    ndarray or float
        ``z ≥ ℓ`` with ``G(z) = g``.
    """
    c = _c_param(c)
    g = np.asarray(g, dtype=np.float64)
    g, sc = np.broadcast_arrays(g, np.sqrt(c))
    bad = ~((g > 0) & (g <= sc * (1.0 + BOUNDARY_RTOL)))
    if np.any(bad):
        raise ValueError(f"g must lie in (0, sqrt(c)], got {g[bad].ravel()[0]!r}")
    out = 1.0 / g + g / np.asarray(c)
    return out[()] if out.ndim == 0 else out


def semicircle_log_potential(z, c):
    """Log-potential ``F(z) = ∫ log(z − λ) ρ(λ) dλ = G²/(2c) − log G`` (§2).

    Parameters
    ----------
    z, c : array_like
        As in :func:`semicircle_stieltjes`.

    Returns
    -------
    ndarray or float
        ``F(z)``; ``F′ = G``.
    """
    c = _c_param(c)
    g = np.asarray(semicircle_stieltjes(z, c))
    out = g**2 / (2.0 * c) - np.log(g)
    return out[()] if out.ndim == 0 else out


def semicircle_action(z, c):
    """Action ``S(z) = z − F(z) = z − G²/(2c) + log G`` (§2).

    With the Lagrange multiplier μ, ``(1/N) log Z = ½ (S(μ) − 1)``.

    Parameters
    ----------
    z, c : array_like
        As in :func:`semicircle_stieltjes`.

    Returns
    -------
    ndarray or float
    """
    c = _c_param(c)
    z_arr = _z_outside(z, c)
    g = np.asarray(semicircle_stieltjes(z_arr, c))
    out = z_arr - g**2 / (2.0 * c) + np.log(g)
    return out[()] if out.ndim == 0 else out


def _action_from_g(mu: float, g: float, kappa: float) -> float:
    """``S = μ − g²/(2κ) + log g`` with ``g = G(μ)`` given (§5)."""
    return mu - g * g / (2.0 * kappa) + math.log(g)


# --------------------------------------------------------------------------
# §2 large-N log Z of a given spectrum
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LargeNLogZ:
    """Large-N ``(1/N) log Z`` of a spectrum (THEORY.md §2 "Large N").

    Attributes
    ----------
    log_z : ndarray or float
        ``(1/N) log Z = ½[μ − 1 − (1/N) Σ log(μ − λ_i)]``, shape ``batch``.
    mu : ndarray or float
        Lagrange multiplier μ, shape ``batch``.
    M : ndarray or float
        Condensate fraction (0 when paramagnetic), shape ``batch``.
    condensed : ndarray or bool
        Whether μ sticks to λ_1, shape ``batch``.
    """

    log_z: np.ndarray | float
    mu: np.ndarray | float
    M: np.ndarray | float
    condensed: np.ndarray | bool


def _large_n_one(lam: np.ndarray) -> tuple[float, float, float, bool]:
    n = lam.size
    lam = np.sort(lam)[::-1]
    top = lam[0]
    scale = max(1.0, float(np.max(np.abs(lam))))
    tied = lam >= top - BOUNDARY_RTOL * scale
    m = int(np.count_nonzero(tied))
    gaps = top - lam[~tied]
    g_rest = float(np.sum(1.0 / gaps)) / n
    if g_rest < 1.0 - m / n:
        mu = float(top)
        log_z = 0.5 * (mu - 1.0 - float(np.sum(np.log(gaps))) / n)
        return log_z, mu, 1.0 - g_rest, True
    # Paramagnetic: finite-N root eps of (1/N) Σ 1/(eps + δ_i) = 1, δ_i = λ_1 − λ_i.
    # f is convex and decreasing; Newton from the left (f > 0) is monotone.
    delta = top - lam
    eps = 0.5 / n
    for _ in range(200):
        inv = 1.0 / (eps + delta)
        f = inv.sum() / n - 1.0
        fp = -(inv * inv).sum() / n
        step = -f / fp
        eps_new = eps + step
        if not eps_new > eps or abs(step) <= 4e-16 * eps_new:
            eps = max(eps, eps_new)
            break
        eps = eps_new
    mu = float(top + eps)
    log_z = 0.5 * (mu - 1.0 - float(np.sum(np.log(eps + delta))) / n)
    return log_z, mu, 0.0, False


def large_n_log_partition(eigenvalues) -> LargeNLogZ:
    """Leading-order ``(1/N) log Z`` of the SBM with the given spectrum (§2).

    Solves ``G(μ) = 1`` above the spectrum (paramagnetic) or sticks μ to λ_1
    (condensed, ``M = 1 − G_rest(λ_1)``), see "Ambiguities resolved" item 11
    of the module docstring for how the N → ∞ criterion is applied to a
    finite spectrum.

    Parameters
    ----------
    eigenvalues : array_like, shape (..., N)
        Eigenvalues of βW (any order); the last axis is the spectrum.

    Returns
    -------
    LargeNLogZ
        Fields of shape ``(...)`` (Python scalars for a 1-D input).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim == 0 or lam.shape[-1] == 0:
        raise ValueError(f"eigenvalues must have a non-empty last axis, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues must be finite, got NaN or inf")
    batch = lam.shape[:-1]
    flat = lam.reshape(-1, lam.shape[-1])
    res = np.array([_large_n_one(row) for row in flat], dtype=object)
    if not batch:
        lz, mu, mm, cond = res[0]
        return LargeNLogZ(float(lz), float(mu), float(mm), bool(cond))
    cols = [np.array([r[i] for r in res]).reshape(batch) for i in range(4)]
    return LargeNLogZ(
        _frozen(cols[0]), _frozen(cols[1]), _frozen(cols[2]), cols[3].astype(bool)
    )


# --------------------------------------------------------------------------
# §4 posterior saddle
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PosteriorSaddle:
    """Large-N posterior spectral saddle point (THEORY.md §4).

    Attributes
    ----------
    phase : str
        One of ``"PMo", "PMe", "FMo", "FMe", "SG"``.
    mu : float
        Lagrange multiplier μ of the sphere.
    M : float
        Condensate fraction (0 in PM).
    edge : float
        Bulk edge ``ℓ = 2/√(γη)``.
    d : int
        Number of condensed modes (0 in PM).
    o : int
        Number of BBP outliers ``#{k : a_k > √(γη)}``.
    g, u, xi, lam : ndarray, shape (r,)
        Per mode, in descending-``c`` order: ``G`` at the mode, overlap²
        ``u_k``, ``ξ_k = a_k G⁻¹(min(g_k, a_k))`` and the eigenvalue λ_k.
    c : ndarray, shape (r,)
        The data eigenvalues, sorted descending.
    gamma, eta, kappa : float
        γ, η and the bulk precision κ = γη.
    mu_z, g_z : float
        μ_Z and g_Z of §5 (``1 + 1/κ`` and 1 in PM, μ and g_1 otherwise).
    """

    phase: str
    mu: float
    M: float
    edge: float
    d: int
    o: int
    g: np.ndarray
    u: np.ndarray
    xi: np.ndarray
    lam: np.ndarray
    c: np.ndarray
    gamma: float
    eta: float
    kappa: float
    mu_z: float
    g_z: float

    @property
    def condensed(self) -> bool:
        """True in FMo, FMe and SG (μ sticks to the top eigenvalue)."""
        return self.phase in ("FMo", "FMe", "SG")

    @property
    def signal(self) -> np.ndarray:
        """Posterior mean of the signal blocks ``e_kᵀ W e_k = (ξ_k − 1)/a_k``, shape (r,)."""
        # (ξ − 1)/a = G⁻¹(x) − 1/a with x = min(g, a); = a/κ exactly when x = a (no cancellation)
        a = self.eta * self.c
        x = np.minimum(self.g, a)
        out = a / self.kappa
        take = x < a
        out[take] = 1.0 / x[take] + x[take] / self.kappa - 1.0 / a[take]
        return _frozen(out)


def _xi(a: np.ndarray, g: np.ndarray, kappa: float) -> np.ndarray:
    """``ξ_k = a_k G⁻¹(min(g_k, a_k))``; ``1 + a²/κ`` when the min is a_k (a = 0 safe)."""
    x = np.minimum(g, a)
    out = 1.0 + a * a / kappa
    take = x < a
    out[take] = a[take] * (1.0 / x[take] + x[take] / kappa)
    return out


def _saddle_sorted(c: np.ndarray, gamma: float, eta: float) -> PosteriorSaddle:
    """§4 on validated, descending ``c``; scalar γ, η."""
    r = c.size
    kappa = gamma * eta
    sk = math.sqrt(kappa)
    ell = 2.0 / sk
    a = eta * c
    tau = float(c.sum())
    b = eta * tau
    outlier = a > sk * (1.0 + BOUNDARY_RTOL)
    o = int(np.count_nonzero(outlier))
    safe_a = np.where(outlier, a, 1.0)
    g_pm = np.where(outlier, kappa / safe_a, sk)
    lam_pm = np.where(outlier, 1.0 / safe_a + safe_a / kappa, ell)
    u_pm = np.where(outlier, np.maximum(0.0, 1.0 - kappa / (safe_a * safe_a)), 0.0)

    def pm() -> PosteriorSaddle:
        mu = 1.0 + 1.0 / kappa
        phase = "PMo" if outlier[0] else "PMe"
        return PosteriorSaddle(
            phase, mu, 0.0, ell, 0, o, _frozen(g_pm), _frozen(u_pm),
            _frozen(_xi(a, g_pm, kappa)), _frozen(lam_pm), _frozen(c),
            gamma, eta, kappa, mu, 1.0,
        )

    # Step 1: PM.
    if g_pm[0] >= 1.0 - BOUNDARY_RTOL:
        return pm()
    # Step 2: d top modes condense on a common eigenvalue.
    partial = np.cumsum(a)
    for d in range(1, r + 1):
        t = max(b - float(partial[d - 1]), 0.0)
        g = (t + math.sqrt(t * t + 4.0 * b * d * kappa)) / (2.0 * b)
        bound = min(1.0, float(g_pm[d]) if d < r else sk)
        if g < bound * (1.0 - BOUNDARY_RTOL):
            mu = 1.0 / g + g / kappa
            gk = g_pm.copy()
            gk[:d] = g
            lam = lam_pm.copy()
            lam[:d] = mu
            u = u_pm.copy()
            with np.errstate(divide="ignore"):
                u[:d] = np.maximum(0.0, 1.0 - g / a[:d])
            return PosteriorSaddle(
                "FMo", mu, 1.0 - g, ell, d, o, _frozen(gk), _frozen(u),
                _frozen(_xi(a, gk, kappa)), _frozen(lam), _frozen(c),
                gamma, eta, kappa, mu, g,
            )
    # Step 3: edge-sticky; only for κ ≤ 1 (a κ > 1 case here is a rounding tie -> PM).
    if kappa > 1.0:
        return pm()
    gk = np.full(r, sk)
    u = np.where(outlier, np.maximum(0.0, 1.0 - sk / safe_a), 0.0)
    phase = "FMe" if o > 0 else "SG"
    return PosteriorSaddle(
        phase, ell, 1.0 - sk, ell, max(o, 1), o, _frozen(gk), _frozen(u),
        _frozen(_xi(a, gk, kappa)), _frozen(np.full(r, ell)), _frozen(c),
        gamma, eta, kappa, ell, sk,
    )


def posterior_saddle(c, gamma, eta) -> PosteriorSaddle:
    """Large-N posterior saddle point and phase (THEORY.md §4).

    Parameters
    ----------
    c : array_like, shape (r,)
        Non-zero data-correlation eigenvalues, any order (sorted internally,
        results in descending-``c`` order). Zeros are tolerated (see the
        module docstring); negative, NaN or all-zero values raise.
    gamma : float
        Prior precision γ > 0.
    eta : float
        Posterior temperature η > 0 (η = 1 Bayes).

    Returns
    -------
    PosteriorSaddle
        ``phase``, ``mu``, ``M``, ``edge``, ``d``, ``o`` and per-mode arrays
        ``g``, ``u``, ``xi``, ``lam`` of shape (r,).

    Raises
    ------
    ValueError
        Invalid ``c``, ``gamma`` or ``eta`` (the message names the argument).
    """
    gamma = _positive_scalar("gamma", gamma)
    eta = _positive_scalar("eta", eta)
    return _saddle_sorted(_eigenvalues_c(c), gamma, eta)


# --------------------------------------------------------------------------
# §5 evidence
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class EvidenceTerms:
    """Terms of the large-N evidence (THEORY.md §5).

    Attributes
    ----------
    log_evidence : float
        ``(1/N) log Y_η = Φ + (r/2) log κ + τη/2``.
    phi : float
        ``Φ = Σ_k h_k − τ η F_1``.
    F1 : float
        ``F_1 = ½ S(μ_Z)``.
    h : ndarray, shape (r,)
        Per-mode terms, descending-``c`` order.
    condensed_term : ndarray of bool, shape (r,)
        Which modes use the condensed-mode form of ``h_k``.
    saddle : PosteriorSaddle
        The §4 solution used.
    """

    log_evidence: float
    phi: float
    F1: float
    h: np.ndarray
    condensed_term: np.ndarray
    saddle: PosteriorSaddle


def _evidence(s: PosteriorSaddle) -> EvidenceTerms:
    c, gamma, eta, kappa = s.c, s.gamma, s.eta, s.kappa
    r = c.size
    tau = float(c.sum())
    F1 = 0.5 * _action_from_g(s.mu_z, s.g_z, kappa)
    idx = np.arange(r)
    cond = (idx < s.d) & (s.u > 0) & s.condensed
    h = eta * c * c / (4.0 * gamma) - 0.5 * math.log(kappa)
    if np.any(cond):
        g = float(s.g[0])
        cc = c[cond]
        h[cond] = (
            -0.5 - kappa / (4.0 * g * g) + cc * g / (2.0 * gamma)
            + eta * cc / (2.0 * g) - 0.5 * np.log(g * eta * cc)
        )
    phi = float(h.sum()) - tau * eta * F1
    logy = phi + 0.5 * r * math.log(kappa) + 0.5 * tau * eta
    cond.setflags(write=False)
    return EvidenceTerms(logy, phi, F1, _frozen(h), cond, s)


def evidence_terms(c, gamma, eta) -> EvidenceTerms:
    """Large-N evidence with its intermediate terms (THEORY.md §5).

    Parameters
    ----------
    c : array_like, shape (r,)
        Data eigenvalues (as in :func:`posterior_saddle`); τ = Σ c.
    gamma, eta : float
        γ > 0, η > 0.

    Returns
    -------
    EvidenceTerms
    """
    return _evidence(posterior_saddle(c, gamma, eta))


def log_evidence(c, gamma, eta) -> float:
    """``(1/N) log Y_η(D)`` at large N, normalised convention K = Σc (§5).

    In PM phases this equals ``(η Σ c_k² − K)/(4γ)``.

    Parameters
    ----------
    c : array_like, shape (r,)
        Data eigenvalues.
    gamma, eta : float
        γ > 0, η > 0.

    Returns
    -------
    float
    """
    return evidence_terms(c, gamma, eta).log_evidence


@dataclass(frozen=True, eq=False)
class ObservableReference:
    """Large-N values of a run's posterior observables (THEORY.md §4–5): the one theory reference.

    Written to a run's ``meta.json`` and read back by ``fit``, ``diagnose``,
    ``compare`` and the studies.

    Attributes
    ----------
    phase : str
    lam_top : ndarray, shape (r + 1,)
        λ_1 … λ_r of §4 and the bulk edge ℓ for rank r + 1.
    u, signal : ndarray, shape (r,)
        Overlaps² u_k and signal blocks ``(ξ_k − 1)/a_k``.
    M, mu, edge : float
        Condensate, Lagrange multiplier, bulk edge ``2/√κ``.
    log_z_per_n : float
        ``(1/N) log Z(W)`` of a typical draw: ``½(S(μ_Z) − 1)``,
        ``S(μ_Z) = μ_Z − g_Z²/(2κ) + log g_Z`` (§2 with §5's μ_Z, g_Z).
    log_evidence_per_n : float
        ``(1/N) log Y`` of §5.
    kappa : float
        γη.
    d, o : int
        Condensed modes and BBP outliers.
    """

    phase: str
    lam_top: np.ndarray
    u: np.ndarray
    signal: np.ndarray
    M: float
    mu: float
    edge: float
    log_z_per_n: float
    log_evidence_per_n: float
    kappa: float
    d: int
    o: int

    def as_dict(self) -> dict:
        """JSON-ready dict (arrays as lists; ``lam`` = the r data-mode values of ``lam_top``)."""
        return {
            "phase": self.phase,
            "lam_top": self.lam_top.tolist(),
            "lam": self.lam_top[:-1].tolist(),
            "u": self.u.tolist(),
            "signal": self.signal.tolist(),
            "M": self.M,
            "mu": self.mu,
            "edge": self.edge,
            "log_z_per_n": self.log_z_per_n,
            "log_evidence_per_n": self.log_evidence_per_n,
            "kappa": self.kappa,
            "d": self.d,
            "o": self.o,
        }


def observable_reference(c, gamma, eta) -> ObservableReference:
    """THEORY.md §4–5 values of the posterior observables at data eigenvalues ``c``.

    Parameters
    ----------
    c : array_like, shape (r,)
        Data-correlation eigenvalues (any order; results follow descending c).
    gamma, eta : float

    Returns
    -------
    ObservableReference

    Raises
    ------
    ValueError
        Invalid ``c``, ``gamma`` or ``eta``.
    """
    ev = evidence_terms(c, gamma, eta)
    s = ev.saddle
    action = s.mu_z - s.g_z**2 / (2.0 * s.kappa) + math.log(s.g_z)
    return ObservableReference(
        phase=str(s.phase),
        lam_top=_frozen(np.append(np.asarray(s.lam, dtype=float), float(s.edge))),
        u=_frozen(s.u),
        signal=_frozen(s.signal),
        M=float(s.M),
        mu=float(s.mu),
        edge=float(s.edge),
        log_z_per_n=0.5 * (action - 1.0),
        log_evidence_per_n=float(ev.log_evidence),
        kappa=float(s.kappa),
        d=int(s.d),
        o=int(s.o),
    )


def _phi_fresh(values: np.ndarray, gamma: float, eta: float) -> tuple[float, PosteriorSaddle | None]:
    """Φ of a fresh §4 solution on §6 eigenvalues; NaN outside the domain (item 8)."""
    c = np.sort(values)[::-1]
    s = _saddle_sorted(c, gamma, eta)
    if s.condensed and np.any(c[: s.d] <= 0.0):
        return math.nan, s
    return _evidence(s).phi, s


# --------------------------------------------------------------------------
# §6 teacher–student divergences
# --------------------------------------------------------------------------
def teacher_data_eigenvalues(omega) -> np.ndarray:
    """Large-N data eigenvalues ``c = (2 − 1/ω, 1/ω)`` of K = 2 teacher samples (§3).

    Parameters
    ----------
    omega : float
        Teacher eigenvalue, ω > 1.

    Returns
    -------
    ndarray, shape (2,)
    """
    w = _teacher_omega(omega)
    return _frozen([2.0 - 1.0 / w, 1.0 / w])


@dataclass(frozen=True, eq=False)
class TeacherStudentKL:
    """Per-N teacher–student divergences, K = 2 rank-one teacher (THEORY.md §6).

    Attributes
    ----------
    fwd_typ, rev_typ : float
        Typical forward ``⟨D(P*‖P_W)⟩/N`` and reverse ``⟨D(P_W‖P*)⟩/N``.
    fwd_pp, rev_pp : float
        Predictive forward ``D(P*‖P_pp)/N`` and reverse ``D(P_pp‖P*)/N``
        (NaN where the §6 formula is outside its domain).
    phase : str
        Posterior phase of the teacher data (§4).
    E_fwd, E_pp, F1, phi : float
        Intermediate quantities of §5–6.
    phase_fwd_pp, phase_rev_pp : str
        Phases of the fresh §4 solutions on ``c̃`` and ``c̃_pp`` ("" if NaN).
    c_tilde, c_tilde_pp : ndarray, shape (3,)
        The three eigenvalues used (descending; NaNs if out of domain).
    saddle : PosteriorSaddle
        §4 solution on the teacher data.
    """

    fwd_typ: float
    rev_typ: float
    fwd_pp: float
    rev_pp: float
    phase: str
    E_fwd: float
    E_pp: float
    F1: float
    phi: float
    phase_fwd_pp: str
    phase_rev_pp: str
    c_tilde: np.ndarray
    c_tilde_pp: np.ndarray
    saddle: PosteriorSaddle


def _cubic_real_roots(coeffs: np.ndarray) -> np.ndarray | None:
    """Real roots of a monic cubic, Newton-polished; None if clearly complex (item 8)."""
    roots = np.roots(coeffs)
    if np.any(np.abs(roots.imag) > CUBIC_ROOT_ATOL * np.maximum(1.0, np.abs(roots.real))):
        return None
    x = roots.real.astype(np.float64)
    p = np.poly1d(coeffs)
    dp = p.deriv()
    for _ in range(3):
        d = dp(x)
        ok = d != 0
        x_new = x.copy()
        x_new[ok] = x[ok] - p(x[ok]) / d[ok]
        # keep a polished root only if it does not increase the residual
        better = np.abs(p(x_new)) <= np.abs(p(x))
        x = np.where(better, x_new, x)
    return np.sort(x)[::-1]


def teacher_student_kls(gamma, eta, omega) -> TeacherStudentKL:
    """Typical and predictive KLs for the K = 2 rank-one teacher (THEORY.md §6).

    Parameters
    ----------
    gamma, eta : float
        γ > 0, η > 0.
    omega : float
        Teacher eigenvalue ω > 1.

    Returns
    -------
    TeacherStudentKL
    """
    gamma = _positive_scalar("gamma", gamma)
    eta = _positive_scalar("eta", eta)
    w = _teacher_omega(omega)
    c = np.array([2.0 - 1.0 / w, 1.0 / w])
    s = _saddle_sorted(c, gamma, eta)
    ev = _evidence(s)
    kappa = s.kappa
    c1, c2 = float(c[0]), float(c[1])
    xi1 = float(s.xi[0])
    q = (2.0 * w - 1.0) ** 2
    E_fwd = -(xi1 - 1.0) * (w - 1.0) ** 2 / (eta * q)
    if s.condensed:
        E_pp = 0.5 * ((gamma / eta) * w * w / q * (xi1 - 1.0) - 1.0) * (w - 1.0)
    else:
        E_pp = 0.0
    log_w = math.log(w)
    fwd_typ = E_fwd + ev.F1 - 0.5 * (1.0 - log_w)
    gz = s.g_z
    rev_typ = E_pp + 0.5 * (w - log_w) - 0.5 * (1.0 - gz * gz / (2.0 * kappa) + math.log(gz))

    # Predictive forward KL: eigenvalues of C + x xᵀ/(Nη), x ~ P*.
    inv_eta = 1.0 / eta
    delta = math.sqrt((c1 - inv_eta) ** 2 + 2.0 * inv_eta * (c1 - c2) ** 2)
    lp = 0.5 * (c1 + inv_eta + delta)
    # λ₋ from the product λ₊λ₋ = (c_1 − (c_1 − c_2)²/2)/η (no cancellation).
    lm = (c1 - 0.5 * (c1 - c2) ** 2) * inv_eta / lp
    c_tilde = np.array([lp, lm, c2])
    fwd_pp, phase_f = math.nan, ""
    ct = _clean_roots(c_tilde)
    if ct is not None:
        phi_t, st = _phi_fresh(ct, gamma, eta)
        if math.isfinite(phi_t):
            fwd_pp = -(0.5 * math.log(kappa) + phi_t - ev.phi) - 0.5 * (1.0 - log_w)
            phase_f = st.phase
        c_tilde = np.sort(ct)[::-1]

    # Predictive reverse KL: roots of the §6 cubic.
    xi = s.xi
    q1 = c1 / 2.0 - (gamma / (2.0 * eta)) * (float(xi[0]) - 1.0) / c1
    q2 = c2 / 2.0 - (gamma / (2.0 * eta)) * (float(xi[1]) - 1.0) / c2
    q0 = 1.0 - q1 - q2
    coeffs = np.array([
        1.0,
        -(c1 + c2 + inv_eta),
        c1 * c2 + (q1 * c2 + q2 * c1 + q0 * (c1 + c2)) * inv_eta,
        -q0 * c1 * c2 * inv_eta,
    ])
    rev_pp, phase_r = math.nan, ""
    c_pp = np.full(3, math.nan)
    roots = _cubic_real_roots(coeffs)
    if roots is not None:
        cr = _clean_roots(roots)
        if cr is not None:
            c_pp = np.sort(cr)[::-1]
            phi_pp, sp = _phi_fresh(cr, gamma, eta)
            if math.isfinite(phi_pp):
                rev_pp = E_pp + 0.5 * (w - log_w) + 0.5 * math.log(kappa) + phi_pp - ev.phi
                phase_r = sp.phase
    return TeacherStudentKL(
        fwd_typ, rev_typ, fwd_pp, rev_pp, s.phase, E_fwd, E_pp, ev.F1, ev.phi,
        phase_f, phase_r, _frozen(c_tilde), _frozen(c_pp), s,
    )


def _clean_roots(x: np.ndarray) -> np.ndarray | None:
    """Set roots in [−CUBIC_ROOT_ATOL, 0) to 0; None if any is clearly negative."""
    x = np.array(x, dtype=np.float64)
    if np.any(~np.isfinite(x)) or np.any(x < -CUBIC_ROOT_ATOL):
        return None
    x[x < 0] = 0.0
    if not np.any(x > 0):
        return None
    return x


# --------------------------------------------------------------------------
# §6 sampling temperature
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SamplingState:
    """Sampler at inverse temperature β for the typical student (THEORY.md §6).

    Attributes
    ----------
    phase : str
        ``"sPM"``, ``"sFM"`` or ``"sSG"``.
    beta, c_eff : float
        β and the rescaled bulk precision ``γη/β²``.
    mu, g : float
        μ̃ and g̃ = G(μ̃; c_eff) (1 in sPM).
    forward_kl : float
        ``⟨D(P*‖P_{βW})⟩/N = β E_fwd + ½ S(μ̃; c_eff) − ½(1 − log ω)``.
    posterior_phase : str
        The §4 phase of the teacher data.
    """

    phase: str
    beta: float
    c_eff: float
    mu: float
    g: float
    forward_kl: float
    posterior_phase: str


def sampling_state(gamma, eta, omega, beta) -> SamplingState:
    """Sampling phase and typical forward KL at inverse temperature β (§6).

    Parameters
    ----------
    gamma, eta : float
        γ > 0, η > 0.
    omega : float
        Teacher eigenvalue ω > 1.
    beta : float
        Sampling inverse temperature β > 0.

    Returns
    -------
    SamplingState
    """
    gamma = _positive_scalar("gamma", gamma)
    eta = _positive_scalar("eta", eta)
    w = _teacher_omega(omega)
    beta = _positive_scalar("beta", beta)
    c = np.array([2.0 - 1.0 / w, 1.0 / w])
    s = _saddle_sorted(c, gamma, eta)
    xi1 = float(s.xi[0])
    E_fwd = -(xi1 - 1.0) * (w - 1.0) ** 2 / (eta * (2.0 * w - 1.0) ** 2)
    c_eff = s.kappa / (beta * beta)
    mu_pm = 1.0 + 1.0 / c_eff
    top = beta * float(s.lam[0])
    if c_eff >= 1.0 - BOUNDARY_RTOL:
        if top <= mu_pm * (1.0 + BOUNDARY_RTOL):
            phase, mu, g = "sPM", mu_pm, 1.0
        else:
            phase, mu = "sFM", top
            g = float(semicircle_stieltjes(mu, c_eff))
    else:
        phase, mu = "sSG", top
        g = float(semicircle_stieltjes(mu, c_eff))
    kl = beta * E_fwd + 0.5 * _action_from_g(mu, g, c_eff) - 0.5 * (1.0 - math.log(w))
    return SamplingState(phase, beta, c_eff, mu, g, kl, s.phase)


def sampling_phase(gamma, eta, omega, beta) -> str:
    """Phase of the sampler p(x | βW) for the typical student: "sPM", "sFM" or "sSG" (§6).

    Parameters
    ----------
    gamma, eta, omega, beta : float
        As in :func:`sampling_state`.

    Returns
    -------
    str
    """
    return sampling_state(gamma, eta, omega, beta).phase


def forward_kl_typical_beta(gamma, eta, omega, beta) -> float:
    """Typical forward KL ``⟨D(P*‖P_{βW})⟩/N`` at sampling temperature β (§6).

    Parameters
    ----------
    gamma, eta, omega, beta : float
        As in :func:`sampling_state`.

    Returns
    -------
    float
        Equals ``teacher_student_kls(...).fwd_typ`` at β = 1.
    """
    return sampling_state(gamma, eta, omega, beta).forward_kl


def temperature_window(gamma, eta, omega) -> tuple[float, float]:
    """The temperature-tuning window ``(β_c, √(γη))`` of §6.

    Parameters
    ----------
    gamma, eta : float
        γ > 0, η > 0.
    omega : float
        Teacher eigenvalue ω > 1.

    Returns
    -------
    (float, float)
        ``β_c = g_1`` (NaN when ``u_1 = 0``: no outlier to condense on) and
        ``√(γη)``, where the sampler condenses on the bulk edge.
    """
    gamma = _positive_scalar("gamma", gamma)
    eta = _positive_scalar("eta", eta)
    w = _teacher_omega(omega)
    s = _saddle_sorted(np.array([2.0 - 1.0 / w, 1.0 / w]), gamma, eta)
    beta_c = float(s.g[0]) if s.u[0] > 0 else math.nan
    return beta_c, math.sqrt(s.kappa)
