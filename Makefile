# sweetspot: `make demo` runs the whole pipeline on two demo runs; `make test` runs the suite.
PYTHON ?= python3
# An activated virtual environment is used as it is (its own torch kept); otherwise .venv is made.
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SWEETSPOT := $(VENV)/bin/sweetspot

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# A user's own torch is left alone; only a bare environment gets the CPU build on disk.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole pipeline on two demo runs (seeds 0 and 1): train both, then analyse, combine, search and
# calibrate on A, auto on B, evaluate and summarise into runs/summary.md. Complete stages are
# reused on a rerun; FORCE=1 redoes them all.
DEMO_SAMPLES ?= 140
demo: $(STAMP)
	$(if $(FORCE),rm -rf runs/demo-a runs/demo-b)
	$(SWEETSPOT) train-demo --out runs/demo-a --seed 0 --reuse
	$(SWEETSPOT) train-demo --out runs/demo-b --seed 1 --reuse
	$(SWEETSPOT) pipeline --checkpoint-dir runs/demo-a --auto-runs runs/demo-b --trust-run-spec \
		--output runs --num-samples $(DEMO_SAMPLES) --include-averages $(if $(FORCE),--force)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	@# Bytecode written once: a shell with PYTHONDONTWRITEBYTECODE set would otherwise have each of
	@# the suite's ~150 processes (Ray workers, drivers) compile the project again (0.3 s each).
	$(PY) -m compileall -q -j 0 analysis modules rayjobs search sweetspot tests
	@# Two workers, a test file each at a time (its module fixtures and its Ray stay in one process),
	@# the longest files first (tests/conftest.py), not xdist's order (most tests first).
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf .venv .pytest_cache
