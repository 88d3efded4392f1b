PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install test lint demo bench clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

test: install
	$(BIN)/pytest --cov=abathur --cov-report=term-missing:skip-covered --cov-fail-under=90 $(PYTEST_ARGS)

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
