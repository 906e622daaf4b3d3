# Two commands do all set-up on a fresh machine with Python 3.11:  make repro   and   make test
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: repro test install lint lock check-lock clean-build lab verify

# Exact versions with hashes from the locks (iqalab.lock; `make lock` regenerates them): nothing is resolved here.
# pip takes the torch pair from the machine's local wheel index where pip is configured with one (same hashes).
# facenet-pytorch sits in requirements.lock and is installed without its dependencies like every locked package.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# the dev group (pytest, nbval, ruff, jupyterlab, uv) on top of the runtime lock
$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements.lock -r requirements-dev.lock
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

repro: $(STAMP)
	# stages call papermill and iqalab: put the venv first on PATH (no activation needed)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# rerun the committed pipeline in a temporary clone and compare every number of its results/ with the committed
# ones (iqalab.verify; takes as long as `make repro`); exits 1 listing each number not reproduced
verify: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m iqalab.verify run

# JupyterLab from .venv on localhost, with the project's kernel (`python3`, installed into the venv)
lab: $(DEV_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m jupyterlab --ServerApp.ip=127.0.0.1 \
		--ServerApp.root_dir=$(CURDIR) $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(CURDIR)/notebooks/00_explore.ipynb

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(DEV_STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests
	IQALAB_PARAMS=$(CURDIR)/tests/nbval/params.yaml IQALAB_WORKDIR=$$(mktemp -d) \
		$(BIN)/python -m pytest -q -p no:randomly --nbval-lax notebooks

# after a deliberate change to pyproject.toml: re-resolve (existing pins kept where they fit) and rewrite both
# locks and environment.yml; `make check-lock` (run by CI) fails while they disagree with pyproject.toml
lock: $(DEV_STAMP)
	$(BIN)/python -m iqalab.lock compile --uv $(BIN)/uv

check-lock: $(DEV_STAMP)
	$(BIN)/python -m iqalab.lock check
	$(BIN)/python -m iqalab.lock installed

clean-build:
	rm -rf build
