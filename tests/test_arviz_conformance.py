"""A run's DataTree is ArviZ's own: the standard ArviZ 1.x calls work on it with no workaround.

One tiny NUTS fit (N = 5, two chains) through :func:`bayes_sbm.runs.to_datatree`,
then ``summary``, ``plot_trace``, ``plot_rank``, ``plot_ess``, ``plot_energy``,
``plot_forest``, ``plot_ppc_dist``, ``loo`` and ``compare`` exactly as a user
would call them.
"""

from __future__ import annotations

import warnings

import arviz as az
import jax
import matplotlib
import numpy as np
import pytest
from arviz_plots import PlotCollection

matplotlib.use("Agg")

from bayes_sbm import inference, runs, teacher  # noqa: E402
from bayes_sbm.settings import NutsSettings  # noqa: E402

#: Tiny fit: enough draws for rank-normalised ESS (≥ 4 per half chain) and PSIS-LOO.
CHAINS, DRAWS = 2, 60


@pytest.fixture(scope="module")
def run_tree():
    data = teacher.teacher_student_data(jax.random.key(0), 5, 2, 2.5).data
    problem = inference.make_problem(data, 0.5, 3.0)
    settings = NutsSettings(num_warmup=60, num_samples=DRAWS, num_chains=CHAINS, progress_bar=False, chain_method="sequential")
    res = inference.run_nuts(jax.random.key(1), problem, settings)
    pp = runs.posterior_predictive_draws(jax.random.key(2), res, 1.0, problem.K)
    return runs.to_datatree(res, posterior_predictive=pp, store_latent=True)


def test_every_dim_has_integer_coordinates_and_standard_attrs(run_tree):
    for name, node in run_tree.children.items():
        ds = node.to_dataset()
        for dim in ds.dims:
            assert dim in ds.coords, f"{name}: dim {dim} has no coordinate"
            assert np.issubdtype(ds[dim].dtype, np.integer), f"{name}: dim {dim}"
        assert "created_at" in ds.attrs and ds.attrs["creation_library"] == "bayes_sbm", name
    assert list(run_tree["posterior"]["lam_top"]["rank"].values) == [1, 2, 3]  # λ_1, λ_2, λ_3
    # observed and predictive points share one dim; the latent vector is not in the posterior
    assert run_tree["posterior_predictive"]["x"].dims[-2:] == run_tree["observed_data"]["x"].dims
    assert "z" not in run_tree["posterior"].data_vars and "z" in run_tree["unconstrained_posterior"].data_vars


CALLS = {
    "summary": lambda dt: az.summary(dt),
    "plot_trace": lambda dt: az.plot_trace(dt, var_names=["lam_top", "u", "M"]),
    "plot_rank": lambda dt: az.plot_rank(dt, var_names=["lam_top"]),
    "plot_rank_u": lambda dt: az.plot_rank(dt, var_names=["u"]),
    "plot_ess": lambda dt: az.plot_ess(dt, var_names=["M"]),
    "plot_energy": lambda dt: az.plot_energy(dt),
    "plot_forest": lambda dt: az.plot_forest(dt, var_names=["lam_top", "M"]),
    "plot_ppc_dist": lambda dt: az.plot_ppc_dist(dt),
    "loo": lambda dt: az.loo(dt),
    "compare": lambda dt: az.compare({"a": dt, "b": dt}),
}


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_standard_arviz_calls(run_tree, call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample warnings (Pareto k, ESS) are expected at this size
        out = CALLS[call](run_tree)
    if call == "summary":
        # the observables only: λ_1..λ_3, u_1, u_2, M, signal_1, signal_2, μ, log Z / N
        assert len(out) == 3 + 2 + 1 + 2 + 1 + 1
    elif call == "loo":  # one pointwise log-likelihood per data point, every draw used
        assert np.isfinite(out.elpd) and np.isfinite(out.se)
        assert (out.n_data_points, out.n_samples) == (run_tree["observed_data"].sizes["point"], CHAINS * DRAWS)
    elif call == "compare":
        assert list(out.index) == ["a", "b"]
    else:  # a plot: a figure with something drawn on it
        assert isinstance(out, PlotCollection) and out.get_viz("figure").axes
    matplotlib.pyplot.close("all")
