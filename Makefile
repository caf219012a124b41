# Two commands matter: `make demo` (the whole job locally, no AWS account) and `make test`.
# Each sets up its own virtualenv from the pinned requirements on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
# `sam build` needs the function's Python (3.13) on PATH; with pyenv this makes it visible.
export PYENV_VERSION ?= 3.11.7:3.13.0
export SAM_CLI_TELEMETRY ?= 0

.PHONY: demo test faults bench lint format validate build deploy clean

$(BIN)/.installed: requirements-dev.txt src/requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

$(SAM_VENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	touch $@

demo: $(BIN)/.installed  ## Run the whole job against moto server and the TikTok emulator.
	PYTHONPATH=src $(BIN)/python -m tests.harness.demo

test: $(BIN)/.installed  ## The whole suite (what CI runs).
	$(BIN)/pytest

faults: $(BIN)/.installed  ## Fault-injection suite: every fault kind, 3 random runs each, prints the table.
	PYTHONPATH=src $(BIN)/python -m tests.harness.faults $(FAULTS_ARGS)

$(BIN)/.bench-installed: $(BIN)/.installed requirements-bench.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c constraints.txt
	touch $@

bench: $(BIN)/.bench-installed  ## Benchmark vs TikTok's sample and boto3; writes docs/benchmarks.md and .png.
	PYTHONPATH=src $(BIN)/python -m tests.benchmarks.run $(BENCH_ARGS)

lint: $(BIN)/.installed  ## ruff and mypy --strict.
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

validate: $(BIN)/.installed $(SAM_VENV)/.installed  ## cfn-lint and sam validate --lint.
	$(BIN)/cfn-lint template.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-eu-west-1} $(SAM) validate --lint

build: $(SAM_VENV)/.installed  ## sam build (python3.13, arm64).
	$(SAM) build

deploy: build  ## sam deploy --guided, into your own account.
	$(SAM) deploy --guided

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
