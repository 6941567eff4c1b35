# The interface to the project: `make dev` runs the whole stack, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-sqlite test-postgres chaos bench lint format install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/parley dev

# SQLite always; PostgreSQL as well when one answers on PARLEY_TEST_POSTGRES (default local).
PARLEY_TEST_POSTGRES ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
# The reduced chaos suite (tests/chaos) runs in the first pass only; it picks PostgreSQL
# itself where a case needs it.
test: $(STAMP)
	$(BIN)/python -m pytest -q
	@if $(BIN)/python -m tests.postgres_reachable "$(PARLEY_TEST_POSTGRES)"; then \
		echo "== again against PostgreSQL =="; \
		PARLEY_TEST_DATABASE_URL="$(PARLEY_TEST_POSTGRES)" $(BIN)/python -m pytest -q \
			--ignore=tests/chaos; \
	else \
		echo "PostgreSQL not reachable at $(PARLEY_TEST_POSTGRES): SQLite only"; \
	fi

# The full chaos suite: faults injected into a running Parley, counts reported at the end
# and written to build/chaos-report.md.
chaos: $(STAMP)
	PARLEY_CHAOS=full PARLEY_CHAOS_REPORT=build/chaos-report.md \
		$(BIN)/python -m pytest -q tests/chaos

# Benchmarks (bench/): turn overhead against a bare-Temporal floor, the signal + polling anchor,
# history growth, scale. Full sizes by default (~15 min); PARLEY_BENCH_SCALE=small for a few
# minutes. Writes bench/results/<timestamp>.json and prints a markdown summary. Not part of
# `test`: nothing here asserts a timing. Profilers: pip install -e '.[bench]'.
bench: $(STAMP)
	$(BIN)/python -m bench

# What ruff reads; mypy's files are listed in pyproject.toml ([tool.mypy]).
PYTHON_FILES := src tests bench worker.py

lint: $(STAMP)
	$(BIN)/ruff check $(PYTHON_FILES)
	$(BIN)/ruff format --check $(PYTHON_FILES)
	$(BIN)/mypy

# Rewrites the files: the fixes ruff can make, then the formatting (fixes can leave lines to
# reformat, so format goes last). Whatever is left, `make lint` reports.
format: $(STAMP)
	$(BIN)/ruff check --fix $(PYTHON_FILES)
	$(BIN)/ruff format $(PYTHON_FILES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
