# The two commands of the README: `make run` and `make test`. Both install
# what they need first (system packages with apt, then the Python venv), so a
# fresh Debian/Ubuntu machine needs nothing else.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

# apt-get install the packages listed in the shell variable `missing`.
APT_INSTALL = command -v apt-get >/dev/null || { echo "please install:$$missing" >&2; exit 1; }; \
	sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	echo "installing$$missing with apt-get"; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null

.PHONY: install system-deps test-deps run test lint bench clean

install: system-deps $(STAMP)

# Only what is missing: redis-server (started by `curvelab up` and by the
# tests) and python3-venv.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then $(APT_INSTALL); fi

# The browser tests drive Debian's chromium (Playwright's own browser
# download is not used: it needs a host outside the package registries).
test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing=" chromium"; \
	if [ -n "$$missing" ]; then $(APT_INSTALL); fi

# Re-installs only when a pyproject.toml changes: `make install` is idempotent.
# The client (client/, importable as `curvelab`: the worker measures with it)
# first, then the server: both have a `curvelab` script, and the server's,
# installed last, is the one left in .venv/bin (its `sync` calls the client's).
$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./client
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/curvelab up $(ARGS)

test: install test-deps
	$(BIN)/pytest $(ARGS)

# Every figure of benchmarks/README.md, in one table (ARGS=--quick: fewer
# epochs and rounds).
bench: install
	$(BIN)/python -m benchmarks $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
