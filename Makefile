# sparse-vp: every target sets up what it needs (venv, packages, kernel, data) and is
# idempotent. The two commands a newcomer needs: `make study` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
KERNEL := $(VENV)/share/jupyter/kernels/sparse-vp/kernel.json
FASHION_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export PYTHONHASHSEED := 0

.PHONY: setup data study tickets smoke test lint lab bench clean

setup: $(INSTALLED) $(KERNEL)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The kernel papermill and JupyterLab both use, registered inside the venv.
$(KERNEL): $(INSTALLED)
	$(PY) -m ipykernel install --sys-prefix --name sparse-vp --display-name "Python 3 (sparse-vp)"

# Offline Fashion-MNIST: torchvision's download fails here, Debian ships the same files.
$(FASHION_DEB):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist' (or let torchvision download it)"; fi

data: setup $(FASHION_DEB)
	$(PY) -c "from lib.data import ensure_fashion_mnist; ensure_fashion_mnist()"

# The main job: the embedded mini study (shipped tickets verified, transfer sweep, report).
# Two notebooks at a time, one thread each: one kernel's start-up overlaps the other's work.
study: data
	$(PY) -m lib.sweep params/mini.yaml --workers 2

# The shipped source models remade from nothing under outputs/tickets/ (three IMP runs, about
# an hour of CPU per source seed on 2 cores; resumable) and compared with the shipped manifest.
tickets: setup
	$(PY) -m lib.tickets remake tickets/glyphs-v1 --workers 3

# The same pipeline in about two minutes.
smoke: data
	$(PY) -m lib.sweep params/smoke.yaml

test: data
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check lib tests bench

lab: data
	$(VENV)/bin/jupyter lab --notebook-dir=.

# Each prints its figure last; a figure below its target makes the target fail at the end.
bench: data
	@status=0; for script in bench/bench_*.py; do echo "== $$script"; \
		$(PY) $$script || status=1; done; exit $$status

clean:
	rm -rf outputs/*/ $(VENV)
