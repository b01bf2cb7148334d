# Oblako — the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask
export FLASK_APP := run.py
PORT ?= 5000

# Python's own bytecode cache, whatever the machine's environment says: without it every test
# process compiles and assertion-rewrites the whole suite again (seconds of CPU each).
unexport PYTHONDONTWRITEBYTECODE

CONSTRAINTS := constraints.txt
LOCK_VENV ?= .venv-lock

.PHONY: setup run test lint lock browsers fonts services translations messages demo-data bench clean vendor \
	topology topology-packages

## setup: venv, dependencies, compiled translations, migrated database (idempotent)
setup: $(VENV)/.installed translations fonts vendor
	$(FLASK) db upgrade
	$(FLASK) oblako init

# Every distribution at the version in constraints.txt: a fresh clone installs what CI tested.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

## lock: re-pin constraints.txt from a fresh venv (after a change to pyproject's dependencies)
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Every distribution of the tree, pinned: written by \`make lock\` from a fresh venv"; \
	  echo "# ($$($(LOCK_VENV)/bin/python -V)); \`make setup\` installs with it. Do not edit."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

## translations: compile the .po catalogues into .mo (never committed)
translations: $(VENV)/.installed
	$(PY) scripts/i18n.py compile

## vendor: browser libraries from the npm registry, pinned by hash (scripts/vendor.py)
vendor:
	$(PY) scripts/vendor.py

## messages: re-extract the .pot and rebuild ru/en catalogues from translations/ru_parts
messages: $(VENV)/.installed
	$(PY) scripts/i18n.py

## run: set everything up, load the demo data once, serve http://127.0.0.1:$(PORT) and the worker
run: setup
	$(FLASK) oblako demo-data
	PORT=$(PORT) $(PY) run.py

## browsers: Debian's chromium and chromium-driver for the browser tests (no browser download)
browsers:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing Debian chromium and chromium-driver"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; \
	fi

## fonts: Debian's DejaVu fonts, the Cyrillic font the conclusion PDF embeds (CONCLUSION_FONT_PATH)
fonts:
	@if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then \
	  echo "installing Debian fonts-dejavu-core"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    fonts-dejavu-core >/dev/null; \
	fi

## services: start PostgreSQL and Redis when they are down (this machine's own servers)
services:
	@bash scripts/services.sh

## test: set up, then run the whole suite (SQLite unless DATABASE_URL says otherwise) on
## TEST_WORKERS processes (pytest-xdist; each has its own test database and Redis database).
## One more than the cores: many tests wait on timers, browsers and other processes; work
## stealing keeps a worker from idling behind a long test (at most 16: one Redis db each).
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 16 ? n + 1 : 16 )))
test: setup browsers services
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## topology: the production topology on loopback (tests/e2e/test_topology.py: nginx, gunicorn,
## 2 media processes, the worker, coturn) on a fresh PostgreSQL database, played through by
## Chromium. Runs once (`.ci/run`, after the two suite passes); `make test` leaves it out.
TOPOLOGY_DATABASE_URL ?= $(if $(filter postgres%,$(DATABASE_URL)),$(DATABASE_URL),postgresql://postgres@127.0.0.1:5432/oblako_topology)
topology: setup browsers services topology-packages
	DATABASE_URL=$(TOPOLOGY_DATABASE_URL) $(PY) -m pytest --topology -n 0 -p no:cacheprovider $(PYTEST_ARGS)

## topology-packages: Debian's nginx and coturn for the topology test (their services stay off)
topology-packages:
	@if ! command -v nginx >/dev/null || ! command -v turnserver >/dev/null; then \
	  echo "installing Debian nginx and coturn"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    nginx coturn >/dev/null; \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(LOCK_VENV) instance .pytest_cache
