# Two commands from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format bench migrate clean

run: $(STAMP)
	$(BIN)/batchgate migrate
	$(BIN)/batchgate serve

test: $(STAMP)
	$(BIN)/python -m pytest -n $${PYTEST_WORKERS:-2} --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -x -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench

format: $(STAMP)
	$(BIN)/ruff check --fix app tests migrations bench
	$(BIN)/ruff format app tests migrations bench

bench: $(STAMP)
	$(BIN)/python -m bench.intake

migrate: $(STAMP)
	$(BIN)/batchgate migrate

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) data .pytest_cache tests/artifacts
