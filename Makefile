# sweetspot: `make demo` trains the embedded demo run; `make test` runs the suite.
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

# Each step's output feeds the next; a finished demo run is reused (delete runs/ to start over).
demo: $(STAMP)
	@if [ -f runs/demo/manifest.json ]; then echo "runs/demo already trained; reusing it (rm -r runs to retrain)"; \
	else $(SWEETSPOT) train-demo --out runs/demo; fi
	$(SWEETSPOT) analyze --checkpoint-dir runs/demo --output runs/demo-analysis
	$(SWEETSPOT) combine --checkpoint-dir runs/demo --selection runs/demo-analysis/selection.json \
		--output runs/demo-combined.safetensors --update-bn --spec runs/demo/sweetspot.yaml
	$(SWEETSPOT) evaluate --spec runs/demo/sweetspot.yaml --checkpoint-dir runs/demo \
		--model runs/demo-combined.safetensors --analysis runs/demo-analysis --output runs/demo-eval
	@echo "demo done: see runs/demo-analysis/analysis_report.md and runs/demo-eval/evaluation_report.md"

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf .venv .pytest_cache
