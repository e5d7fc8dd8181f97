# drimbox — the two commands of the README:
#   make run    set up a virtualenv with the box and start `drimbox serve` (embedded default)
#   make test   install everything the tests need (Debian packages as root) and run the whole suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_TEST_PACKAGES := postgresql orthanc orthanc-dicomweb dcmtk iproute2 util-linux
PYTEST_ARGS ?=

.PHONY: install install-test system-packages run test lint typecheck imports unit check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

system-packages:
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "install as root:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

install-test: system-packages install

run: install
	$(BIN)/drimbox serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

check: lint typecheck imports

# The whole suite runs in a private network namespace with only loopback up, so that peers that
# cannot bind 127.0.0.1 alone (Orthanc, storescp) are reachable from nowhere else.
test: install-test check
	bash tools/in-netns.sh $(BIN)/pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest tests/unit tests/contract $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
