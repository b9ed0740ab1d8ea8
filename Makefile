# bayes_sbm: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
# Interpreter used to create the venv: override with `make PYTHON=/path/to/python3.12 ...`.
PYTHON ?=
FOUND_PYTHON = $(shell PYTHON="$(PYTHON)" bash .ci/find-python)
# Pin threads: the machines are small and shared (THEORY.md §2: eigh slows 10x when oversubscribed).
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

.PHONY: help venv demo test test-slow bench figures theory-figures clean

help:
	@echo "make demo        create .venv, install, run the main job on a small problem"
	@echo "make test        create .venv, install, run the test suite (slow studies excluded)"
	@echo "make test-slow   run only the slow tests (large-N checks, studies)"
	@echo "make bench       run the benchmarks (tables printed, JSON in benchmarks/results/)"
	@echo "make figures     run the analysis studies (figures and CSVs under analysis/*/results/)"
	@echo "make digits-study  the real-data study (scikit-learn digits): held-out likelihood, evidence, generation"
	@echo "make tutorial    execute notebooks/tutorial.ipynb in place (installs the [examples] extra)"

$(VENV)/.installed: pyproject.toml
	@py="$(FOUND_PYTHON)"; \
	if [ -z "$$py" ]; then \
	  echo "error: bayes_sbm needs Python >= 3.12 (ArviZ 1.x requires it) and none was found." >&2; \
	  echo "Install one (e.g. 'pyenv install 3.12', 'apt-get install python3.12-venv', or python.org)," >&2; \
	  echo "or point to it: make PYTHON=/path/to/python3.12 $(MAKECMDGOALS)" >&2; \
	  exit 1; \
	fi; \
	echo "using $$py ($$($$py --version))"; \
	if [ ! -x "$(PY)" ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	  rm -rf $(VENV); "$$py" -m venv $(VENV) || exit 1; \
	fi; \
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip && \
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" && touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/bayes-sbm demo

# Test workers: one per core of the 2-core machines (files stay whole on one worker: --dist loadfile keeps
# module fixtures, e.g. a shared fitted run, computed once).  TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2
PYTEST_WORKERS = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# XLA compilations (~75 % of the suite's time) are cached on disk for the tests: identical programs built by
# different tests or workers compile once (-12 % on a first run, most of the rest on reruns).
test test-slow: export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/$(VENV)/jax-test-cache
test test-slow: export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0.5
# The tests' programs are small and compiled once: XLA's optimisation passes cost more than they save
# (-16 % CPU on the run-folder tests, measured side by side).  Results stay float64 and bitwise reproducible.
test: export JAX_DISABLE_MOST_OPTIMIZATIONS ?= 1

test: venv
	@$(PY) -m pytest -q -m "not slow" -p no:cacheprovider $(PYTEST_WORKERS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

test-slow: venv
	@$(PY) -m pytest -q -m "slow" -p no:cacheprovider $(PYTEST_WORKERS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no slow tests selected"; rc=0; fi; exit $$rc

bench: venv
	$(PY) benchmarks/bench_partition.py
	$(PY) benchmarks/bench_nuts.py
	$(PY) benchmarks/bench_evidence.py
	$(PY) benchmarks/bench_typical_kls.py

figures: theory-figures posterior-study tempered-study evidence-study temperature-study double-descent-study identity-study \
	predictive-evidence-study

theory-figures: venv
	$(PY) analysis/phase_diagrams/run.py
	$(PY) analysis/teacher_student_curves/run.py

# NUTS studies (long).  The large-N studies run their
# grids as sweeps on Dask: a LocalCluster here, or SCHEDULER=tcp://host:8786 for a running cluster (README);
# a rerun skips the finished points.
.PHONY: posterior-study tempered-study
SCHEDULER ?=
DASK_ARGS = $(if $(SCHEDULER),--scheduler $(SCHEDULER),)
posterior-study: venv
	$(PY) analysis/posterior_vs_theory/run.py $(DASK_ARGS)

tempered-study: venv
	$(PY) analysis/tempered_posteriors/run.py $(DASK_ARGS)

# Evidence and teacher-student studies (THEORY.md §5-6; long, on Dask like the above: a rerun skips finished points;
# the teacher-student studies share the fits of models/sweeps/teacher_student.toml) and the evidence benchmark
.PHONY: evidence-study temperature-study double-descent-study identity-study predictive-evidence-study bench-evidence
evidence-study: venv
	$(PY) analysis/evidence_vs_theory/run.py $(DASK_ARGS)

temperature-study: venv
	$(PY) analysis/temperature_tuning/run.py $(DASK_ARGS)

double-descent-study: venv
	$(PY) analysis/double_descent/run.py $(DASK_ARGS)

identity-study: venv
	$(PY) analysis/evidence_identity/run.py $(DASK_ARGS)

predictive-evidence-study: venv
	$(PY) analysis/predictive_evidence/run.py $(DASK_ARGS)

bench-evidence: venv
	$(PY) benchmarks/bench_evidence.py $(RESUME)

# Real data (scikit-learn's bundled digits, the [examples] extra): held-out likelihood, temperature, evidence, generation
# (about 15 minutes of one core; RESUME=--resume reuses finished fits), and the tutorial notebook executed in place.
.PHONY: digits-study tutorial
digits-study: venv
	$(PY) analysis/real_data_digits/run.py $(RESUME)

tutorial: venv
	$(PY) -m pip install -q --disable-pip-version-check -e ".[examples]"
	cd notebooks && $(abspath $(PY)) -c "import nbformat, nbclient; nb = nbformat.read('tutorial.ipynb', as_version=4); \
	nbclient.NotebookClient(nb, timeout=3600, kernel_name='python3').execute(); nbformat.write(nb, 'tutorial.ipynb')"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
