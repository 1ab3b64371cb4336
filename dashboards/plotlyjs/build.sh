#!/usr/bin/env bash
# Rebuilds ../static/plotly-nasplat.min.js: plotly.js (the version plotly.py ships: package.json pins it) with
# only the trace types the dashboard draws (entry.js). Needs node >= 20 and npm; takes about a minute.
# After upgrading plotly.py, set its plotly.js version in package.json and run this again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/entry.js" "$here/build.js" "$work/"
cd "$work"
npm install --no-audit --no-fund --ignore-scripts --loglevel=error
node build.js "$here/../static/plotly-nasplat.min.js"
