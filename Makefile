# Two entry points for a fresh machine: `make demo` (the main job end to end) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: 2.13.0 is the CPU build these 2-core machines keep on disk (the one
# TorchServe's venv uses too, for like-for-like benchmarks); an unpinned `torch` pulls a
# CUDA build of several GB. `make setup TORCH=torch` takes the newest instead.
TORCH ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint chromium torchserve-venv clean

$(VENV)/.installed: pyproject.toml labextension/package.json
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m jupyter_torchserve.demo $(if $(KEEP),--keep)

# Debian's Chromium for the sidebar's browser tests (test tools cannot download browsers here)
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium >/dev/null; }

# A separate venv with TorchServe 0.12 (and Java 17 from the machine) proves our archives
# load and answer the same in the real TorchServe (tests/test_torchserve_compat.py)
torchserve-venv:
	bash scripts/torchserve-venv.sh .torchserve-venv

# The sidebar's node packages, for its lint tools. `make setup` installs them when it builds the
# sidebar; this also catches a checkout whose package.json or yarn.lock changed since.
JLPM := PATH="$(abspath $(VENV))/bin:$$PATH" jlpm
labextension/node_modules/.yarn-state.yml: labextension/package.json labextension/yarn.lock | $(VENV)/.installed
	cd labextension && $(JLPM) install
	touch $@

lint: setup labextension/node_modules/.yarn-state.yml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd labextension && $(JLPM) lint:check

test: setup chromium torchserve-venv lint
	$(PY) -m pytest -q --durations=25

clean:
	rm -rf $(VENV) .torchserve-venv jupyter_torchserve/labextension labextension/node_modules labextension/lib
