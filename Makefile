# The two set-up-and-run commands of the README: `make train` and `make test`.
# Each creates .venv when it is missing, or refreshes it when pyproject.toml (or this file) changed
# since the last install: the pinned torch first, then charfeat with its dev extras; then runs.
#   make train ARGS="sampler.p=8 loss.margin=0.3"     # any override of python -m charfeat.train
#   make test ARGS='-m "not slow"'                     # any pytest arguments
#   make train TORCH_INDEX=https://download.pytorch.org/whl/cpu   # the CPU build of torch elsewhere
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
ARGS ?=

STAMP := $(VENV)/.installed

.PHONY: train test

train: $(STAMP)
	$(VENV)/bin/python -m charfeat.train $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

$(STAMP): pyproject.toml Makefile
	@echo "Setting up $(VENV): $(TORCH), then charfeat and its dependencies (minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $@
