#!/usr/bin/env bash
# Rehearse what mybinder (repo2docker) does with binder/, on this machine, in a fresh venv
# and a fresh $HOME: install binder/requirements.txt, run binder/postBuild from the repo
# root, then check that JupyterLab would open with the sidebar, the server extension and
# the %torchserve magic enabled (issue 4: "binder/ holds what mybinder needs").
#
#   scripts/binder-check.sh [DIR]     # default DIR: a new temporary directory, removed after
#
# What this cannot rehearse: mybinder's network. requirements.txt's
# --extra-index-url (PyTorch's CPU wheels) is dropped here because this machine reaches only
# its own package mirror, and torch==2.13.0 (the CPU build on this machine's disk) is
# installed first so that the unpinned `torch` line is already satisfied.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ $# -ge 1 ]; then
    work="$1"
    mkdir -p "$work"
    work="$(cd "$work" && pwd)"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi

venv="$work/venv"
export HOME="$work/home"
mkdir -p "$HOME"
unset PYTHONPATH JUPYTER_CONFIG_DIR JUPYTER_DATA_DIR JUPYTER_RUNTIME_DIR IPYTHONDIR

quiet_pip() {
    # (pip's notes about this machine's local index layout are noise here)
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 |
        { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

echo "== venv $venv"
"$python" -m venv "$venv"
export PATH="$venv/bin:$PATH"
quiet_pip torch==2.13.0
grep -v -- "--extra-index-url" "$repo_root/binder/requirements.txt" > "$work/requirements.txt"
quiet_pip -r "$work/requirements.txt"

echo "== binder/postBuild"
# repo2docker runs postBuild from a copy of the repository; a copy keeps this checkout's
# build outputs (jupyter_torchserve/labextension, node_modules) out of the rehearsal.
src="$work/repo"
mkdir -p "$src"
(cd "$repo_root" && git ls-files -z --cached --others --exclude-standard |
    xargs -0 -I{} cp --parents {} "$src")
(cd "$src" && bash binder/postBuild)

echo "== jupyter labextension list"
jupyter labextension list 2>&1 | tee "$work/labextensions.txt"
echo "== jupyter server extension list"
jupyter server extension list 2>&1 | tee "$work/serverextensions.txt"
echo "== ipython: extensions loaded at start"
(cd "$work" && ipython -c "print('loaded:', sorted(get_ipython().extension_manager.loaded)); get_ipython().run_line_magic('torchserve', '--help')") 2>&1 |
    tee "$work/ipython.txt"

fail=0
grep -Eq "jupyter-torchserve v[0-9.]+ .*enabled.*OK" "$work/labextensions.txt" ||
    { echo "FAIL: the sidebar (jupyter-torchserve) is not enabled and OK" >&2; fail=1; }
grep -Eq "jupyter_torchserve .*enabled" "$work/serverextensions.txt" ||
    { echo "FAIL: the server extension jupyter_torchserve is not enabled" >&2; fail=1; }
grep -q "loaded:.*'jupyter_torchserve'" "$work/ipython.txt" ||
    { echo "FAIL: IPython does not load the %torchserve magic at start" >&2; fail=1; }
grep -q "usage: %torchserve" "$work/ipython.txt" ||
    { echo "FAIL: %torchserve --help did not print its usage" >&2; fail=1; }
if [ "$fail" = 0 ]; then
    echo "binder check passed"
fi
exit "$fail"
