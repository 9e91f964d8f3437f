# Set-up from nothing, then the two jobs: `make study` and `make test`.
# torch is pinned to a known release. On Linux, PyPI's torch wheels bring CUDA libraries (GBs);
# on a machine without a GPU, `make TORCH_INDEX=https://download.pytorch.org/whl/cpu ...` takes
# the CPU-only build instead.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX ?=
STUDY_ARGS ?=

.PHONY: setup study test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test,ray]"
	touch $@

study: setup
	$(VENV)/bin/normlab study $(STUDY_ARGS)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
