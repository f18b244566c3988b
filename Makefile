# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench lock clean-data ui-mlflow ui-prefect serve screenshots

# Reinstall only when the dependency declaration or the lock changes.
$(STAMP): pyproject.toml requirements.lock
	@echo "installing into $(VENV) from requirements.lock (about 3 minutes the first time, 2 cores)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar on -c requirements.lock -e '.[dev]'
	@echo "installed."
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recs demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.nightly --presets demo large

# Refresh the lock: resolve the declared ranges anew in a scratch venv and freeze the result.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	.lock-venv/bin/python -m pip freeze --exclude-editable > requirements.lock
	rm -rf .lock-venv

clean-data:
	rm -rf data/landing data/lake data/gx data/warehouse.duckdb* data/serving.sqlite* mlflow/mlflow.db mlflow/artifacts

ui-mlflow: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db --port 5000

# A local Prefect server, the work pool, every deployment of prefect.yaml and a worker (Ctrl-C stops).
serve: $(STAMP)
	$(BIN)/python -m flows.serve

ui-prefect: $(STAMP)
	$(BIN)/prefect server start --port 4200

# The MLflow UI as a reviewer sees it, into docs/ (a demo night and a retrain in a scratch
# folder, then headless Chromium; needs `apt-get install chromium`).
screenshots: $(STAMP)
	$(BIN)/python -m flows.screenshots
