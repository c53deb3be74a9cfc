# One command from a fresh clone: `make demo` or `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test quick verify lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the walk-through, on a store of its own (free ports, a temporary directory)
demo: $(STAMP)
	$(PY) demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pyrostore tests demo.py bench.py benchmarks verifier verify.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# two test files at a time (each file on one worker: module fixtures stay shared), then
# alone the tests that measure time or throughput (marked serial)
PARALLEL := -n 2 --dist loadfile

test: lint
	$(PY) -m pytest -q $(PARALLEL) -m "not serial"
	$(PY) -m pytest -q -m serial

# the same without the long failure runs (marked slow: chaos, kills under load); CI runs them
quick: lint
	$(PY) -m pytest -q $(PARALLEL) -m "not slow and not serial"

# a few minutes of the store's own verifier: faults, then every check (namespace hosts as root)
verify: $(STAMP)
	$(PY) verify.py --duration 180 --clients 6 --out verify-out

clean:
	rm -rf $(VENV) pyrostore-data verify-out .pytest_cache .mypy_cache .ruff_cache
