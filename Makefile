# Two commands a new user needs: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-stress lint docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-deps

# checkov scans deploy/kubernetes in the suite (tests/test_kubernetes_manifests.py). It pins old
# boto3, botocore and packaging (and aiohttp below 3.15), which must not decide the versions the
# service is tested with: it gets a virtualenv of its own, inside .venv so `make clean` removes it.
CHECKOV_VERSION ?= 3.3.30
$(VENV)/checkov/.installed-$(CHECKOV_VERSION): | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

$(VENV)/.bench-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/catalog-enricher serve --demo

test: $(VENV)/.test-deps $(VENV)/checkov/.installed-$(CHECKOV_VERSION)
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The timing-sensitive modules (marked `timing`) STRESS_RUNS times in a row, with every core kept
# busy by a CPU burner: a flaky test shows in minutes (tests/stress.py; logs in .stress/).
STRESS_RUNS ?= 20
test-stress: $(VENV)/.test-deps $(VENV)/checkov/.installed-$(CHECKOV_VERSION)
	$(BIN)/python -m tests.stress --runs $(STRESS_RUNS)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check service tests bench
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# The documentation site (docs/, mkdocs.yml) at http://127.0.0.1:8000, rebuilt on every save.
docs: $(VENV)/.test-deps
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

# The floor and catalog-enricher side by side (docs/performance.md); pass options with ARGS=.
bench: $(VENV)/.bench-deps
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
