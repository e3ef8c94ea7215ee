# `make demo` and `make test` bootstrap .venv by themselves on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# a module per worker (its servers are module fixtures); PYTEST_ARGS='-n 0' runs in one process
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/infracloud demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/images.py
	$(BIN)/python bench/compute.py
	$(BIN)/python bench/hardware.py
	$(BIN)/python bench/pool.py
	$(BIN)/python bench/events.py

clean:
	rm -rf $(VENV) var build *.egg-info src/*.egg-info
