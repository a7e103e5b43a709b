# Every target sets itself up on a fresh machine (creates .venv, installs) and is idempotent.
#
#   make run     the main job on the embedded synthetic data (CPU, minutes), tracked in MLflow
#   make test    the whole test suite (what CI runs)
#   make bench   benchmarks -> table + bench-results.json
#   make bench-gpu  the training step on this machine's GPU (torch only; see bench/gpu.py)
#   make lint    ruff
#
# TORCH_SPEC picks the torch build. The default pins 2.13.0: on a CPU box with a local wheel
# directory (pip's find-links) that is the CPU build; on a GPU machine, PyPI's Linux wheel of
# the same version is the CUDA build. Pass another pin for another CUDA/ROCm build.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stars-installed
PYTEST_ARGS ?=

export RAY_USAGE_STATS_ENABLED ?= 0
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install run test test-fast bench bench-gpu lint clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -c "import torch, ray, mlflow, pyarrow, stars; print('installed: torch', torch.__version__, '| ray', ray.__version__, '| mlflow', mlflow.__version__, '| pyarrow', pyarrow.__version__)"
	@touch $@

# The main job: synthetic data -> stage 1 -> evaluation -> stage 2 -> evaluation -> summary.
RUN_ARGS ?=
run: $(STAMP)
	$(PY) jobs/pretrain.py $(RUN_ARGS)

# The full suite, slow end-to-end tests included.
test: $(STAMP)
	$(PY) -m pytest --runslow $(PYTEST_ARGS)

# The quick default suite (slow tests skipped).
test-fast: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# Needs torch and this package only: on a GPU machine without Ray or MLflow,
# `python -m bench.gpu --record` from the repository root does the same.
bench-gpu: $(STAMP)
	$(PY) -m bench.gpu --record $(BENCH_GPU_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check stars jobs tests bench
	$(PY) -m ruff format --check stars jobs tests bench

clean-venv:
	rm -rf $(VENV)
