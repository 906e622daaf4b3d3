# Two commands do all set-up on a fresh machine with Python 3.11:  make repro   and   make test
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: repro test install lint clean-build

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision are pinned as an exact pair (see ../shared/ENVIRONMENT.md)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev]"
	# facenet-pytorch pins old torch/numpy; it works with ours, so install it without its pins
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	# stages call papermill and iqalab: put the venv first on PATH (no activation needed)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests
	IQALAB_PARAMS=$(CURDIR)/tests/nbval/params.yaml IQALAB_WORKDIR=$$(mktemp -d) \
		$(BIN)/python -m pytest -q -p no:randomly --nbval-lax notebooks

clean-build:
	rm -rf build
