# One-command entry points for a fresh machine: `make compare` (the main job), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RAW_DIR ?= ../shared/datasets
# PyTorch is the reference the tests check the optimizers and He et al.'s ResNet against (skipped without it).
TORCH ?= torch==2.13.0

.PHONY: install test test-slow compare example models gpu-carry onednn-current clean

install: $(VENV)/.installed

# tools/install.py: uv where it can be had, else pip (it says which); uv is about twice as fast here.
$(VENV)/.installed: pyproject.toml setup.py tools/install.py $(wildcard jaxres/_onednn/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) tools/install.py -e '.[dev]'
	touch $@

$(VENV)/.reference: $(VENV)/.installed
	$(PY) tools/install.py '$(TORCH)' || echo "note: $(TORCH) could not be installed; the tests against PyTorch are skipped"
	touch $@

test: install $(VENV)/.reference
	$(PY) -m pytest -q -m "not slow" -n 2 --dist worksteal

test-slow: install $(VENV)/.reference
	$(PY) -m pytest -q -m slow -n 2 --dist worksteal

compare: install
	$(PY) -m experiments.compare --study quick --raw-dir $(RAW_DIR) --out runs/quick

# examples/: your network (Linen and NNX) against its plain twin on a folder of images made from CIFAR-10's files;
# EXAMPLE=tiny: a check in a minute
EXAMPLE ?= full
example: install
	test -d examples/cifar10_folder || $(PY) examples/make_image_folder.py --raw-dir $(RAW_DIR)
	$(PY) -m experiments.compare --study examples/folder_study.py:$(EXAMPLE) --out runs/example_$(EXAMPLE)

models: install
	$(PY) -m jaxres.models

# What benchmarks/gpu_check.sh and experiments/gpu_depth.sh need on a GPU machine without TensorFlow (carry .gpu, about 30 MB).
# pydantic (the config's validation) is not in the GPU image: its wheels for that image's Python 3.12 travel too.
GPU_WHEELS ?= pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
gpu-carry:
	mkdir -p .gpu/mnist .gpu/wheels
	cp $(RAW_DIR)/mnist/*.gz .gpu/mnist/
	cp $(RAW_DIR)/cifar10/cifar10-jpeg.tar.xz $(RAW_DIR)/rebuild_cifar10_binary.py .gpu/
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels $(GPU_WHEELS)

# A second environment whose oneDNN extension is built against the current oneDNN (3.13, SYCL/TBB; about 2 GB):
# benchmarks.step_time's jaxres-onednn-current worker runs in it (docs/benchmarks.md).
ONEDNN_VENV ?= .venv-onednn-current
onednn-current:
	$(PYTHON) -m venv $(ONEDNN_VENV)
	$(ONEDNN_VENV)/bin/python tools/onednn_current.py

clean:
	rm -rf $(VENV) $(ONEDNN_VENV) runs
