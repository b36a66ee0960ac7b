# Two commands: `make demo` runs the main job on the built-in default, `make test` runs the tests.
# Both create .venv when no virtual environment is active and install what they need.
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(if $(VIRTUAL_ENV),python,$(VENV)/bin/python)
CHROMIUM ?= /usr/bin/chromium
STAMP := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(VENV))/.curriculum-installed

.PHONY: install demo test lint bench chromium

$(STAMP): pyproject.toml
	@if [ -z "$(VIRTUAL_ENV)" ] && [ ! -x $(VENV)/bin/python ]; then python3 -m venv $(VENV); fi
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch first, pinned, so the local CPU wheel is used instead of a CUDA download.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m curriculum demo $(DEMO_ARGS)

test: $(STAMP) chromium
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# The report's browser tests use Debian's headless chromium; install it when it is missing.
# If that is impossible (no apt-get, no root, no network) the tests say loudly that they skip.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "installing Debian's chromium for the report's browser tests (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    chromium >/dev/null ) || echo "WARNING: could not install chromium: the report's \
	browser tests will be SKIPPED"; \
	fi

lint: $(STAMP)
	$(PYTHON) -m ruff check .

bench: $(STAMP)
	$(PYTHON) bench/loader_throughput.py
