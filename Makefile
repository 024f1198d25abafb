# Two entry points: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv when missing and install torch (CPU build) before the package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-kernels test-all doctest lint docs bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/bayes-nest demo --out demo-report

test: venv
	$(PY) -m pytest -m "not slow" -q

# The fast tier again with other floating-point kernels: torch's portable (non-vectorised) CPU
# kernels and two threads instead of one change summation orders, so any test that compares
# results of different computation orders exactly fails here (see bayes_nest.testing).
test-kernels: venv
	ATEN_CPU_CAPABILITY=default BAYES_NEST_TEST_THREADS=2 $(PY) -m pytest -m "not slow" -q

test-all: venv
	$(PY) -m pytest -q

# The examples in the package's docstrings, run as tests (each in a temporary folder; see
# conftest.py). Examples that need a multi-process job or run the whole demo are marked +SKIP.
doctest: venv
	$(PY) -m pytest --doctest-modules bayes_nest -q

# Style, formatting, and the layering contracts of pyproject.toml ([tool.importlinter]).
lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: venv
	for script in benchmarks/*.py; do $(PY) $$script --quick || exit 1; done

clean:
	rm -rf $(VENV) site demo-report .pytest_cache
