# One-command entry points for a fresh machine: `make compare` (the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RAW_DIR ?= ../shared/datasets

.PHONY: install test compare models clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q -m "not slow"

compare: install
	$(PY) -m experiments.compare --protocol quick --raw-dir $(RAW_DIR) --out runs/quick

models: install
	$(PY) -m jaxres.models

clean:
	rm -rf $(VENV) runs
