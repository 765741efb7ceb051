# selector — set-up and everyday commands. `make help` lists them.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-runtime
DEVSTAMP := $(VENV)/.installed-dev
BENCHSTAMP := $(VENV)/.installed-bench
DEMOSTAMP := $(VENV)/.installed-demo
TOOLSTAMP := $(VENV)/.installed-tools
LSVENV := .venv-label-studio
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HAVE_TOOLS = command -v promtool >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }

# the suite runs on four workers (pytest-xdist), each with its own embedded broker: the broker tests mostly
# wait on the broker, so four fit two cores; an idle worker steals queued tests from a busy one (the long
# outage and chaos tests would otherwise end the run on one worker); `make test PYTEST_ARGS=` runs it in one
PYTEST_ARGS ?= -n 4 --dist worksteal

.DEFAULT_GOAL := help
.PHONY: help install install-dev demo test lint bench schemas rules clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEVSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(DEMOSTAMP)
	@touch $@

$(DEMOSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	@touch $@

# promtool (alert-rule and exposition tests) and headless Chromium (dashboard tests): Debian packages
$(TOOLSTAMP): | $(BIN)/python
	@$(HAVE_TOOLS) || { echo "installing the Debian packages prometheus and chromium (test tools)"; \
	  $(SUDO) apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus chromium >/dev/null; }
	@$(HAVE_TOOLS) || { echo "need promtool and chromium on PATH (Debian: apt-get install prometheus chromium)"; exit 1; }
	@touch $@

# Label Studio for the bridge's tests, in its own venv (its pins clash with ours)
$(LSVENV)/bin/label-studio: | $(BIN)/python
	$(PYTHON) -m venv $(LSVENV)
	$(LSVENV)/bin/python -m pip install --quiet label-studio==1.23.2

$(BENCHSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@

install: $(STAMP) ## create .venv and install selector

install-dev: $(DEVSTAMP) ## install selector with test and lint tools

demo: $(DEMOSTAMP) ## run the monitor and a simulated production line on the embedded broker (Ctrl-C stops)
	$(BIN)/selector demo -c config.yaml $(DEMO_ARGS)

lint: $(DEVSTAMP) ## ruff, mypy and the import contract that keeps the core pure
	$(BIN)/ruff check selector connectors tests bench
	$(BIN)/ruff format --check selector connectors tests bench
	$(BIN)/mypy selector connectors
	$(BIN)/lint-imports

test: $(DEVSTAMP) $(TOOLSTAMP) $(LSVENV)/bin/label-studio lint ## lint, then the whole test suite (unit, connector, broker integration)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(BENCHSTAMP) ## print the performance, budget and selection tables of docs/performance.md (installs scikit-activeml, river)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/selection.py $(filter --quick,$(BENCH_ARGS)) $(SELECTION_ARGS)

schemas: $(STAMP) ## regenerate the checked-in JSON Schemas
	$(BIN)/selector schema --write schemas

rules: $(STAMP) ## copy deploy/prometheus/alerts.yml into the Kubernetes PrometheusRule
	$(BIN)/python deploy/k8s/sync_rules.py

clean: ## remove caches (keeps .venv and .venv-label-studio)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
