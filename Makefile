# bulkchange — two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit unit-sqlite unit-postgres unit-fast chaos chaos-controlcenter bench bench-callbacks bench-limit install bytecode browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: bytecode

# The package's bytecode, compiled ahead as installing a wheel does. An editable install leaves it to the first
# import, and where PYTHONDONTWRITEBYTECODE is set (as on our machines) every command then compiles all of its
# modules again at start-up (0.4 s of a `worker`'s 1.8 s on a slow machine, docs/benchmarks.md). Stale files are
# harmless: Python compiles a changed source itself. Up to date, this takes a fraction of a second.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src/bulkchange

# The browser tests drive Debian's chromium (Playwright's own browsers need a download we do not have). On a
# machine without it, install it once here, before the tests run in parallel: four test processes each
# installing it at once meet apt's lock. Not root, or no apt: the browser tests say what to install.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

demo: bytecode
	$(BIN)/bulkchange demo

# Style (ruff) and the layering contracts in pyproject.toml (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite, on SQLite and on the PostgreSQL server at 127.0.0.1:5432: every PostgreSQL test gets a
# brand-new database named bc_<run id>_..., dropped afterwards (tests/conftest.py). Without a server those
# tests are skipped with the reason; under CI=true they fail instead. Slow tests (four worker processes
# on 2,000 devices) are included.
#
# Two passes. First every test not marked `serial`, in TEST_WORKERS processes (pytest-xdist): a test spends
# most of its time waiting on the servers and processes it started, so more processes than cores pay off.
# Then the `serial` tests one after another, alone on the machine: those that start several worker
# processes of their own (chaos, four workers, outages) or measure a rate. Both passes always run; the
# target fails if either did. TEST_WORKERS=0 runs the first pass in this process (no xdist).
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q
# $(call two_passes,<marker expression to AND with, or empty>)
two_passes = status=0; \
	$(PYTEST) -n $(TEST_WORKERS) --dist loadgroup -m "$(if $(1),($(1)) and )not serial" || status=$$?; \
	$(PYTEST) -m "$(if $(1),($(1)) and )serial" || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	exit $$status

unit: bytecode browser
	@$(call two_passes,)

unit-sqlite: bytecode
	@$(call two_passes,not postgres)

unit-postgres: bytecode
	@$(call two_passes,postgres)

unit-fast: bytecode
	$(PYTEST) -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

# Throughput (docs/benchmarks.md): 10,000 changes against the simulator at real limits, then the one-device-
# per-call baseline; the last line is one JSON object.
bench: bytecode
	$(BIN)/python bench/throughput.py --json

# Callback ingestion (docs/benchmarks.md): 10,000 CarrierService callbacks in one burst to the receiver
# process, until every change they settle is PROCESSED; the last line is one JSON object.
bench-callbacks: bytecode
	$(BIN)/python bench/callbacks.py --json

# The physical limit (docs/benchmarks.md): a minimal client doing the same 10,000 activations against the same
# simulator, interleaved with bulkchange through its CLI at the shipped defaults (serve, submit, worker
# --until-idle; SQLite), median of 3 rounds; the last line is one JSON object (ratio, cpu_ratio, requests).
# It compiles the package's bytecode itself before the first round (it is also run directly, on other trees).
bench-limit: $(STAMP)
	$(BIN)/python bench/limit.py --json

# Chaos run (docs/chaos.md): PostgreSQL on 127.0.0.1:5432, three worker processes, 5,000 changes, 20 SIGKILLs,
# simulator faults; exits non-zero unless nothing was lost, done twice or left disagreeing with the carrier.
chaos: bytecode
	$(BIN)/python bench/chaos.py --json

# The same against the Control Center simulator (docs/chaos.md): a POD 19 provider at 50 TPS, 600 changes over
# every Control Center target status, 10 SIGKILLs, Control Center's faults (accepted but not made, no ICCID …).
chaos-controlcenter: bytecode
	$(BIN)/python bench/chaos.py --carrier controlcenter --json

test: lint typecheck unit

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
	find src -name __pycache__ -prune -exec rm -rf {} +
