"""Flask integration: per-app engines, a unit per request, the teardown safety net, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, Response, abort, stream_with_context

from flask_uow import Database, UnitOfWorkError, UnitOfWorkWarning

from .conftest import checked_out, committed_names
from .models import Base, Item

pytestmark = pytest.mark.flask


def make_app(url: str, *, per_request: bool, name: str = "app") -> Flask:
    app = Flask(name)
    app.config.update(UOW_DATABASE_URL=url, UOW_PER_REQUEST=per_request, TESTING=True)
    return app


@pytest.fixture
def db() -> Database:
    return Database(metadata=Base.metadata)


@pytest.fixture
def per_request_app(db: Database, backend_url: str) -> Iterator[Flask]:
    app = make_app(backend_url, per_request=True)
    db.init_app(app)

    @db.transactional
    def add_item(name: str) -> None:
        db.session.add(Item(name=name))

    @app.post("/items/<name>/<int:status>")
    def create(name: str, status: int) -> tuple[str, int]:
        add_item(name)
        return "done", status

    @app.post("/items/<name>/fail")
    def fail(name: str) -> str:
        add_item(name)
        raise RuntimeError("view failed")

    @app.post("/items/<name>/abort")
    def aborted(name: str) -> str:
        add_item(name)
        abort(409)

    @app.get("/nothing")
    def nothing() -> str:
        return "no database here"

    @app.get("/same-session")
    def same_session() -> dict[str, bool]:
        request_session = db.session

        @db.transactional
        def service() -> bool:
            return db.session is request_session

        return {"same": service()}

    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        assert checked_out(db) == 0
        db.drop_all()
    db.dispose()


@pytest.mark.parametrize("status", [200, 201, 302, 399])
def test_per_request_unit_commits_responses_below_400(
    per_request_app: Flask, backend_url: str, status: int
) -> None:
    observer = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    response = per_request_app.test_client().post(f"/items/ok/{status}")
    assert response.status_code == status
    assert committed_names(observer) == ["ok"]
    observer.dispose()


@pytest.mark.parametrize("path", ["/items/x/400", "/items/x/404", "/items/x/503", "/items/x/abort"])
def test_per_request_unit_rolls_back_error_responses(
    per_request_app: Flask, backend_url: str, path: str
) -> None:
    observer = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    response = per_request_app.test_client().post(path)
    assert response.status_code >= 400
    assert committed_names(observer) == []
    observer.dispose()


def test_an_exception_in_a_view_rolls_back_the_request(
    per_request_app: Flask, backend_url: str
) -> None:
    observer = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    per_request_app.testing = False
    response = per_request_app.test_client().post("/items/x/fail")
    assert response.status_code == 500
    assert committed_names(observer) == []
    observer.dispose()


def test_a_request_that_touches_no_table_opens_no_connection(
    per_request_app: Flask, db: Database
) -> None:
    checkouts: list[object] = []
    with per_request_app.app_context():
        sa.event.listen(db.engine, "checkout", lambda *args: checkouts.append(args))
    assert per_request_app.test_client().get("/nothing").status_code == 200
    assert checkouts == []


def test_a_request_for_an_unknown_url_answers_404_through_async_hooks_and_opens_no_unit(
    per_request_app: Flask, db: Database
) -> None:
    seen: list[object] = []

    @per_request_app.before_request
    async def note_the_unit() -> None:
        seen.append(db.current)

    assert per_request_app.test_client().get("/no/such/page").status_code == 404
    assert seen == [None]  # the hook ran in its own loop, outside the request's sync unit
    with per_request_app.app_context():
        assert checked_out(db) == 0


def test_service_units_join_the_request_unit(per_request_app: Flask) -> None:
    assert per_request_app.test_client().get("/same-session").get_json() == {"same": True}


def test_abandoned_streaming_response_leaves_no_unit_and_no_connection(
    db: Database, backend_url: str
) -> None:
    app = make_app(backend_url, per_request=False)
    db.init_app(app)
    ended: list[str] = []

    @app.get("/stream")
    def stream() -> Response:
        def rows() -> Iterator[str]:
            with db.unit_of_work() as uow:
                uow.on_rollback(lambda: ended.append("rolled back"))
                for number in range(1000):
                    db.session.execute(sa.select(sa.literal(number)))
                    yield f"{number}\n"

        return Response(stream_with_context(rows()))

    response = app.test_client().get("/stream", buffered=False)
    first = next(iter(response.response))
    assert first == b"0\n"
    response.close()
    assert ended == ["rolled back"]
    with app.app_context():
        assert db.current is None
        assert checked_out(db) == 0
    db.dispose()


def test_a_unit_left_open_is_rolled_back_at_teardown_with_a_warning_naming_where(
    db: Database, backend_url: str
) -> None:
    app = make_app(backend_url, per_request=False)
    db.init_app(app)

    @app.get("/leak")
    def leak() -> str:
        unit = db.unit_of_work()
        unit.__enter__()  # never exited: the bug this safety net is for
        db.session.execute(sa.select(1))
        return "leaked"

    with pytest.warns(UnitOfWorkWarning, match=r"test_flask\.py:\d+ in leak"):
        assert app.test_client().get("/leak").status_code == 200
    with app.app_context():
        assert checked_out(db) == 0
        assert db.stats.rolled_back == 1
    db.dispose()


def test_two_apps_with_different_databases_share_one_database_object(
    db: Database, tmp_path: Path
) -> None:
    first = make_app(f"sqlite:///{tmp_path / 'first.db'}", per_request=False, name="first")
    second = make_app(f"sqlite:///{tmp_path / 'second.db'}", per_request=False, name="second")
    db.init_app(first)
    db.init_app(second)
    for app, name in ((first, "one"), (second, "two")):
        with app.app_context():
            db.create_all()
            with db.unit_of_work():
                db.session.add(Item(name=name))
    for app, expected in ((first, ["one"]), (second, ["two"])):
        with app.app_context():
            assert committed_names(db.engine) == expected
    assert first.extensions["flask-uow"] is db
    db.dispose()


def test_outside_an_app_context_the_database_url_is_used(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'plain.db'}")
    app = make_app(f"sqlite:///{tmp_path / 'app.db'}", per_request=False)
    db.init_app(app)
    assert db.engine.url.database == str(tmp_path / "plain.db")
    with app.app_context():
        assert db.engine.url.database == str(tmp_path / "app.db")
    db.dispose()


def test_outside_an_app_context_without_url_the_error_says_to_push_one(db: Database) -> None:
    app = make_app("sqlite://", per_request=False)
    db.init_app(app)
    with pytest.raises(UnitOfWorkError, match="app.app_context"):
        db.engine  # noqa: B018


def test_an_unregistered_app_is_named_in_the_error(db: Database) -> None:
    app = make_app("sqlite://", per_request=False)
    db.init_app(app)
    with Flask("stranger").app_context():
        with pytest.raises(UnitOfWorkError, match="'stranger' is not registered.*init_app"):
            db.engine  # noqa: B018


def test_an_unregistered_app_uses_the_database_url_when_it_has_one(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'plain.db'}")
    db.init_app(make_app(f"sqlite:///{tmp_path / 'app.db'}", per_request=False))
    with Flask("stranger").app_context():
        assert db.engine.url.database == str(tmp_path / "plain.db")
    db.dispose()


def test_registering_an_app_twice_is_refused(db: Database) -> None:
    app = make_app("sqlite://", per_request=False)
    db.init_app(app)
    with pytest.raises(UnitOfWorkError, match="once per app"):
        db.init_app(app)


def test_the_default_url_is_app_db_in_the_instance_folder(db: Database, tmp_path: Path) -> None:
    app = Flask("default", instance_path=str(tmp_path / "instance"))
    db.init_app(app)
    with app.app_context():
        assert db.engine.url.database == str(tmp_path / "instance" / "app.db")
    db.dispose()


def test_engine_options_come_from_the_app_config(db: Database, tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'o.db'}", per_request=False)
    app.config["UOW_ENGINE_OPTIONS"] = {"pool_size": 3}
    db.init_app(app)
    with app.app_context():
        assert isinstance(db.engine.pool, sa.pool.QueuePool)
        assert db.engine.pool.size() == 3
    db.dispose()


def test_cli_creates_checks_and_drops_tables(db: Database, tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'cli.db'}", per_request=False)
    db.init_app(app)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["uow", "create-all"]).exit_code == 0
    with app.app_context():
        assert "uow_item" in sa.inspect(db.engine).get_table_names()
    check = runner.invoke(args=["uow", "check"])
    assert check.exit_code == 0
    assert "backend: sqlite" in check.output
    assert "server version: 3." in check.output
    assert "pool:" in check.output
    assert runner.invoke(args=["uow", "drop-all", "--yes"]).exit_code == 0
    with app.app_context():
        assert sa.inspect(db.engine).get_table_names() == []
    db.dispose()


def test_cli_check_exits_1_for_an_unreachable_database_and_masks_the_password(
    db: Database,
) -> None:
    app = make_app(
        "postgresql+psycopg://app:hunter2@127.0.0.1:1/nowhere?connect_timeout=2",
        per_request=False,
    )
    db.init_app(app)
    result = app.test_cli_runner().invoke(args=["uow", "check"])
    assert result.exit_code == 1
    assert "unreachable" in result.output
    assert "hunter2" not in result.output
    assert "***" in result.output
    db.dispose()


def test_flask_shell_context_has_db(db: Database) -> None:
    app = make_app("sqlite://", per_request=False)
    db.init_app(app)
    assert app.make_shell_context()["db"] is db


class ProjectApp(Flask):
    """An app class of the project's own package: a Flask app all the same."""


def test_an_app_of_a_flask_subclass_from_another_package_is_registered_as_a_flask_app(
    tmp_path: Path,
) -> None:
    db = Database(metadata=Base.metadata)
    app = ProjectApp(__name__, instance_path=str(tmp_path))
    app.config["UOW_DATABASE_URL"] = f"sqlite:///{tmp_path}/app.db"
    db.init_app(app)

    assert app.extensions["flask-uow"] is db
    assert "uow" in app.cli.commands
    with app.app_context():
        assert db.engine.url.database == f"{tmp_path}/app.db"
    db.dispose()


def test_init_app_with_an_object_that_is_no_app_says_which_apps_it_takes() -> None:
    with pytest.raises(UnitOfWorkError, match="a Flask or a Quart app.*'dict'.*flask, quart"):
        Database("sqlite://").init_app({"name": "app"})  # type: ignore[arg-type]
