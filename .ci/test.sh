#!/usr/bin/env bash
# The test command from the README: sets up (with dev tools), then lint, types and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh --dev
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"
for pkg in nasplat search_spaces estimators predictors dashboards; do .venv/bin/mypy "$pkg"; done
echo "== pytest"; .venv/bin/python -m pytest -q --durations=30 "$@"
