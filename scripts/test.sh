#!/usr/bin/env bash
# The test command: lint (ruff: pyflakes, pycodestyle, bugbear, import order; lint-imports: the
# runner's layers, connectors apart from the runner, no import circles), the pytest
# suite (SQLite and PostgreSQL, a real Prefect API), then the shipped flows' own test cases.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
"$BIN/ruff" check runner connectors tests scripts bench
"$BIN/lint-imports" --no-cache | sed -n "/^Contracts/,\$p"; test "${PIPESTATUS[0]}" -eq 0   # layers, in pyproject.toml
"$BIN/ledgerflow" validate
"$BIN/python" -m pytest -q -n 2 -p no:cacheprovider "$@"
"$BIN/ledgerflow" test flows/
