# ledgerflow: `make demo` sets up and runs the demo end to end; `make test` sets up and runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-fast bench clean

$(BIN)/ledgerflow: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(BIN)/ledgerflow

setup: $(BIN)/ledgerflow

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	bash scripts/test.sh

# unit, language and planner tests on SQLite: no PostgreSQL, no Prefect, no ledgerflow processes
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider -m "not postgres and not prefect and not slow"

bench: setup
	bash scripts/bench.sh

clean:
	rm -rf $(VENV) .ledgerflow out .pytest_cache
