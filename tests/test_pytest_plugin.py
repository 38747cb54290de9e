"""The pytest plugin: a user's own suite gets isolated_db, and its database is left unchanged."""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

MODELS = '''
import os

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Propagation


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "plugin_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(200))
    text: Mapped[str] = mapped_column(sa.String(100), unique=True)


db = Database(os.environ.get("INNER_DATABASE_URL"), metadata=Base.metadata)


@db.transactional
def add(owner, *texts):
    for text in texts:
        db.session.add(Note(owner=owner, text=text))


@db.transactional(read_only=True)
def everything():
    return sorted(tuple(row) for row in db.session.execute(sa.select(Note.owner, Note.text)))


Propagation = Propagation
'''

SHUFFLING_CONFTEST = """
import os
import random


def pytest_collection_modifyitems(items):
    random.Random(int(os.environ["INNER_SEED"])).shuffle(items)
"""

SEED = [("seed", "seed")]
"""The row put into the table before the inner suite runs."""

COMMITTING_TESTS = '''
import pytest
import sqlalchemy as sa

from myapp.models import Note, Propagation, add, db, everything

SEED = [("seed", "seed")]


def mine(request, *texts):
    return sorted([*SEED, *((request.node.name, text) for text in texts)])


def test_commits(isolated_db, request):
    add(request.node.name, "shared", "one")
    add(request.node.name, "two")
    assert everything() == mine(request, "shared", "one", "two")


def test_rolls_back(isolated_db, request):
    add(request.node.name, "shared")
    with pytest.raises(ValueError), db.unit_of_work():
        db.session.add(Note(owner=request.node.name, text="undone"))
        db.session.flush()
        raise ValueError("the service failed")
    assert everything() == mine(request, "shared")


def test_nests(isolated_db, request):
    with db.unit_of_work():
        add(request.node.name, "shared")
        with pytest.raises(sa.exc.IntegrityError):
            with db.unit_of_work(propagation=Propagation.NESTED):
                add(request.node.name, "seed")
        with db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
            add(request.node.name, "independent")
    assert everything() == mine(request, "shared", "independent")


def test_recovers_from_a_failed_unit(isolated_db, request):
    with pytest.raises(sa.exc.IntegrityError):
        add(request.node.name, "seed")
    add(request.node.name, "shared")
    assert everything() == mine(request, "shared")


def test_runs_on_commit_hooks(isolated_db, request):
    done = []
    with db.unit_of_work() as unit:
        add(request.node.name, "shared")
        unit.on_commit(lambda: done.append("hook"))
    assert done == ["hook"]


def test_fails_after_committing(isolated_db, request):
    add(request.node.name, "shared")
    assert False, "this test fails on purpose"


def test_sees_the_isolated_connection(isolated_connection, request):
    add(request.node.name, "shared")
    assert isolated_connection.execute(sa.select(Note.text)).scalars().all().count("shared") == 1
'''

MORE_TESTS = '''
import pytest

from myapp.models import add, everything

SEED = [("seed", "seed")]


@pytest.mark.parametrize("n", range(6))
def test_parametrized(isolated_db, request, n):
    add(request.node.name, "shared", f"n{n}")
    mine = [(request.node.name, "shared"), (request.node.name, f"n{n}")]
    assert everything() == sorted([*SEED, *mine])


def test_without_the_plugin(request):
    assert not [name for name in request.fixturenames if "uow" in name or "isolated" in name]
'''

INI = """
[pytest]
flask_uow_database = myapp.models:db
pythonpath = .
filterwarnings = error
"""


def write_suite(pytester: pytest.Pytester, ini: str = INI) -> None:
    pytester.makeini(ini)
    pytester.mkpydir("myapp")
    pytester.makepyfile(**{"myapp/models": MODELS})
    pytester.makeconftest(SHUFFLING_CONFTEST)
    pytester.makepyfile(test_committing=COMMITTING_TESTS, test_more=MORE_TESTS)


def run_order(result: pytest.RunResult) -> list[str]:
    return re.findall(r"^(test_\S+::\S+) ", "\n".join(result.outlines), flags=re.MULTILINE)


def run_in_random_order(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, seed: int
) -> pytest.RunResult:
    monkeypatch.setenv("INNER_SEED", str(seed))
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=13, failed=1)
    return result


def committed_rows(url: str) -> list[tuple[str, str]] | None:
    """The rows of plugin_notes as a separate connection sees them, or None with no table."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("plugin_notes"):
                return None
            rows = connection.exec_driver_sql("SELECT owner, text FROM plugin_notes")
            return sorted((owner, text) for owner, text in rows)
    finally:
        engine.dispose()


def run_sql(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


outer_metadata = sa.MetaData()
plugin_notes = sa.Table(
    "plugin_notes",
    outer_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(200)),
    sa.Column("text", sa.String(100), unique=True),
)


def seed_table(url: str) -> None:
    """Create plugin_notes outside the plugin, holding the SEED row."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            outer_metadata.create_all(connection)
            connection.execute(plugin_notes.insert().values(owner="seed", text="seed"))
    finally:
        engine.dispose()


@pytest.fixture
def inner_url(backend_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The outer test's database, handed to the inner suite; plugin_notes is dropped after."""
    monkeypatch.setenv("INNER_DATABASE_URL", backend_url)
    yield backend_url
    run_sql(backend_url, "DROP TABLE IF EXISTS plugin_notes")


def test_suite_run_twice_in_random_order_leaves_existing_rows_unchanged(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, inner_url: str
) -> None:
    seed_table(inner_url)
    write_suite(pytester)
    first = run_in_random_order(pytester, monkeypatch, seed=1)
    assert committed_rows(inner_url) == SEED
    second = run_in_random_order(pytester, monkeypatch, seed=2)
    assert committed_rows(inner_url) == SEED
    assert sorted(run_order(first)) == sorted(run_order(second))
    assert run_order(first) != run_order(second)


def test_tables_created_by_the_plugin_are_dropped_at_the_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, inner_url: str
) -> None:
    write_suite(pytester)
    pytester.makepyfile(
        test_more="""
        from myapp.models import add, everything

        def test_adds(isolated_db):
            add("me", "mine")
            assert everything() == [("me", "mine")]
        """
    )
    pytester.makepyfile(test_committing="")
    monkeypatch.setenv("INNER_SEED", "0")
    pytester.runpytest().assert_outcomes(passed=1)
    assert committed_rows(inner_url) is None


def test_drop_all_false_keeps_the_created_tables_empty(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, inner_url: str
) -> None:
    write_suite(pytester, INI + "flask_uow_drop_all = false\n")
    pytester.makepyfile(test_committing="")
    pytester.makepyfile(
        test_more="""
        from myapp.models import add, everything

        def test_adds(isolated_db):
            add("me", "mine")
            assert everything() == [("me", "mine")]
        """
    )
    monkeypatch.setenv("INNER_SEED", "0")
    pytester.runpytest().assert_outcomes(passed=1)
    assert committed_rows(inner_url) == []


def test_missing_configuration_fails_with_what_to_add(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_needs_it(isolated_db):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*flask_uow_database = \"myapp.models:db\"*", "*def uow_database():*"]
    )


def test_configuration_that_is_not_a_database_fails_clearly(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nflask_uow_database = os:path\n")
    pytester.makepyfile("def test_needs_it(isolated_db):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*flask_uow_database = 'os:path' is not a flask_uow.Database*"])


def test_overriding_uow_database_in_conftest_points_the_plugin_at_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, inner_url: str
) -> None:
    seed_table(inner_url)
    write_suite(pytester, "[pytest]\npythonpath = .\nfilterwarnings = error\n")
    pytester.makeconftest(
        SHUFFLING_CONFTEST
        + textwrap.dedent(
            """
            import pytest
            from myapp.models import db

            @pytest.fixture(scope="session")
            def uow_database():
                return db
            """
        )
    )
    monkeypatch.setenv("INNER_SEED", "3")
    pytester.runpytest().assert_outcomes(passed=13, failed=1)
    assert committed_rows(inner_url) == SEED


def test_suite_without_the_plugins_fixtures_is_unaffected(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        """
        def test_plain(request):
            assert "isolated_db" not in request.fixturenames
        """
    )
    result = pytester.runpytest("--strict-config")
    result.assert_outcomes(passed=1)


FLASK_APP = '''
import os

import sqlalchemy as sa
from flask import Flask, request

from myapp.models import Note, db


def create_app(url=None):
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=url or os.environ["INNER_DATABASE_URL"], UOW_PER_REQUEST=True
    )
    db.init_app(app)

    @app.post("/notes")
    def post_note():
        db.session.add(Note(owner=request.form["owner"], text=request.form["text"]))
        return "created", 201

    @app.get("/notes")
    def list_notes():
        return [list(row) for row in db.session.execute(sa.select(Note.owner, Note.text))]

    return app
'''

FLASK_TESTS = '''
import pytest


@pytest.fixture
def client(uow_app, isolated_db):
    return uow_app.test_client()


@pytest.mark.parametrize("n", range(3))
def test_posts_a_note(client, n):
    assert client.post("/notes", data={"owner": f"t{n}", "text": "shared"}).status_code == 201
    assert client.get("/notes").json == [[f"t{n}", "shared"]]


def test_database_comes_from_the_app(isolated_db, uow_app):
    assert isolated_db.url is None
    url = isolated_db.engine.url.render_as_string(hide_password=False)
    assert url == uow_app.config["UOW_DATABASE_URL"]
'''


@pytest.mark.flask
def test_flask_app_option_isolates_requests_with_per_request_units(
    pytester: pytest.Pytester, inner_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INNER_DATABASE_URL")
    pytester.mkpydir("myapp")
    pytester.makepyfile(
        **{
            "myapp/models": MODELS.replace('os.environ.get("INNER_DATABASE_URL")', "None"),
            "myapp/web": FLASK_APP,
        }
    )
    pytester.makeini(
        "[pytest]\nflask_uow_app = myapp.web:create_app\npythonpath = .\nfilterwarnings = error\n"
    )
    pytester.makepyfile(test_web=FLASK_TESTS)
    monkeypatch.setenv("INNER_DATABASE_URL", inner_url)
    pytester.runpytest().assert_outcomes(passed=4)
    assert committed_rows(inner_url) is None


PER_BACKEND_CONFTEST = """
import os

import pytest

from myapp.web import create_app


@pytest.fixture(params=["first", "second"])
def database_url(request):
    return os.environ[f"INNER_{request.param.upper()}_URL"]


@pytest.fixture
def uow_app(database_url):
    app = create_app(database_url)
    yield app
    app.extensions["flask-uow"].dispose()
"""


@pytest.mark.flask
def test_function_scoped_app_following_a_parametrized_url_isolates_each_database(
    pytester: pytest.Pytester,
    inner_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    second_url = f"sqlite:///{tmp_path / 'second.db'}"
    monkeypatch.delenv("INNER_DATABASE_URL")
    monkeypatch.setenv("INNER_FIRST_URL", inner_url)
    monkeypatch.setenv("INNER_SECOND_URL", second_url)
    pytester.mkpydir("myapp")
    pytester.makepyfile(
        **{
            "myapp/models": MODELS.replace('os.environ.get("INNER_DATABASE_URL")', "None"),
            "myapp/web": FLASK_APP,
        }
    )
    pytester.makeini("[pytest]\npythonpath = .\nfilterwarnings = error\n")
    pytester.makeconftest(PER_BACKEND_CONFTEST)
    pytester.makepyfile(test_web=FLASK_TESTS)
    pytester.runpytest().assert_outcomes(passed=8)
    assert committed_rows(inner_url) is None
    assert committed_rows(second_url) is None


XDIST_CONFTEST = """
import os

import pytest

from flask_uow.testing import scratch_database
from myapp.models import db


@pytest.fixture(scope="session")
def uow_database():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{os.environ['INNER_PREFIX']}_{worker}"
    with scratch_database(os.environ["INNER_DATABASE_URL"], name) as url:
        db.url = url
        yield db
"""

XDIST_TESTS = """
import os

import pytest

from myapp.models import add, everything


@pytest.mark.parametrize("n", range(8))
def test_runs_in_this_workers_database(isolated_db, n):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert worker in isolated_db.engine.url.database
    add(worker, "shared")
    assert everything() == [(worker, "shared")]
"""


def test_xdist_workers_each_get_their_own_scratch_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, inner_url: str, backend_name: str
) -> None:
    pytest.importorskip("xdist")
    prefix = f"flask_uow_plugin_{secrets.token_hex(4)}"
    monkeypatch.setenv("INNER_PREFIX", prefix)
    pytester.makeini("[pytest]\npythonpath = .\nfilterwarnings = error\n")
    pytester.mkpydir("myapp")
    pytester.makepyfile(**{"myapp/models": MODELS})
    pytester.makeconftest(XDIST_CONFTEST)
    pytester.makepyfile(test_workers=XDIST_TESTS)
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=8)
    assert committed_rows(inner_url) is None
    if backend_name != "sqlite":
        engine = sa.create_engine(inner_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            query = (
                "SELECT datname FROM pg_database"
                if backend_name == "postgresql"
                else "SELECT schema_name FROM information_schema.schemata"
            )
            names = connection.exec_driver_sql(query).scalars().all()
        engine.dispose()
        assert [name for name in names if name.startswith(prefix)] == []


def test_in_memory_sqlite_database_is_isolated_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INNER_DATABASE_URL", "sqlite://")
    monkeypatch.setenv("INNER_SEED", "4")
    write_suite(pytester)
    pytester.makepyfile(test_committing="")
    pytester.makepyfile(
        test_more="""
        import pytest

        from myapp.models import add, everything

        @pytest.mark.parametrize("n", range(3))
        def test_adds(isolated_db, n):
            add(f"t{n}", "shared")
            assert everything() == [(f"t{n}", "shared")]
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)


ASYNC_TESTS = '''
import pytest
import sqlalchemy as sa

from myapp.models import Note, db

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@db.transactional
async def add_async(owner, text):
    db.session.add(Note(owner=owner, text=text))


async def test_commits_in_an_async_unit(isolated_db_async, request):
    await add_async(request.node.name, "async")
    async with db.unit_of_work(read_only=True):
        texts = list(await db.async_session.scalars(sa.select(Note.text)))
    assert sorted(texts) == ["async", "seed"]


async def test_sees_nothing_of_the_other_test(isolated_db_async, request):
    async with db.unit_of_work(read_only=True):
        texts = list(await db.async_session.scalars(sa.select(Note.text)))
    assert texts == ["seed"]
'''


def test_async_tests_get_isolated_db_async_and_leave_the_rows_unchanged(
    pytester: pytest.Pytester, inner_url: str
) -> None:
    seed_table(inner_url)
    pytester.makeini(INI)
    pytester.mkpydir("myapp")
    pytester.makepyfile(**{"myapp/models": MODELS})
    pytester.makepyfile(test_async=ASYNC_TESTS)
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=2)
    assert committed_rows(inner_url) == SEED
