# Stepwise developer commands. Needs only Python 3.11+, Node 20+ and make; everything else installs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8787
STAMP := $(VENV)/.stamp-deps
NODE_STAMP := node_modules/.stamp-deps
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup demo local test lint typecheck pytest synth deploy bench clean

help:
	@echo "make demo    run one agent run end to end on the local stack (no AWS, no Docker)"
	@echo "make test    lint, type-check, unit/functional/infrastructure/e2e tests, cdk synth + cfn-lint"
	@echo "make local   serve the HTTP API on 127.0.0.1:\$$PORT (default 8787)"
	@echo "make deploy  cdk deploy to the AWS account of your credentials"
	@echo "make bench   cold imports, per-step calls, step memory, orchestration cost, cost (caching), idle sessions, tool results, the gauge (bench/)"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(STAMP) $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/stepwise demo

local: $(STAMP)
	$(BIN)/stepwise local --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy functions infra stepwise tools app.py

pytest: $(STAMP)
	$(BIN)/pytest

# Real synth through the pinned CDK CLI: builds the ARM64 dependency layer with pip (no Docker) and compiles the layer
# and the functions' code for CPython 3.13 (a python3.13 of this machine: on PATH, pyenv's or uv's, or named by
# STEPWISE_PYTHON313=/path/to/python3.13), runs cdk-nag (AwsSolutions), checks every compiled extension in the layer is
# ARM64/CPython 3.13 and every module ships its 3.13 .pyc, then cfn-lint. W3005 is CDK's own explicit DependsOn, not a
# defect. (The grep drops jsii's Node end-of-life banner, keeping the checks' own messages.)
synth: setup
	npx cdk synth --quiet
	set -o pipefail; $(BIN)/python -m infra.packaging cdk.out 2>&1 | { grep -v "^b'!!" || true; }
	$(BIN)/cfn-lint --ignore-checks W3005 -- cdk.out/*.template.json

test: lint typecheck synth pytest

deploy: setup
	npx cdk deploy

bench: $(STAMP)
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/step_calls.py
	$(BIN)/python bench/step_memory.py
	$(BIN)/python bench/orchestration.py
	$(BIN)/python bench/cost.py
	$(BIN)/python bench/session_idle.py
	$(BIN)/python bench/tool_results.py
	$(BIN)/python bench/gauges.py

clean:
	rm -rf $(VENV) node_modules cdk.out .build .pytest_cache .mypy_cache .ruff_cache
