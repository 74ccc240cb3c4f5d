# Daily Mix — every target works from a fresh clone with only Python 3.11+ installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DAILYMIX_HOME ?= $(CURDIR)/.dailymix

.PHONY: install demo test lint up clean bench

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)   ## fresh world → every DAG through Airflow → summary
	$(BIN)/dailymix --home $(DAILYMIX_HOME) demo

test: $(STAMP)   ## ruff + unit, DAG integrity and end-to-end tests
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

up: $(STAMP)     ## Airflow UI on :8080 and MLflow UI on :5000, over the demo's data root
	$(BIN)/python -m pipeline.ops.ui $(DAILYMIX_HOME)

bench: $(STAMP)  ## nightly throughput at 1M tracks, 20k users (the issue's sizes) → bench.json
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/dailymix bench --tracks 1000000 --users 20000 --json bench.json

clean:
	rm -rf $(VENV) .dailymix .pytest_cache .ruff_cache
