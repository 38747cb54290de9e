"""Flask ``async def`` views: per-request async units, async services, and the safety net."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask, Response
from flask.views import MethodView

from flask_uow import Database, UnitOfWorkWarning

from .conftest import committed_names
from .models import Base, Item


class Boom(Exception):
    pass


@pytest.fixture
def db() -> Database:
    return Database(metadata=Base.metadata)


def _app(db: Database, backend_url: str, *, per_request: bool) -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_PER_REQUEST=per_request)
    db.init_app(app)
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.drop_all()
    db.dispose()


@pytest.fixture
def app(db: Database, backend_url: str) -> Iterator[Flask]:
    """A per-request app whose tables exist; without TESTING, so error handlers run."""
    yield from _app(db, backend_url, per_request=True)


def test_an_async_view_runs_in_the_request_unit_and_commits(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @db.transactional
    async def create(name: str) -> int:
        item = Item(name=name)
        db.session.add(item)
        await db.async_session.flush()
        return id(db.session)

    @app.post("/items/<name>")
    async def add(name: str) -> dict[str, object]:
        request_session = id(db.session)
        joined_session = await create(name)
        count = await db.async_session.scalar(sa.select(sa.func.count(Item.id)))
        return {"same_session": request_session == joined_session, "count": count}

    response = app.test_client().post("/items/first")
    assert response.status_code == 200
    assert response.json == {"same_session": True, "count": 1}
    assert committed_names(observer) == ["first"]


def test_an_async_view_answering_an_error_status_rolls_back(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.post("/refused")
    async def refused() -> tuple[str, int]:
        db.session.add(Item(name="refused"))
        await db.async_session.flush()
        return "no", 422

    assert app.test_client().post("/refused").status_code == 422
    assert committed_names(observer) == []


def test_an_async_view_that_raises_rolls_back_and_answers_500(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.post("/fail")
    async def fail() -> str:
        db.session.add(Item(name="partial"))
        await db.async_session.flush()
        raise Boom

    assert app.test_client().post("/fail").status_code == 500
    assert committed_names(observer) == []


def test_async_method_views_and_sync_views_share_one_app(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    class Items(MethodView):
        async def post(self) -> str:
            db.session.add(Item(name="async"))
            return "created"

    app.add_url_rule("/async-items", view_func=Items.as_view("async_items"))

    @app.post("/sync-items")
    def sync_add() -> str:
        db.session.add(Item(name="sync"))
        return "created"

    client = app.test_client()
    assert client.post("/async-items").status_code == 200
    assert client.post("/sync-items").status_code == 200
    assert client.post("/async-items").status_code == 500  # the unique name: rolled back
    assert committed_names(observer) == ["async", "sync"]


def test_a_joined_unit_leaked_by_an_async_view_dooms_the_request_with_a_warning(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.post("/leak")
    async def leak() -> str:
        db.session.add(Item(name="request"))
        await db.unit_of_work().__aenter__()  # joins the request's unit, never ends
        return "ok"

    @app.post("/fine")
    async def fine() -> str:
        db.session.add(Item(name="fine"))
        return "ok"

    client = app.test_client()
    with pytest.warns(UnitOfWorkWarning, match="test_flask_async.py"):
        assert client.post("/leak").status_code == 500
    assert client.post("/fine").status_code == 200
    assert committed_names(observer) == ["fine"]


def test_an_async_unit_leaked_without_per_request_units_is_rolled_back_at_teardown(
    db: Database, backend_url: str, observer: sa.Engine
) -> None:
    app_iterator = _app(db, backend_url, per_request=False)
    app = next(app_iterator)

    @app.post("/leak")
    async def leak() -> str:
        await db.unit_of_work().__aenter__()  # never ended
        db.session.add(Item(name="leaked"))
        await db.async_session.flush()
        return "ok"

    with pytest.warns(UnitOfWorkWarning, match="still open"):
        assert app.test_client().post("/leak").status_code == 200
    assert committed_names(observer) == []
    next(app_iterator, None)


def test_async_services_work_in_async_views_without_per_request_units(
    db: Database, backend_url: str, observer: sa.Engine
) -> None:
    app_iterator = _app(db, backend_url, per_request=False)
    app = next(app_iterator)

    @db.transactional
    async def create(name: str) -> None:
        db.session.add(Item(name=name))

    @app.post("/items/<name>")
    async def add(name: str) -> str:
        await create(name)
        return "created"

    assert app.test_client().post("/items/service").status_code == 200
    assert committed_names(observer) == ["service"]
    next(app_iterator, None)


def test_an_async_unit_leaked_by_an_async_before_request_hook_is_rolled_back_in_its_loop(
    db: Database, backend_url: str, observer: sa.Engine
) -> None:
    app_iterator = _app(db, backend_url, per_request=False)
    app = next(app_iterator)

    @app.before_request
    async def leak() -> None:
        await db.unit_of_work().__aenter__()  # never ended, outside any view
        db.session.add(Item(name="leaked"))
        await db.async_session.flush()

    @app.get("/")
    def index() -> str:
        return "ok"

    with pytest.warns(UnitOfWorkWarning, match="still open"):
        assert app.test_client().get("/").status_code == 200
    assert committed_names(observer) == []
    next(app_iterator, None)


def test_a_head_request_to_an_async_method_view_with_only_get_runs_in_the_request_unit(
    app: Flask, db: Database
) -> None:
    class Count(MethodView):
        async def get(self) -> str:
            return str(await db.async_session.scalar(sa.select(sa.func.count(Item.id))))

    app.add_url_rule("/count", view_func=Count.as_view("count"))
    client = app.test_client()
    assert client.head("/count").status_code == 200
    assert client.get("/count").text == "0"


def test_an_async_teardown_appcontext_function_runs_after_the_request(app: Flask) -> None:
    ended: list[str] = []

    @app.teardown_appcontext
    async def note(error: BaseException | None) -> None:
        ended.append("app context")

    @app.get("/")
    def index() -> str:
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert ended == ["app context"]


@pytest.mark.anyio
async def test_outside_an_app_context_async_units_run_on_the_database_url(
    backend_url: str, observer: sa.Engine, anyio_backend: str
) -> None:
    db = Database(backend_url, metadata=Base.metadata)
    db.init_app(Flask(__name__))
    db.drop_all()
    db.create_all()
    try:
        async with db.unit_of_work():
            db.session.add(Item(name="no app context"))
        assert committed_names(observer) == ["no app context"]
    finally:
        db.drop_all()
        await db.dispose_async()
        db.dispose()


class Conflict(Exception):
    pass


@pytest.mark.parametrize("after", ["raises", "answers 403"])
def test_an_after_request_hook_that_fails_the_response_rolls_an_async_view_back(
    app: Flask, db: Database, observer: sa.Engine, after: str
) -> None:
    @app.post("/items/<name>")
    async def add(name: str) -> str:
        db.session.add(Item(name=name))
        await db.async_session.flush()
        return "created"

    @app.after_request  # registered after init_app: runs before the request's unit ends
    def refuse(response: Response) -> Response:
        if after == "raises":
            raise Boom
        response.status_code = 403
        return response

    status = app.test_client().post("/items/lost").status_code
    assert status == (500 if after == "raises" else 403)
    assert committed_names(observer) == []


def test_an_async_after_request_hook_runs_in_an_async_views_unit(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.post("/items/<name>")
    async def add(name: str) -> str:
        db.session.add(Item(name=name))
        return "created"

    @app.after_request
    async def audit(response: Response) -> Response:
        db.session.add(Item(name="audit"))
        count = await db.async_session.scalar(sa.select(sa.func.count(Item.id)))
        response.headers["X-Count"] = str(count)
        return response

    response = app.test_client().post("/items/kept")
    assert (response.status_code, response.headers["X-Count"]) == (200, "2")
    assert committed_names(observer) == ["audit", "kept"]


def test_an_async_error_handler_of_an_async_view_queries_in_the_request_unit(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.errorhandler(Conflict)
    async def conflict(error: Conflict) -> tuple[str, int]:
        count = await db.async_session.scalar(sa.select(sa.func.count(Item.id)))
        return f"conflict; {count} items", 409

    @app.post("/items/<name>")
    async def add(name: str) -> str:
        db.session.add(Item(name=name))
        await db.async_session.flush()
        raise Conflict

    response = app.test_client().post("/items/partial")
    assert (response.status_code, response.text) == (409, "conflict; 1 items")
    assert committed_names(observer) == []


def test_a_sync_error_handler_of_an_async_view_can_query(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.errorhandler(Conflict)
    def conflict(error: Conflict) -> tuple[str, int]:
        count = db.session.scalar(sa.select(sa.func.count(Item.id)))
        return f"conflict; {count} items", 409

    @app.post("/items/<name>")
    async def add(name: str) -> str:
        if name == "taken":
            raise Conflict
        db.session.add(Item(name=name))
        return "created"

    client = app.test_client()
    assert client.post("/items/first").status_code == 200
    response = client.post("/items/taken")
    assert (response.status_code, response.text) == (409, "conflict; 1 items")
    assert committed_names(observer) == ["first"]


def test_the_event_loop_of_an_async_views_request_ends_with_the_request(
    app: Flask, db: Database, observer: sa.Engine
) -> None:
    @app.post("/items/<name>")
    async def add(name: str) -> str:
        db.session.add(Item(name=name))
        if name == "failing":
            raise Boom
        return "created"

    client = app.test_client()
    assert client.post("/items/kept").status_code == 200
    assert client.post("/items/failing").status_code == 500
    loops = [thread for thread in threading.enumerate() if thread.name == "flask-uow-request-loop"]
    assert loops == []
    assert committed_names(observer) == ["kept"]
