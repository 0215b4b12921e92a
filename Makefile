# Two commands set everything up on a fresh machine: `make demo` and `make test`
# (`make demo-full` runs the whole pipeline: prepare, train briefly, recover, evaluate).
# Each creates .venv when missing, installs torch 2.13.0 first (the CPU wheel) unless a
# torch is already importable, then the package with its dev extra; later runs reuse it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mocap2to3-installed
TORCH_VERSION := 2.13.0

# Prefect runs locally with its temporary server; its state lives in the working folder.
export MOCAP2TO3_HOME ?= $(CURDIR)/work
export PREFECT_HOME ?= $(MOCAP2TO3_HOME)/prefect
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo demo-full test test-fast lint format bench clean

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

# The bundled two-person example recovered with the release checkpoint (about a minute).
demo: $(STAMP)
	$(VENV)/bin/mocap2to3 demo

# The whole pipeline on a small procedural catalog: prepare, train the tiny profile for a
# few minutes, recover the example with it and evaluate (about four minutes on a CPU).
demo-full: $(STAMP)
	$(VENV)/bin/mocap2to3 demo --full

test: $(STAMP)
	$(PY) -m pytest -q

# Skips the slow end-to-end tests (CI runs everything through `make test`).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Benchmarks need the optional comparison libraries (aniposelib + JAX).
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/bench_triangulation.py
	$(PY) benchmarks/bench_pointmaps.py

clean:
	rm -rf $(MOCAP2TO3_HOME) .pytest_cache .ruff_cache
