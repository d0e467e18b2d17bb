# The two commands of the README: `make serve` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The pinned requirements and the package itself, editable (the checkout's code runs, edits
# need no reinstall) in one resolution: pip refuses pins outside the package's ranges.
# $(BIN)/pypicache is the package's command.
PACKAGE := setup.cfg pyproject.toml

$(VENV)/.runtime: requirements.txt $(PACKAGE) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(PACKAGE) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $@

# Start the server on its defaults (127.0.0.1:8080, cache in ~/.cache/pypicache).
serve: $(VENV)/.runtime
	$(BIN)/pypicache serve

# Set up and run the whole test suite (what .ci/run runs).
test: $(VENV)/.dev
	bash scripts/test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV)
