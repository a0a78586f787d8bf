# sparse-vp: every target sets up what it needs (venv, packages, kernel, data) and is
# idempotent. The two commands a newcomer needs: `make study` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
LOCK := requirements.lock
KERNEL := $(VENV)/share/jupyter/kernels/sparse-vp/kernel.json
FASHION_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium
export PYTHONHASHSEED := 0

.PHONY: setup notebook-filter lock data study study-deep study-confirm study-vp-methods tickets smoke test lint lab bench \
	clean distclean slurm-up slurm-down

setup: $(INSTALLED) $(KERNEL) notebook-filter

# Notebook outputs never enter commits: .gitattributes sends every .ipynb through nbstripout on
# its way into git (the working tree keeps what JupyterLab saved). A relative command: git runs
# it from the top of the working tree, so every clone or worktree uses its own venv.
notebook-filter: $(INSTALLED)
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git config filter.nbstripout.clean "$(VENV)/bin/nbstripout --keep-id"; \
		git config filter.nbstripout.smudge cat; \
		git config diff.ipynb.textconv "$(VENV)/bin/nbstripout --keep-id -t"; fi

# Every package of the environment at the exact version of the lock file, then this project
# itself (editable, no dependency resolution: the lock already holds them all).
$(INSTALLED): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Re-resolve the lock file from pyproject.toml (after changing a dependency there); uv
# resolves for every platform and Python >= 3.11 at once (markers in the file).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --universal \
		--quiet -o $(LOCK)

# The kernel papermill and JupyterLab both use, registered inside the venv.
$(KERNEL): $(INSTALLED)
	$(PY) -m ipykernel install --sys-prefix --name sparse-vp --display-name "Python 3 (sparse-vp)"

# Offline Fashion-MNIST: torchvision's download fails here, Debian ships the same files.
$(FASHION_DEB):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist' (or let torchvision download it)"; fi

# Debian's Chromium, for tests/test_browser.py (JupyterLab in a real browser; skipped without it).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "Chromium: run 'sudo apt-get install chromium' (tests/test_browser.py skips without it)"; fi

data: setup $(FASHION_DEB)
	$(PY) -c "from lib.data import ensure_fashion_mnist; ensure_fashion_mnist()"

# The main job: the embedded mini study (shipped tickets verified, transfer sweep, report).
# Two notebooks at a time, one thread each: one kernel's start-up overlaps the other's work.
study: data
	$(PY) -m lib.sweep params/mini.yaml --workers 2

# The deep tier (issue 27): every shipped source model, three transfer seeds where cheap;
# narrower intervals than the default tier at about three times its cost (docs/power.md: which
# tier gives which interval widths).
study-deep: data
	$(PY) -m lib.sweep params/deep.yaml --workers 2

# The confirmatory tier (issue 37; registered in docs/preregistration.md before it ran): 96
# fresh source models (tickets/glyphs-confirm, trained by tools/train-confirm), only what the
# registered analyses read. Refused until the release ships all 96.
study-confirm: data
	$(PY) -m lib.sweep params/confirm.yaml --workers 2

# Study slice of issue 20: ILM vs BLM vs BLM+ and expansive vs SMM prompts, dense vs the
# sparsest ticket on MNIST (params/vp_methods.yaml; about an hour here, one notebook at a time).
study-vp-methods: data
	$(PY) -m lib.sweep params/vp_methods.yaml --workers 1

# The shipped source models remade from nothing under outputs/tickets/ (eighteen IMP runs
# to state 20, ~25 CPU-minutes per source seed on AVX-512, two at a time: ~4 h on 2 cores;
# resumable; `.venv/bin/python -m lib.tickets remake tickets/glyphs-v2 --seeds 0` remakes
# one), compared with the shipped manifest and checked against the mini study's regime.
tickets: setup
	$(PY) -m lib.tickets remake tickets/glyphs-v2 --workers 2

# The same pipeline in about two minutes.
smoke: data
	$(PY) -m lib.sweep params/smoke.yaml

# -rs: a skipped test says why (tests/test_slurm_real.py needs root to start its Slurm).
test: data $(CHROMIUM)
	$(PY) -m pytest -q -rs --durations=25

# A real single-node Slurm on this machine (as root; installs Debian's packages once) to try
# `--backend slurm` on: docs/paper-scale.md. The tests start and stop their own.
slurm-up:
	tools/slurm-local start

slurm-down:
	tools/slurm-local stop

lint: setup
	$(VENV)/bin/ruff check lib tests bench

lab: data
	$(VENV)/bin/jupyter lab --notebook-dir=.

# Each prints its figure last; a figure below its target makes the target fail at the end.
bench: data
	@status=0; for script in bench/bench_*.py; do echo "== $$script"; \
		$(PY) $$script || status=1; done; exit $$status

# What can be rebuilt from the records in seconds: figures, reports, results.csv, feature
# caches, Python caches. Kept: datasets (outputs/data), source models and tickets
# (outputs/checkpoints, outputs/tickets, tickets/), records, executed run notebooks, the venv.
clean:
	@echo "make clean: removing figures, reports, results.csv, report stamps and caches under outputs/"
	rm -rf outputs/*/figures outputs/*/report.ipynb outputs/*/report.html outputs/*/results.csv \
		outputs/*/.stamps/report.json outputs/cache outputs/compare
	find outputs -name '.*.running.ipynb' -delete 2>/dev/null || true
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
	rm -rf .pytest_cache .ruff_cache
	@echo "kept: outputs/data, outputs/checkpoints, outputs/tickets, records and runs; 'make distclean' removes everything"

# Everything generated: all of outputs/ (datasets, trained source models and tickets,
# records, executed notebooks, reports) and the venv. The shipped tickets/ stay (git).
distclean: clean
	@echo "make distclean: removing outputs/ (data, checkpoints, records, notebooks) and $(VENV)"
	rm -rf outputs/*/ $(VENV)
