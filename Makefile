# RxVision: `make demo` runs the real pipeline on the built-in sample; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first: pip takes the local wheels where they exist (see README).
	$(BIN)/pip install -q "torch>=2.4" "torchvision>=0.19"
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out .demo

lint: $(STAMP)
	$(BIN)/ruff check rxvision tests scripts benchmarks

format: $(STAMP)
	$(BIN)/ruff format rxvision tests scripts benchmarks
	$(BIN)/ruff check --fix rxvision tests scripts benchmarks

test: lint
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf .demo runs .pytest_cache .ruff_cache
