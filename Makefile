# pymesh developer tasks. Everything runs from the project venv (.venv), which `venv` creates
# and keeps in step with the pyproject files (scripts/venv.sh).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# extra arguments for bench/run.py, e.g. `make bench BENCH_ARGS=--quick`
BENCH_ARGS ?=

.PHONY: venv demo test lint typecheck pytest fmt unasync bench

venv:
	@bash scripts/venv.sh

demo: venv
	$(PY) examples/static/demo.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) scripts/unasync.py --check

typecheck: venv
	$(BIN)/mypy

# The whole suite: the fast tier and the `slow` tier. pytest's exit code 5 ("no tests ran")
# is a failure here: there are always tests, so it means collection went wrong.
pytest: venv
	@rc=0; $(BIN)/pytest || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest ran no tests; that is a failure" >&2; fi; \
	exit $$rc

test: venv
	@bash scripts/install-test-deps.sh
	@$(MAKE) --no-print-directory lint typecheck pytest

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unasync: venv
	$(PY) scripts/unasync.py

bench: venv
	@bash scripts/install-bench-deps.sh
	$(PY) bench/run.py $(BENCH_ARGS)
