# Chorus: `make serve` and `make test` set everything up from nothing (Debian packages, venv).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= train,dev,export,bench,server,clients,loadtest
# torch: CPU build unless an NVIDIA driver answers (an unpinned torch pulls a multi-GB CUDA build).
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CONSTRAINTS := .ci/constraints-$(if $(HAS_CUDA),gpu,cpu).txt
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed-$(if $(HAS_CUDA),gpu,cpu)
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup system venv test lint serve bench clean

setup: system venv

system:
	@.ci/system-packages.sh

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Python packages into $(VENV) (constraints: $(CONSTRAINTS))"
	@$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[$(EXTRAS)]' $(PIP_QUIET) \
	  || $(BIN)/pip install -q --extra-index-url $(TORCH_CPU_INDEX) -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	@$(BIN)/python -c "import torch, models, training"
	@$(BIN)/python -m server.grpc_codegen >/dev/null  # gRPC stubs from protos/ (not committed)
	@rm -f $(VENV)/.installed-* && touch $@

test: setup
	$(BIN)/ruff check models server training clients loadtest tests
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check models server training clients loadtest tests
	$(BIN)/mypy

# The streaming server with the shipped default bundle (WebSocket + HTTP on port 8000).
# Override with e.g. `make serve SERVE_ARGS="--backend onnxruntime --ws-port 8001"`.
SERVE_ARGS ?=
serve: setup
	$(BIN)/chorus serve --host 0.0.0.0 $(SERVE_ARGS)

# Benchmarks of the default bundle (slow: minutes; each writes JSON + markdown + PNG).
bench: setup
	$(BIN)/chorus bench model --json docs/benchmarks/model.json --markdown docs/benchmarks/model.md
	$(BIN)/chorus bench dispatch --streams 1,8,32,64,128,256 --policy eager,none --backend onnxruntime,torch
	$(BIN)/chorus loadtest capacity --protocol ws --policy eager,none
	$(BIN)/chorus loadtest capacity --protocol grpc --policy eager,none

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
