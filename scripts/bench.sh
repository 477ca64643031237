#!/usr/bin/env bash
# Every benchmark, each printing its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
for b in bench/bench_*.py; do
  echo "== $b"
  "$BIN/python" "$b"
done
