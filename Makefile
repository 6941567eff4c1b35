# The interface to the project: `make dev` runs the whole stack, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency of Parley and of its `test` extra, pinned with hashes; `make lock` writes it.
LOCK := requirements.lock

.PHONY: dev test test-sqlite test-postgres chaos bench lint format install lock clean

# The venv holds exactly the locked versions, then Parley itself (editable, nothing more);
# `pip check` fails when pyproject.toml asks for something the lock lacks: run `make lock`.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Regenerates the lock from pyproject.toml with uv (installed in its own small venv under
# build/), keeping the pins already in it; `make lock LOCK_FLAGS=--upgrade` moves every pin to
# the newest release allowed. --universal: one lock for Linux, macOS and Windows.
UV_VERSION := 0.13.9
UV := build/uv/bin/uv
LOCK_FLAGS ?=

$(UV):
	$(PYTHON) -m venv build/uv
	build/uv/bin/pip install --quiet 'uv==$(UV_VERSION)'

lock: $(UV)
	$(UV) pip compile pyproject.toml --extra test --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command 'make lock' --quiet $(LOCK_FLAGS) -o $(LOCK)

dev: $(STAMP)
	$(BIN)/parley dev

# SQLite always; PostgreSQL as well when one answers on PARLEY_TEST_POSTGRES (default local).
PARLEY_TEST_POSTGRES ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
# The reduced chaos suite (tests/chaos) runs in the first pass only; it picks PostgreSQL
# itself where a case needs it. So do tests/unit and tests/workflows (time-skipping server,
# stubbed activities): they reach no database. Nor do the tests marked database_agnostic
# (the history-growth measurement, the dev stack with its own SQLite file, static pages).
test: $(STAMP)
	$(BIN)/python -m pytest -q
	@if $(BIN)/python -m tests.postgres_reachable "$(PARLEY_TEST_POSTGRES)"; then \
		echo "== again against PostgreSQL =="; \
		PARLEY_TEST_DATABASE_URL="$(PARLEY_TEST_POSTGRES)" $(BIN)/python -m pytest -q \
			--ignore=tests/chaos --ignore=tests/unit --ignore=tests/workflows \
			-m 'not database_agnostic'; \
	else \
		echo "PostgreSQL not reachable at $(PARLEY_TEST_POSTGRES): SQLite only"; \
	fi

# The full chaos suite: faults injected into a running Parley, counts reported at the end
# and written to build/chaos-report.md.
chaos: $(STAMP)
	PARLEY_CHAOS=full PARLEY_CHAOS_REPORT=build/chaos-report.md \
		$(BIN)/python -m pytest -q tests/chaos

# Benchmarks (bench/): turn overhead against a bare-Temporal floor, the signal + polling anchor,
# history growth, scale, streaming, two workers and two APIs (needs PostgreSQL on
# 127.0.0.1:5432). Full sizes by default (~20 min); PARLEY_BENCH_SCALE=small for a few
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
