# Two commands matter: `make demo` (the whole job locally, no AWS account) and `make test`.
# Each sets up its own virtualenv from the pinned requirements on first use. `make` alone lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
CHECKOV_VENV := .venv-checkov
# `sam build` needs the function's Python (3.13) on PATH; with pyenv this makes it visible.
export PYENV_VERSION ?= 3.11.7:3.13.0
export SAM_CLI_TELEMETRY ?= 0
# The function's runtime, as template.yaml's Globals say: python3.13 on arm64 (Lambda's glibc there is 2.34).
# `sam build` runs pip on this machine; these settings make that pip fetch the Lambda platform's wheels in its
# one hash-checked download of src/requirements.txt, so SAM's second, per-package download for another
# platform (which carries no hashes) finds nothing left to do.
LAMBDA_PIP_ENV := PIP_ONLY_BINARY=:all: PIP_IMPLEMENTATION=cp PIP_PYTHON_VERSION=3.13 PIP_ABI=cp313 \
	PIP_PLATFORM="manylinux_2_34_aarch64 manylinux_2_28_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64 linux_aarch64"
# src/requirements.in -> src/requirements.txt: the whole closure, pinned and hashed, valid on every platform
# and Python >= 3.11 (markers where they differ). Existing pins are kept unless requirements.in asks otherwise;
# `make lock LOCK_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them.
LOCK := $(BIN)/uv pip compile --quiet --no-config --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"

.PHONY: help demo serve test test-unit faults bench bench-scale lint format validate build deploy deploy-guided outputs \
	delete clean lock lock-check
# The deployed stack (samconfig.toml names it too); `make deploy STACK=other` for a second one.
STACK ?= tiktok-archive
# Template parameters for `make deploy`, e.g. PARAMETERS="CallerRoleArns=arn:aws:iam::123456789012:role/Backend".
PARAMETERS ?=

help:  ## This list.
	@awk 'BEGIN {FS = ":.*##"} /^[a-z-]+:.*##/ {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The function's runtime first, exactly the lock (hash-checked), so the suite tests what `sam build` packages;
# then the dev tools, pinned by constraints.txt and held to the lock's pins (a disagreement fails here).
$(BIN)/.installed: src/requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r src/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt \
		-c <(sed -e '/--hash=/d' -e 's/ *\\$$//' src/requirements.txt)
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

$(SAM_VENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	touch $@

demo: $(BIN)/.installed  ## Run the whole job against moto server and the TikTok emulator.
	PYTHONPATH=src $(BIN)/python -m tests.harness.demo

serve: $(BIN)/.installed  ## The API on a local port for curl (PORT=8080 to choose it), moto and the TikTok emulator behind it.
	PYTHONPATH=src $(BIN)/python -m tests.harness.serve

# `make test` runs on two processes (pytest-xdist), each with its own moto server and emulator;
# TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
test: $(BIN)/.installed  ## The whole suite on two processes (what CI runs; about 6 minutes).
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

test-unit: $(BIN)/.installed  ## The fast tier: logic, models and parsers with in-memory fakes (under a minute).
	$(BIN)/pytest tests/unit

faults: $(BIN)/.installed  ## Fault-injection suite: every fault kind, 3 random runs each, prints the table.
	PYTHONPATH=src $(BIN)/python -m tests.harness.faults $(FAULTS_ARGS)

$(BIN)/.bench-installed: $(BIN)/.installed requirements-bench.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c constraints.txt
	touch $@

bench: $(BIN)/.bench-installed  ## Benchmark vs TikTok's sample and boto3; writes docs/benchmarks.md and .png.
	PYTHONPATH=src $(BIN)/python -m tests.benchmarks.run $(BENCH_ARGS)

bench-scale: $(BIN)/.bench-installed  ## Simulate 100,000 users over a week (TikTok's quota, cost per archive); writes its section of docs/benchmarks.md.
	PYTHONPATH=src $(BIN)/python -m tests.benchmarks.scale $(BENCH_SCALE_ARGS)

lint: $(BIN)/.installed  ## ruff and mypy --strict.
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

validate: $(BIN)/.installed $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed  ## cfn-lint, sam validate --lint, checkov.
	$(BIN)/cfn-lint template.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-eu-west-1} $(SAM) validate --lint
	$(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml -f template.yaml

# The lock is rewritten only when it changes (a rewrite reinstalls the dev virtualenv).
lock: $(BIN)/.installed  ## Regenerate src/requirements.txt (the function's hashed lock) from src/requirements.in.
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp src/requirements.txt "$$tmp/lock.txt" && \
	$(LOCK) $(LOCK_ARGS) src/requirements.in -o "$$tmp/lock.txt" && \
	if cmp -s "$$tmp/lock.txt" src/requirements.txt; then \
		echo "src/requirements.txt: unchanged"; \
	else \
		diff -u src/requirements.txt "$$tmp/lock.txt" | grep '^[-+][^-+ ]' || true; \
		cp "$$tmp/lock.txt" src/requirements.txt && echo "src/requirements.txt: updated"; \
	fi

# Regenerates the lock from the committed one and fails, showing the difference, unless `make lock` would leave
# it as it is. Distributions uploaded since for a locked version are not a difference: pip never picks a file
# whose hash the lock lacks, so only the lock's own hashes are compared.
lock-check: $(BIN)/.installed  ## Fail when src/requirements.txt is stale (src/requirements.in changed without `make lock`).
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp src/requirements.txt "$$tmp/fresh.txt" && \
	$(LOCK) src/requirements.in -o "$$tmp/fresh.txt" && \
	sed 's/ *\\$$//' src/requirements.txt > "$$tmp/locked" && \
	awk 'NR == FNR { locked[$$0] = 1; next } { sub(/ *\\$$/, "") } /^ *--hash=/ && !($$0 in locked) { next } { print }' \
		"$$tmp/locked" "$$tmp/fresh.txt" > "$$tmp/fresh" && \
	if diff -u --label src/requirements.txt --label "make lock" "$$tmp/locked" "$$tmp/fresh"; then \
		echo "src/requirements.txt is up to date with src/requirements.in"; \
	else \
		echo "src/requirements.txt is stale: run 'make lock' and commit it (and constraints.txt if pins moved)"; \
		exit 1; \
	fi

# Lambda's /var/task is read-only: a package without bytecode is compiled anew by every cold start (measured
# in docs/benchmarks.md). So the build ships it, compiled by the runtime's Python (3.13), checked by hash of
# the source rather than by file times, which zipping and deploying do not keep.
build: $(SAM_VENV)/.installed  ## sam build (python3.13, arm64): exactly src/requirements.txt, compiled ahead.
	$(LAMBDA_PIP_ENV) $(SAM) build
	python3.13 -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build

deploy: build  ## Deploy into your own account (samconfig.toml; PARAMETERS="Name=value ..." to set some).
	$(SAM) deploy --stack-name $(STACK) $(if $(PARAMETERS),--parameter-overrides $(PARAMETERS))

deploy-guided: build  ## The same, asking for every parameter (sam deploy --guided).
	$(SAM) deploy --guided --stack-name $(STACK)

outputs: $(SAM_VENV)/.installed  ## The deployed stack's outputs (ApiUrl, WebhookUrl, the secret to fill ...).
	$(SAM) list stack-outputs --stack-name $(STACK) --output table

delete: $(SAM_VENV)/.installed  ## Remove the deployed stack, after emptying its archive bucket (asks first).
	@bucket=$$($(SAM) list stack-outputs --stack-name $(STACK) --output json \
		| $(SAM_VENV)/bin/python -c 'import json, sys; print(next(o["OutputValue"] for o in json.load(sys.stdin) if o["OutputKey"] == "ArchiveBucketName"))') && \
	read -r -p "Delete stack $(STACK) and every archive in s3://$$bucket? [y/N] " answer && [ "$$answer" = y ] && \
	$(SAM_VENV)/bin/python -c 'import boto3, sys; b = boto3.resource("s3").Bucket(sys.argv[1]); [u.abort() for u in b.multipart_uploads.all()]; b.objects.all().delete()' "$$bucket" && \
	$(SAM) delete --stack-name $(STACK) --no-prompts

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
