#!/usr/bin/env bash
# Make .venv-nni: NNI 3.0 and its multi-trial strategies' dependencies, apart from nasplat's own environment
# (NNI 3.0 pins filelock<3.12 and its RL strategy needs tianshou 0.5 with the old gym).
# The packages are the `nni` extra of pyproject.toml; torch comes from constraints.txt (the local CPU build).
#
#   bash benchmarks/nni_env.sh                  # .venv-nni with NNI only (enough for search_nb201_nni.py)
#   NNI_WITH_NASPLAT=1 bash benchmarks/nni_env.sh   # also nasplat itself (pip install -e ".[nni]")
#   NNI_VENV=/path/to/venv PYTHON=python3.11 bash benchmarks/nni_env.sh
#
# Then: .venv-nni/bin/python benchmarks/search_nb201_nni.py --out runs/nni-nb201.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NNI_VENV:-.venv-nni}
PY=${PYTHON:-python3.11}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "NNI 3.0 here is set up on Python 3.11"'
"$VENV/bin/python" -m pip install -q --upgrade pip

if [ "${NNI_WITH_NASPLAT:-0}" = 1 ]; then
  "$VENV/bin/python" -m pip install -c constraints.txt "torch==2.13.0" -e ".[nni]"
else
  mapfile -t REQS < <("$VENV/bin/python" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["nni"]))')
  "$VENV/bin/python" -m pip install -c constraints.txt "torch==2.13.0" "${REQS[@]}"
fi

# Never a CUDA torch, never numpy >= 2.5 (constraints.txt), and NNI's own pins held.
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import warnings

warnings.filterwarnings("ignore")
torch_v = md.version("torch")
assert torch_v.endswith("+cpu"), f"torch {torch_v} is not the local CPU build"
for name in ("nni", "torch", "numpy", "filelock", "pytorch-lightning", "tianshou", "gym", "typeguard"):
    print(f"{name}=={md.version(name)}")
import nni.nas.strategy as st  # noqa: E402  - the four strategies the benchmark uses must import

print("strategies:", st.Random.__name__, st.RegularizedEvolution.__name__, st.TPE.__name__, st.PolicyBasedRL.__name__)
PY
# The space's cell strings against the table (skipped when the table is not there).
table="${NASPLAT_DATA_DIR:-../shared/data}/nb201/cifar10-12epoch.csv"
if [ -f "$table" ]; then
  "$VENV/bin/python" benchmarks/search_nb201_nni.py --check-table
fi
