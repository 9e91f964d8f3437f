# Set-up from nothing, then the two jobs: `make study` and `make test`.
# torch is pinned: an unpinned install pulls gigabytes of CUDA packages on Linux.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STUDY_ARGS ?=

.PHONY: setup study test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

study: setup
	$(VENV)/bin/normlab study $(STUDY_ARGS)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
