# Daily Mix — every target works from a fresh clone with only Python 3.11+ installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DAILYMIX_HOME ?= $(CURDIR)/.dailymix

.PHONY: install demo test test-fast lint up clean bench

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)   ## fresh world → every DAG through Airflow → summary
	$(BIN)/dailymix --home $(DAILYMIX_HOME) demo

test: $(STAMP)   ## everything: lint, import contracts, unit, DAG integrity, integration and end-to-end tests, on every core
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

test-fast: $(STAMP)  ## the developer loop (under 2 minutes): lint, import contracts, unit tests not marked slow
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto -m "not slow" --ignore=tests/e2e --ignore=tests/integration --ignore=tests/dags

lint: $(STAMP)   ## ruff and the import-linter contracts (the layering of pipeline/)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

up: $(STAMP)     ## Airflow UI on 127.0.0.1:8080 and MLflow UI on 127.0.0.1:5000 (loopback only), demo's data root
	$(BIN)/python -m pipeline.ops.ui $(DAILYMIX_HOME)

bench: $(STAMP)  ## nightly throughput at 1M tracks, 20k users (the sizing point of docs/benchmarks.md) → bench.json
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/dailymix bench --tracks 1000000 --users 20000 --json bench.json

clean:
	rm -rf $(VENV) .dailymix .pytest_cache .ruff_cache
