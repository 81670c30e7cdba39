# One-command entry points for a fresh machine: `make compare` (the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RAW_DIR ?= ../shared/datasets

.PHONY: install test compare models gpu-carry clean

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

# What benchmarks/gpu_check.sh needs on a GPU machine without TensorFlow (carry .gpu, about 30 MB).
gpu-carry:
	mkdir -p .gpu/mnist
	cp $(RAW_DIR)/mnist/*.gz .gpu/mnist/
	cp $(RAW_DIR)/cifar10/cifar10-jpeg.tar.xz $(RAW_DIR)/rebuild_cifar10_binary.py .gpu/

clean:
	rm -rf $(VENV) runs
