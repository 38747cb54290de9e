"""pytest fixtures that run each test's units of work in a transaction that is undone.

Loaded by pytest wherever flask-uow is installed (the ``pytest11`` entry point). It defines
no autouse fixtures, and this module imports nothing but pytest until a test requests one
of its fixtures, so suites that do not use it are unaffected. See ``docs/testing.md``.

Point it at your Database with ``flask_uow_database = "myapp.models:db"`` in the pytest
configuration, or ``flask_uow_app = "myapp:create_app"`` for a Flask app, or by
overriding the ``uow_database`` / ``uow_app`` fixtures in ``conftest.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Engine, Table
    from sqlalchemy.engine import Connection

    from ._database import Database

DATABASE_OPTION = "flask_uow_database"
APP_OPTION = "flask_uow_app"
CREATE_ALL_OPTION = "flask_uow_create_all"
DROP_ALL_OPTION = "flask_uow_drop_all"

_HOW_TO_CONFIGURE = f"""\
The isolated_db fixture needs to know your flask_uow.Database. Either name it in the pytest
configuration (pyproject.toml):

    [tool.pytest.ini_options]
    {DATABASE_OPTION} = "myapp.models:db"      # module:attribute of your Database
    # or, for a Flask app that called db.init_app(app):
    {APP_OPTION} = "myapp:create_app"          # a Flask app, or a factory taking no arguments

or define one of these fixtures in conftest.py:

    @pytest.fixture(scope="session")
    def uow_database():
        return db

    @pytest.fixture(scope="session")
    def uow_app():
        return create_app({{"UOW_DATABASE_URL": "sqlite:///test.db"}})"""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ini options naming the Database and app that the fixtures isolate."""
    parser.addini(
        DATABASE_OPTION,
        "flask-uow: import path of the Database that isolated_db isolates, like 'myapp.models:db'.",
        default="",
    )
    parser.addini(
        APP_OPTION,
        "flask-uow: import path of a Flask app, or of a factory taking no arguments, "
        "like 'myapp:create_app'; isolated_db then runs in its app context.",
        default="",
    )
    parser.addini(
        CREATE_ALL_OPTION,
        "flask-uow: create missing tables of the Database's metadata once per session "
        "(default true).",
        type="bool",
        default=True,
    )
    parser.addini(
        DROP_ALL_OPTION,
        "flask-uow: drop the tables that uow_tables created at the end of the session "
        "(default true); tables that existed before are never dropped.",
        type="bool",
        default=True,
    )


@pytest.fixture(scope="session")
def _uow_configured_app(pytestconfig: pytest.Config) -> Flask | None:
    """The app named by the ``flask_uow_app`` option, built once per session."""
    path = pytestconfig.getini(APP_OPTION)
    if not path:
        return None
    from ._frameworks import framework_of

    target = _import(path, APP_OPTION)
    is_app = framework_of(target) == "flask"
    app = target if is_app else target() if callable(target) else None
    if framework_of(app) != "flask":
        pytest.fail(
            f"{APP_OPTION} = {path!r} is neither a Flask app nor a factory returning one "
            f"(got {app!r}).",
            pytrace=False,
        )
    return app  # type: ignore[return-value]


@pytest.fixture
def uow_app(_uow_configured_app: Flask | None) -> Flask | None:
    """Your Flask app, or None (the default) for a Database used without Flask.

    Read from the ``flask_uow_app`` option (an app, or a factory called once per session).
    Override this fixture in ``conftest.py`` to build the app with test configuration, with
    any scope. When it is an app, ``isolated_db`` runs inside its app context.
    """
    return _uow_configured_app


@pytest.fixture
def uow_database(pytestconfig: pytest.Config, uow_app: Flask | None) -> Database:
    """The Database that ``isolated_db`` isolates.

    Read from the ``flask_uow_database`` option, else taken from ``uow_app`` (the Database
    it was registered with by ``init_app``). Override this fixture in ``conftest.py`` to
    return your Database directly, with any scope.
    """
    from ._database import Database

    path = pytestconfig.getini(DATABASE_OPTION)
    if path:
        target = _import(path, DATABASE_OPTION)
        if not isinstance(target, Database):
            pytest.fail(
                f"{DATABASE_OPTION} = {path!r} is not a flask_uow.Database (got {target!r}).",
                pytrace=False,
            )
        return target
    if uow_app is not None:
        from ._frameworks import EXTENSION_KEY

        registered = uow_app.extensions.get(EXTENSION_KEY)
        if not isinstance(registered, Database):
            pytest.fail(
                f"The Flask app {uow_app.name!r} from the uow_app fixture has no flask-uow "
                "Database: call db.init_app(app) in its factory, or set "
                f"{DATABASE_OPTION} in the pytest configuration.",
                pytrace=False,
            )
        return registered
    pytest.fail(_HOW_TO_CONFIGURE, pytrace=False)


@pytest.fixture(scope="session")
def _uow_schemas(pytestconfig: pytest.Config) -> Iterator[_Schemas]:
    """Tables created by ``uow_tables`` during the session, dropped at its end."""
    schemas = _Schemas()
    try:
        yield schemas
    finally:
        schemas.close(drop=bool(pytestconfig.getini(DROP_ALL_OPTION)))


@pytest.fixture
def uow_tables(
    pytestconfig: pytest.Config,
    uow_database: Database,
    uow_app: Flask | None,
    _uow_schemas: _Schemas,
) -> None:
    """Create the Database's missing tables, once per database and session.

    At the end of the session it drops the tables it created (never tables that existed
    before) and closes the Database's pooled connections. Turn creation off with
    ``flask_uow_create_all = false`` and dropping with ``flask_uow_drop_all = false``. To
    build the schema another way (Alembic migrations), override this fixture to request a
    session-scoped fixture of yours that does it.
    """
    if not pytestconfig.getini(CREATE_ALL_OPTION):
        return
    with _app_context(uow_app):
        _uow_schemas.ensure(uow_database)


@pytest.fixture
def isolated_connection(
    uow_database: Database, uow_app: Flask | None, uow_tables: None
) -> Iterator[Connection]:
    """The connection of this test's ``isolated()`` block, for assertions in raw SQL.

    Requesting it isolates the test exactly as ``isolated_db`` does.
    """
    from .testing import isolated

    with _app_context(uow_app), isolated(uow_database) as connection:
        yield connection


@pytest.fixture
def isolated_db(uow_database: Database, isolated_connection: Connection) -> Database:
    """Your Database, with every unit of work of this test inside ``isolated()``.

    Units commit, roll back and nest as in production, but all of it is undone when the
    test ends, pass or fail. With a ``uow_app``, the test runs inside its app context.
    """
    return uow_database


@pytest.fixture
async def isolated_db_async(
    uow_database: Database, uow_app: Flask | None, uow_tables: None, anyio_backend: object
) -> AsyncIterator[Database]:
    """``isolated_db`` for async tests: every async unit of the test runs inside
    ``isolated_async()``, and all of it is undone when the test ends.

    It is an async fixture run by anyio's pytest plugin (installed with anyio): mark the
    test (or module) ``@pytest.mark.anyio``. The async engine's connections are closed
    after each test, since each test may run on an event loop of its own.
    """
    from .testing import isolated_async

    with _app_context(uow_app):
        try:
            async with isolated_async(uow_database):
                yield uow_database
        finally:
            await uow_database.async_engine.dispose()


def _import(path: str, option: str) -> object:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        pytest.fail(
            f"{option} = {path!r} must be 'module:attribute', like 'myapp.models:db'.",
            pytrace=False,
        )
    try:
        target: object = importlib.import_module(module_name)
        for name in attribute.split("."):
            target = getattr(target, name)
    except (ImportError, AttributeError) as error:
        pytest.fail(
            f"{option} = {path!r} could not be imported: {error!r}. Make it importable "
            "(install your project, or add its folder to 'pythonpath' in the pytest "
            "configuration).",
            pytrace=False,
        )
    return target


def _app_context(app: Flask | None) -> AbstractContextManager[object]:
    return app.app_context() if app is not None else nullcontext()


class _Schemas:
    """Which databases got their tables this session, and the tables that were created."""

    def __init__(self) -> None:
        self.created: dict[tuple[object, ...], tuple[Engine, list[Table]]] = {}
        self.databases: list[Database] = []

    def ensure(self, db: Database) -> None:
        metadata = db.metadata
        if metadata is None:
            pytest.fail(
                "uow_tables creates tables from the Database's metadata, and it has none: "
                "pass metadata=Base.metadata to Database(), set flask_uow_create_all = false "
                "in the pytest configuration, or override the uow_tables fixture.",
                pytrace=False,
            )
        engine = db.engine
        url = engine.url
        key: tuple[object, ...] = (id(metadata), url.render_as_string(hide_password=False))
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            key = (*key, id(engine))  # every engine has an in-memory database of its own
        if key in self.created:
            return
        import sqlalchemy as sa

        inspector = sa.inspect(engine)
        missing = [
            table
            for table in metadata.sorted_tables
            if not inspector.has_table(table.name, schema=table.schema)
        ]
        if missing:
            metadata.create_all(engine, tables=missing)
        self.created[key] = (engine, missing)
        if all(known is not db for known in self.databases):
            self.databases.append(db)

    def close(self, *, drop: bool) -> None:
        import sqlalchemy as sa

        try:
            if drop:
                for engine, tables in reversed(self.created.values()):
                    if not tables:
                        continue
                    try:
                        tables[0].metadata.drop_all(engine, tables=tables)
                    except sa.exc.OperationalError:
                        # The database itself is gone (a per-test scratch database or a
                        # deleted SQLite folder): there is nothing left to drop.
                        continue
        finally:
            for engine, _ in self.created.values():
                engine.dispose()
            for db in self.databases:
                db.dispose()
