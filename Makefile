# sumbg: the two commands a newcomer needs are `make demo` and `make test`.
# Both set everything up first (Docker engine, Compose v2, venv, local images).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo demo-clean test test-unit test-e2e lint bench clean-test-leftovers

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) scripts/demo.py

demo-clean: setup
	@$(PY) scripts/demo.py --clean

# The end-to-end modules mostly wait on containers and HTTP, so they run in parallel: pytest-xdist
# workers, each taking whole modules or test classes (--dist loadscope; longest first, see
# tests/conftest.py), each with its own edge, root and ports. TEST_WORKERS was measured on 2 cores (README). The engine restart
# test restarts dockerd under every container: it runs alone, after the others.
TEST_WORKERS ?= 4

test: setup lint
	@status=0; \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder -m "not engine_restart" \
		$(PYTEST_ARGS) || status=$$?; \
	$(PY) -m pytest -m engine_restart $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	exit $$status

# The code's own checks, first: lint and format (ruff), types (mypy, strict), the layering
# (import-linter contracts in pyproject.toml).
lint: setup
	@$(VENV)/bin/ruff check sumbg tests bench scripts
	@$(VENV)/bin/ruff format --check sumbg tests bench scripts
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports

test-unit: setup
	@$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

test-e2e: setup
	@$(PY) -m pytest -m e2e $(PYTEST_ARGS)

bench: setup
	@SUMBG_SETUP_BENCH=1 bash scripts/setup.sh
	@$(PY) bench/run.py $(BENCH_ARGS)
