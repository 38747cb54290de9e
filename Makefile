# flask-uow: `make run` serves the ledger example, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
APP := ledger.app:create_app

.PHONY: run worker test lint typecheck pytest pytest-sqlalchemy20 pytest-no-flask dist-check bench bench-quick stress replica clean
.PHONY: docs docs-screenshot

$(STAMP): pyproject.toml $(wildcard examples/ledger/pyproject.toml)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "flask-uow needs Python 3.11 or newer: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,ecosystem]" $(if $(wildcard examples/ledger/pyproject.toml),-e examples/ledger)
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app $(APP) ledger migrate
	$(BIN)/flask --app $(APP) run --host 127.0.0.1 --port 5000

# A Celery worker for the ledger's outbox messages; run the app with the same
# CELERY_BROKER_URL (`CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// make run`).
worker: $(STAMP)
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//} \
		$(BIN)/celery -A ledger.worker worker --loglevel INFO

test: lint typecheck docs pytest pytest-sqlalchemy20 pytest-no-flask dist-check

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/ledger/ledger examples/ledger/tests examples/ledger/migrations

# Branch coverage of flask_uow, at least 95% ([tool.coverage.*] in pyproject.toml). coverage
# starts before pytest, because pytest imports the flask-uow plugin (an entry point) before
# pytest-cov could start measuring, and the plugin's own lines would count as missed.
pytest: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -n 2 --dist loadgroup -m "not serial" $(PYTEST_ARGS)
	$(BIN)/coverage run -m pytest -m serial $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

# The release artefacts: build the sdist and wheel into dist/ and check their metadata.
dist-check: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The documentation site (Sphinx, MyST, autodoc) into docs/_build/html: warnings are errors and
# every cross-reference must resolve (nitpicky); -E reads every page again, so a warning of an
# unchanged page is not hidden by an earlier build. Links to Python, SQLAlchemy and Flask use
# the inventories committed in docs/_inventories/ (scripts/docs_inventories.sh): no network.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -E -q -b html docs docs/_build/html

# The landing page as a browser draws it, for the README and reviews (commit the PNG).
docs-screenshot: docs
	bash scripts/chromium.sh --window-size=1280,900 --screenshot=docs/img/docs-landing.png \
		file://$(CURDIR)/docs/_build/html/index.html

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py --quick

stress: $(STAMP)
	$(BIN)/python tests/reliability/run_stress.py

# A streaming replica of the local PostgreSQL on 5433 and PgBouncer on 6432 (needs root).
replica:
	bash scripts/replica.sh start

# The docs site and the wheel do not depend on the SQLAlchemy release or on Flask being absent:
# the main pytest run checks them, the two runs below leave them out.
SITE_TESTS := tests/test_docs_site.py tests/test_wheel.py

# The library's own tests again on the newest SQLAlchemy 2.0, in a second virtualenv. The
# random models (their search budget is spent once, in the main run, and ten times over in
# make stress) and the serial tests of the replica and of Celery (routing and broker code
# that does not depend on SQLAlchemy's release) are left to the main run; the serial
# timeout tests, which do, run here too. Each dialect runs once: PgBouncer is PostgreSQL's
# dialect and driver again, so its cases (-k "not pgbouncer") are left to the main run.
MAIN_RUN_ONLY := tests/test_stateful.py tests/test_stateful_faults.py
SERIAL_20 := tests/test_timeouts.py tests/test_async_timeouts.py
VENV20 := .venv-sqlalchemy20
STAMP20 := $(VENV20)/.installed-stamp

$(STAMP20): pyproject.toml
	$(PYTHON) -m venv $(VENV20)
	$(VENV20)/bin/python -m pip install --quiet --upgrade pip
	$(VENV20)/bin/python -m pip install --quiet -e ".[test,ecosystem]" "SQLAlchemy>=2.0.22,<2.1"
	@touch $(STAMP20)

pytest-sqlalchemy20: $(STAMP20)
	$(VENV20)/bin/python -c 'import sqlalchemy, sys; print("SQLAlchemy", sqlalchemy.__version__); sys.exit(not sqlalchemy.__version__.startswith("2.0."))'
	$(VENV20)/bin/pytest tests --ignore=tests/reliability -p no:cacheprovider -n 2 --dist loadgroup \
		-m "not serial" -k "not pgbouncer" $(PYTEST_ARGS) $(SITE_TESTS:%=--ignore=%) \
		$(MAIN_RUN_ONLY:%=--ignore=%)
	$(VENV20)/bin/pytest $(SERIAL_20) -p no:cacheprovider -m serial -k "not pgbouncer" \
		$(PYTEST_ARGS)

# The core's tests in a virtualenv where Flask, Werkzeug and click are not installed: the core
# must import and work without them. Tests that need Flask are left out: files named
# tests/test_*flask*.py, and tests marked @pytest.mark.flask in the other files (their Flask
# imports sit inside the tests), and the modules the --ignore list below names (they need
# Celery, Alembic or the OpenTelemetry SDK, or import a Flask test module). A Flask import
# anywhere else fails this run.
VENVNF := .venv-noflask
STAMPNF := $(VENVNF)/.installed-stamp
NO_FLASK_TEST_DEPS := "SQLAlchemy>=2.0.22,<2.2" "pytest>=8" "pytest-xdist>=3.5" \
	"hypothesis>=6.100" "psycopg[binary]>=3.1" "PyMySQL>=1.1" \
	"greenlet>=3" "aiosqlite>=0.20" "aiomysql>=0.2" "anyio>=4.4"

$(STAMPNF): pyproject.toml
	$(PYTHON) -m venv $(VENVNF)
	$(VENVNF)/bin/python -m pip install --quiet --upgrade pip
	$(VENVNF)/bin/python -m pip install --quiet --no-deps -e .
	$(VENVNF)/bin/python -m pip install --quiet $(NO_FLASK_TEST_DEPS)
	@touch $(STAMPNF)

pytest-no-flask: $(STAMPNF)
	@$(VENVNF)/bin/python -c 'import importlib.util as u, sys; found = [n for n in ("flask", "werkzeug", "click") if u.find_spec(n)]; sys.exit(f"$(VENVNF) must not have {found} installed" if found else 0)'
	@! $(VENVNF)/bin/python -c 'import flask' 2>/dev/null
	# SQLite only (CI unset, so no server is required): the point is the missing Flask.
	CI= TEST_POSTGRESQL_URL= TEST_MARIADB_URL= TEST_REPLICA_URL= TEST_PGBOUNCER_URL= \
		$(VENVNF)/bin/pytest tests --ignore=tests/reliability \
		--ignore-glob='tests/test_*flask*.py' --ignore=tests/test_docs.py \
		--ignore=tests/test_example_otel_prometheus.py --ignore=tests/test_otel.py \
		$(SITE_TESTS:%=--ignore=%) \
		--ignore=tests/test_outbox_celery.py --ignore=tests/test_outbox_otel.py \
		--ignore=tests/test_outbox_migrations.py --ignore=tests/test_replica_faults.py \
		--ignore=tests/test_outbox_dispose.py --ignore=tests/test_outbox_quart.py \
		-m 'not flask' -p no:cacheprovider -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(VENV20) $(VENVNF) .mypy_cache .pytest_cache .ruff_cache .hypothesis build dist docs/_build
