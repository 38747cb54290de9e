"""Requests end with the outcome their code asked for, on every path a Flask app can take."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, copy_current_request_context, g, redirect, request
from werkzeug.wrappers import Response as WerkzeugResponse

from flask_uow import Database, Propagation, UnitOfWorkError, UnitOfWorkWarning

from .conftest import checked_out, committed_names
from .models import Base, Item


class NotLoggedIn(Exception):
    """Raised by a view; its handler redirects to a login page."""


@pytest.fixture
def db() -> Database:
    return Database(metadata=Base.metadata)


@pytest.fixture
def app(db: Database, backend_url: str) -> Iterator[Flask]:
    """A per-request app whose tables exist; without TESTING, so error handlers run."""
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_PER_REQUEST=True)
    db.init_app(app)
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.drop_all()
    db.dispose()


def test_an_exception_handled_with_a_redirect_rolls_the_request_back(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.errorhandler(NotLoggedIn)
    def to_login(error: NotLoggedIn) -> WerkzeugResponse:
        return redirect("/login")

    @app.post("/write-then-fail")
    def write_then_fail() -> str:
        db.session.add(Item(name="partial"))
        db.session.flush()
        raise NotLoggedIn

    response = app.test_client().post("/write-then-fail")
    assert response.status_code == 302
    assert committed_names(observer) == []


def test_rollback_in_an_error_handler_lets_the_handler_query_and_answer(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.errorhandler(sa.exc.IntegrityError)
    def conflict(error: sa.exc.IntegrityError) -> tuple[str, int]:
        db.session.rollback()  # the Flask-SQLAlchemy habit
        count = db.session.scalar(sa.select(sa.func.count()).select_from(Item))
        return f"conflict; {count} items", 409

    @app.post("/duplicate")
    def duplicate() -> str:
        db.session.add_all([Item(name="same"), Item(name="same")])
        db.session.flush()
        return "unreachable"

    response = app.test_client().post("/duplicate")
    assert (response.status_code, response.text) == (409, "conflict; 0 items")
    assert committed_names(observer) == []


def test_rollback_in_a_view_that_was_going_to_commit_still_raises(
    app: Flask, db: Database
) -> None:
    errors: list[BaseException] = []

    @app.post("/rollback")
    def rollback() -> str:
        try:
            db.session.rollback()
        except UnitOfWorkError as error:
            errors.append(error)
        return "ok"

    assert app.test_client().post("/rollback").status_code == 200
    assert len(errors) == 1 and "set_rollback()" in str(errors[0])


def test_a_before_request_hook_registered_before_init_app_runs_inside_the_request_unit(
    db: Database, backend_url: str, observer: sa.Engine
) -> None:
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_PER_REQUEST=True)

    @app.before_request
    def load_user() -> None:
        g.count = db.session.scalar(sa.select(sa.func.count()).select_from(Item))

    db.init_app(app)
    with app.app_context():
        db.create_all()

    @app.get("/count")
    def count() -> str:
        return str(g.count)

    try:
        assert app.test_client().get("/count").text == "0"
    finally:
        with app.app_context():
            db.drop_all()
        db.dispose()


def test_a_joined_unit_leaked_in_a_request_is_rolled_back_with_a_warning_naming_it(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.post("/leak")
    def leak() -> str:
        unit = db.unit_of_work()
        unit.__enter__()  # never exited
        db.session.add(Item(name="leaked"))
        return "ok"

    @app.post("/fine")
    def fine() -> str:
        db.session.add(Item(name="fine"))
        return "ok"

    client = app.test_client()
    with pytest.warns(UnitOfWorkWarning, match=r"test_flask_requests\.py:\d+ in leak"):
        assert client.post("/leak").status_code == 500
    assert client.post("/fine").status_code == 200
    assert committed_names(observer) == ["fine"]


def test_a_savepoint_leaked_in_a_request_is_rolled_back_with_a_warning(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.post("/leak-savepoint")
    def leak_savepoint() -> str:
        db.session.add(Item(name="request"))
        unit = db.unit_of_work(propagation=Propagation.NESTED)
        unit.__enter__()  # never exited
        db.session.add(Item(name="in the savepoint"))
        db.session.flush()
        return "ok"

    with pytest.warns(UnitOfWorkWarning, match="leak_savepoint"):
        response = app.test_client().post("/leak-savepoint")
    assert response.status_code == 200
    assert committed_names(observer) == ["request"]


def test_a_propagated_error_rolls_back_the_request_and_the_unit_it_leaked_with_a_warning(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = True  # no response: teardown ends the request's unit

    @app.post("/leak-then-fail")
    def leak_then_fail() -> str:
        db.session.add(Item(name="request"))
        inner = db.unit_of_work()
        inner.__enter__()  # never exited
        db.session.add(Item(name="leaked"))
        raise NotLoggedIn

    with pytest.warns(UnitOfWorkWarning, match="leak_then_fail"):
        with pytest.raises(NotLoggedIn):
            app.test_client().post("/leak-then-fail")
    assert committed_names(observer) == []
    with app.app_context():
        assert db.current is None
    assert db.stats.rolled_back == 1


def test_a_unit_leaked_in_a_view_without_per_request_units_is_rolled_back_at_teardown(
    db: Database, backend_url: str, observer: sa.Engine
) -> None:
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url)
    db.init_app(app)
    with app.app_context():
        db.create_all()

    @app.post("/leak")
    def leak() -> str:
        with db.unit_of_work():
            inner = db.unit_of_work()
            inner.__enter__()  # never exited: the with block ends first
            db.session.add(Item(name="leaked"))
        return "ok"

    try:
        assert app.test_client().post("/leak").status_code == 500
        assert committed_names(observer) == []
        with app.app_context():
            assert db.current is None
    finally:
        with app.app_context():
            db.drop_all()
        db.dispose()


@pytest.mark.parametrize("propagate", [False, True], ids=["500", "propagated"])
def test_an_after_request_hook_that_raises_rolls_the_request_back(
    app: Flask, db: Database, observer: sa.Engine, propagate: bool
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = propagate

    @app.post("/items/<name>")
    def add(name: str) -> str:
        db.session.add(Item(name=name))
        db.session.flush()
        return "created"

    @app.after_request  # registered after init_app: runs before the request's unit ends
    def fail(response: WerkzeugResponse) -> WerkzeugResponse:
        raise NotLoggedIn

    if propagate:
        with pytest.raises(NotLoggedIn):
            app.test_client().post("/items/lost")
    else:
        assert app.test_client().post("/items/lost").status_code == 500
    assert committed_names(observer) == []
    with app.app_context():
        assert checked_out(db) == 0


# -- configuration ----------------------------------------------------------------------------


def test_sqlalchemy_database_uri_is_used_with_a_warning(tmp_path: Path) -> None:
    db = Database(metadata=Base.metadata)
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'legacy.db'}"
    with pytest.warns(UnitOfWorkWarning, match="SQLALCHEMY_DATABASE_URI as UOW_DATABASE_URL"):
        db.init_app(app)
    with app.app_context():
        assert db.engine.url.database == str(tmp_path / "legacy.db")
    db.dispose()


def test_conflicting_uow_and_sqlalchemy_urls_are_refused(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=f"sqlite:///{tmp_path / 'one.db'}",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'two.db'}",
    )
    with pytest.raises(UnitOfWorkError, match="remove SQLALCHEMY_DATABASE_URI"):
        Database().init_app(app)


def test_sqlalchemy_binds_are_refused_with_the_way_to_use_several_databases(
    tmp_path: Path,
) -> None:
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=f"sqlite:///{tmp_path / 'main.db'}",
        SQLALCHEMY_BINDS={"users": f"sqlite:///{tmp_path / 'users.db'}"},
    )
    with pytest.raises(UnitOfWorkError, match="make one Database per database"):
        Database().init_app(app)


def test_sqlalchemy_engine_options_and_echo_are_used_with_a_warning(tmp_path: Path) -> None:
    db = Database()
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 3},
        SQLALCHEMY_ECHO=True,
    )
    with pytest.warns(UnitOfWorkWarning, match="SQLALCHEMY_ECHO"):
        db.init_app(app)
    with app.app_context():
        assert db.engine.echo is True
        assert db.engine.pool.size() == 3  # type: ignore[attr-defined]
    db.dispose()


def test_a_misspelt_uow_key_warns_with_the_nearest_valid_name(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}", UOW_PER_REQEUST=True
    )
    with pytest.warns(UnitOfWorkWarning, match="Did you mean UOW_PER_REQUEST"):
        Database().init_app(app)


def test_a_relative_sqlite_path_is_relative_to_the_instance_folder(tmp_path: Path) -> None:
    db = Database()
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["UOW_DATABASE_URL"] = "sqlite:///relative.db"
    db.init_app(app)
    with app.app_context():
        assert db.engine.url.database == str(tmp_path / "instance" / "relative.db")
    db.dispose()


@pytest.mark.parametrize("enforced", [True, False])
def test_sqlite_foreign_keys_follow_uow_sqlite_foreign_keys(
    tmp_path: Path, enforced: bool
) -> None:
    db = Database()
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=f"sqlite:///{tmp_path / 'fk.db'}", UOW_SQLITE_FOREIGN_KEYS=enforced
    )
    db.init_app(app)
    with app.app_context(), db.unit_of_work(read_only=True):
        assert db.session.scalar(sa.text("PRAGMA foreign_keys")) == int(enforced)
    db.dispose()


def test_requests_of_the_read_only_methods_run_in_read_only_units(
    db: Database, backend_url: str
) -> None:
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=backend_url,
        UOW_PER_REQUEST=True,
        UOW_PER_REQUEST_READ_ONLY_METHODS=("get", "HEAD"),
    )
    db.init_app(app)

    @app.route("/read-only", methods=["GET", "POST"])
    def read_only() -> str:
        assert db.current is not None
        return str(db.current.read_only)

    try:
        client = app.test_client()
        assert client.get("/read-only").text == "True"
        assert client.post("/read-only").text == "False"
    finally:
        db.dispose()


@pytest.mark.parametrize("copies_contextvars", [False, True], ids=["thread", "executor"])
def test_a_thread_in_a_copied_request_context_leaves_the_requests_unit_to_the_request(
    app: Flask, db: Database, observer: sa.Engine, copies_contextvars: bool
) -> None:
    rolled_back: list[str] = []

    @app.post("/items/<name>")
    def add(name: str) -> str:
        db.session.add(Item(name=name))
        db.on_rollback(lambda: rolled_back.append(name))

        @copy_current_request_context
        def in_thread() -> str:
            return request.path

        run = contextvars.copy_context().run if copies_contextvars else (lambda f: f())
        with ThreadPoolExecutor(1) as executor:
            assert executor.submit(run, in_thread).result() == f"/items/{name}"
        return "created"

    assert app.test_client().post("/items/kept").status_code == 200
    assert rolled_back == []
    assert committed_names(observer) == ["kept"]


def test_a_copied_request_context_in_another_thread_leaves_the_causal_scope_to_the_request(
    primary_url: str,
) -> None:
    db = Database(metadata=Base.metadata)
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=primary_url,
        UOW_REPLICA_URLS="postgresql+psycopg://nobody@127.0.0.1:1/none",  # never reached
        SECRET_KEY="test secret",
    )
    db.init_app(app)

    @app.post("/items/<name>")
    def add(name: str) -> str:
        with db.unit_of_work():
            db.session.add(Item(name=name))
        in_thread = copy_current_request_context(lambda: request.path)
        with ThreadPoolExecutor(1) as executor:
            executor.submit(contextvars.copy_context().run, in_thread).result()
        return "created"

    try:
        with app.app_context():
            db.create_all()
        client = app.test_client()
        assert client.post("/items/written").status_code == 200
        assert client.get_cookie("session") is not None  # the write's position was saved
        assert db.own_replicas is None
        with app.app_context():
            replicas = db.replicas
            assert replicas is not None
            assert replicas.current_position() is None  # the request's scope ended with it
    finally:
        with app.app_context():
            db.drop_all()
        db.dispose()
