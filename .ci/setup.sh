#!/usr/bin/env bash
# Sets up everything nasplat needs on a fresh Debian machine with Python 3.11 (idempotent, safe to rerun):
#   Debian packages (the Fashion-MNIST dataset; with --dev also what the tests need), a virtual environment
#   in .venv, the pinned CPU build of torch and the locked versions of every other package.
# Usage: bash .ci/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

apt_need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_need+=(dataset-fashion-mnist)
if [ $dev = 1 ]; then
  # the tests start a throw-away PostgreSQL server and drive the dashboards in headless Chromium
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_need+=(postgresql)
  [ -x /usr/bin/chromium ] || apt_need+=(chromium chromium-driver)
fi
if ((${#apt_need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${apt_need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_need[@]}" >/dev/null
fi

py=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $py"
  "$py" -m venv .venv
fi

extras="dashboard,postgres"
[ $dev = 1 ] && extras="$extras,dev"
stamp=".venv/.nasplat-installed"
want="$(cat pyproject.toml constraints.txt requirements-lock.txt | sha256sum | cut -c1-16) $extras"
if [ ! -f "$stamp" ] || ! grep -qxF -- "$want" "$stamp"; then
  echo "setup: installing nasplat[$extras] (torch pinned to the local CPU build; versions from requirements-lock.txt)"
  # torch first and alone, so that no resolver step can reach for a CUDA build
  # (pip's notes about index folders this machine's configuration names but lacks are filtered out)
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -c requirements-lock.txt -e ".[$extras]" \
    2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, nasplat" || { echo "setup: installation failed" >&2; exit 1; }
  echo "$want" >> "$stamp"
fi
echo "setup: ready (.venv/bin/nasplat)"
