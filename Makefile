PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Test processes (pytest-xdist): each test has its own database file or
# PostgreSQL schema, so they run side by side; most of a test's time is I/O.
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

LOWEST ?= .venv-lowest

.PHONY: install test test-lowest lint demo bench clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

# Two runs: everything but the `serial` tests on every core, then those alone
# (they bound the WAL while their own processes contend; a neighbour test
# would stretch the bound); coverage is the sum of both. Exit status 5 is
# "no test selected" (PYTEST_ARGS choosing none of one run).
test: install
	$(BIN)/pytest -n $(WORKERS) -m "not serial" --cov=abathur --cov-report= $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -m serial --cov=abathur --cov-append \
		--cov-report=term-missing:skip-covered --cov-fail-under=90 $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The suite on SQLite in a second environment holding the lowest release of
# every direct dependency that pyproject.toml allows (ci/constraints-lowest.txt):
# the floors are verified, not guessed.
$(LOWEST)/.installed: pyproject.toml ci/constraints-lowest.txt
	$(PY) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --upgrade pip
	$(LOWEST)/bin/pip install -e '.[test]' -c ci/constraints-lowest.txt
	touch $@

# The framework adapters are optional extras whose own floors are above the
# core's (google-adk needs pydantic 2.12): their tests, and the benchmark's
# smoke test (its peers are those frameworks), run in `make test`.
LOWEST_IGNORES := --ignore=tests/conformance --ignore=tests/integrations \
	--ignore=tests/docs/test_benchmark_smoke.py --ignore=tests/docs/test_scale_benchmark_smoke.py
test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/pip check
	env -u ABATHUR_TEST_POSTGRES_URL $(LOWEST)/bin/pytest -n $(WORKERS) -p no:cacheprovider -q \
		-m "not serial" $(LOWEST_IGNORES) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	env -u ABATHUR_TEST_POSTGRES_URL $(LOWEST)/bin/pytest -p no:cacheprovider -q \
		-m serial $(LOWEST_IGNORES) $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: install
	$(BIN)/ruff check abathur tests alembic benchmarks
	$(BIN)/mypy abathur benchmarks

demo: install
	$(BIN)/abathur demo

# Not part of `make test`: timings belong in a benchmark, not in assertions.
# Rewrites docs/performance_validation_milestone2.md and its JSON and PNG.
bench: install
	$(BIN)/pip install -q 'matplotlib>=3.7'
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.recall $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.scale $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
