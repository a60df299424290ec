#!/usr/bin/env bash
# Create a separate virtual environment holding a real TorchServe 0.12.0, for
# tests/test_torchserve_compat.py (issue 3: "TorchServe 0.12 loads ours unchanged").
#
#   scripts/torchserve-venv.sh [DIR]        # default DIR: .torchserve-venv (repo root)
#   JTS_TORCHSERVE_VENV=DIR pytest -m torchserve tests/test_torchserve_compat.py
#
# jupyter_torchserve is deliberately NOT installed there: our archives must be
# self-contained, so TorchServe has to serve them without our package.
# TorchServe 0.12.0's wheel forgets PyYAML (its worker imports yaml), hence pyyaml.
# captum: TorchServe's vision/text handlers explain with it (it was never a dependency of
# its wheel), and tests/test_explain_torchserve.py explains our archives there (issue 17).
# An existing venv that lacks it is updated in place: only the missing packages are added.
# Java 17 is needed too (`java` on PATH); this script only checks for it.
# Idempotent: when DIR already holds the pinned versions it returns in about a second.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$repo_root/.torchserve-venv}"
# absolute: check() runs from / so that the repo checkout is not importable
mkdir -p "$(dirname "$dir")"
dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"
python="${PYTHON:-python3}"

pins=(torch==2.13.0 torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml numpy pillow "captum>=0.7")

check() {
    (cd / && "$dir/bin/python" -I - 2>/dev/null) <<'EOF'
import importlib.metadata as md
import importlib.util
want = {"torch": "2.13.0", "torchserve": "0.12.0", "torch-model-archiver": "0.12.0"}
for name, version in want.items():
    if md.version(name).split("+")[0] != version:
        raise SystemExit(1)
for mod in ("yaml", "numpy", "PIL", "captum.attr", "ts.model_service_worker"):
    if importlib.util.find_spec(mod) is None:
        raise SystemExit(1)
if importlib.util.find_spec("jupyter_torchserve") is not None:
    raise SystemExit(2)
EOF
}

rc=1
if [ -x "$dir/bin/python" ]; then
    rc=0
    check || rc=$?
fi
if [ "$rc" = 0 ]; then
    echo "torchserve venv ready: $dir"
elif [ "$rc" = 2 ]; then
    echo "error: $dir has jupyter_torchserve installed; it must not (remove the venv)" >&2
    exit 1
else
    if [ -x "$dir/bin/python" ]; then
        echo "adding what is missing to the torchserve venv in $dir ..."
    else
        echo "creating torchserve venv in $dir ..."
        "$python" -m venv "$dir"
    fi
    # (pip's notes about this machine's local index layout are noise here)
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" 2>&1 |
        { grep -v "is ignored: it is neither a file nor a directory" || true; }
    if ! check; then
        echo "error: $dir does not hold ${pins[*]} after install" >&2
        exit 1
    fi
    echo "torchserve venv ready: $dir"
fi

if ! command -v java >/dev/null 2>&1; then
    echo "warning: java is not on PATH; TorchServe 0.12 needs Java 17 (e.g. apt-get install openjdk-17-jre-headless)" >&2
fi
