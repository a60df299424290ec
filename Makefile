# Two entry points for a fresh machine: `make demo` (the main job end to end) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint chromium clean

$(VENV)/.installed: pyproject.toml labextension/package.json
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m jupyter_torchserve.demo

# Debian's Chromium for the sidebar's browser tests (test tools cannot download browsers here)
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(VENV)/bin/ruff check jupyter_torchserve tests benchmarks

test: setup chromium lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) jupyter_torchserve/labextension labextension/node_modules labextension/lib
