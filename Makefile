PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[demo,test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hookd demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hookd tests bench
	$(BIN)/ruff format --check hookd tests bench
	$(BIN)/lint-imports

check: lint test

bench: $(STAMP)
	$(BIN)/python -m bench.burst

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
