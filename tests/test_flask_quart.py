"""Quart (built on Flask): per-request async units, served by hypercorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from flask import Flask
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, copy_current_request_context, request

from flask_uow import Database, UnitOfWorkError, UnitOfWorkWarning

from .conftest import committed_names
from .models import Base, Item


class Boom(Exception):
    pass


@pytest.fixture
def db() -> Database:
    return Database(metadata=Base.metadata)


@pytest.fixture
def app(db: Database, backend_url: str) -> Iterator[Quart]:
    app = Quart(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_PER_REQUEST=True)
    db.init_app(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["uow", "drop-all", "--yes"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["uow", "create-all"])
    assert result.exit_code == 0, result.output
    yield app
    assert runner.invoke(args=["uow", "drop-all", "--yes"]).exit_code == 0
    db.dispose()


@pytest.fixture
def served(app: Quart) -> Iterator[str]:
    """The app served by hypercorn on 127.0.0.1, in a thread with its own event loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.02)  # polling for the server to listen
    yield base
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=10)
    assert not thread.is_alive()


def post(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST")) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_request_commits_and_async_services_join_its_unit(
    app: Quart, db: Database, served: str, observer: sa.Engine
) -> None:
    @db.transactional
    async def create(name: str) -> int:
        db.session.add(Item(name=name))
        await db.async_session.flush()
        return id(db.session)

    @app.post("/items/<name>")
    async def add(name: str) -> dict[str, object]:
        joined = await create(name)
        return {"same_session": joined == id(db.session)}

    status, body = post(f"{served}/items/first")
    assert status == 200
    assert json.loads(body) == {"same_session": True}
    assert committed_names(observer) == ["first"]


def test_error_statuses_and_exceptions_roll_the_request_back(
    app: Quart, db: Database, served: str, observer: sa.Engine
) -> None:
    @app.post("/refused")
    async def refused() -> tuple[str, int]:
        db.session.add(Item(name="refused"))
        await db.async_session.flush()
        return "no", 409

    @app.post("/fail")
    async def fail() -> str:
        db.session.add(Item(name="failed"))
        await db.async_session.flush()
        raise Boom

    @app.errorhandler(Boom)
    async def handled(error: Boom) -> tuple[str, int]:
        return "handled", 200  # handled, yet the request's work is rolled back

    assert post(f"{served}/refused")[0] == 409
    assert post(f"{served}/fail") == (200, "handled")
    assert committed_names(observer) == []


def test_concurrent_requests_each_run_in_their_own_unit(
    app: Quart, db: Database, served: str, observer: sa.Engine
) -> None:
    @app.post("/items/<name>")
    async def add(name: str) -> str:
        db.session.add(Item(name=name))
        await db.async_session.flush()
        await asyncio.sleep(0)
        return "created"

    names = [f"item-{number:02d}" for number in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda name: post(f"{served}/items/{name}")[0], names))
    assert results == [200] * 20
    assert committed_names(observer) == names


async def _leak(db: Database) -> str:
    await db.unit_of_work().__aenter__()  # joins the request's unit, never ends
    return "ok"


@pytest.mark.anyio
async def test_a_leaked_unit_is_rolled_back_with_a_warning(
    app: Quart, db: Database, observer: sa.Engine, anyio_backend: str
) -> None:
    @app.post("/leak")
    async def leak() -> str:
        db.session.add(Item(name="leaked"))
        return await _leak(db)

    async with app.test_app():
        with pytest.warns(UnitOfWorkWarning, match="still open"):
            response = await app.test_client().post("/leak")
    assert response.status_code == 500  # the doomed request's unit raised at its end
    assert committed_names(observer) == []


def test_the_cli_reports_the_database(app: Quart) -> None:
    result = app.test_cli_runner().invoke(args=["uow", "check"])
    assert result.exit_code == 0, result.output
    assert "backend:" in result.output


# -- registering ---------------------------------------------------------------------------------


def test_registering_a_quart_app_twice_is_refused(db: Database) -> None:
    app = Quart(__name__)
    app.config["UOW_DATABASE_URL"] = "sqlite://"
    db.init_app(app)
    with pytest.raises(UnitOfWorkError, match="Call init_app once per app"):
        db.init_app(app)


def test_a_database_attached_to_a_flask_app_refuses_a_quart_app(db: Database) -> None:
    flask_app = Flask(__name__)
    flask_app.config["UOW_DATABASE_URL"] = "sqlite://"
    db.init_app(flask_app)
    quart_app = Quart(__name__)
    quart_app.config["UOW_DATABASE_URL"] = "sqlite://"
    with pytest.raises(UnitOfWorkError, match="already attached to another framework"):
        db.init_app(quart_app)


def test_a_database_attached_to_a_quart_app_refuses_a_flask_app(db: Database) -> None:
    quart_app = Quart(__name__)
    quart_app.config["UOW_DATABASE_URL"] = "sqlite://"
    db.init_app(quart_app)
    flask_app = Flask(__name__)
    flask_app.config["UOW_DATABASE_URL"] = "sqlite://"
    with pytest.raises(UnitOfWorkError, match="second Database for the Flask app"):
        db.init_app(flask_app)
    assert "flask-uow" not in flask_app.extensions


@pytest.mark.anyio
async def test_uow_session_options_of_a_quart_app_shape_its_units_sessions(
    backend_url: str, anyio_backend: str
) -> None:
    db = Database(metadata=Base.metadata)
    app = Quart(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_SESSION_OPTIONS={"autoflush": False})
    db.init_app(app)
    async with app.app_context():
        async with db.unit_of_work() as uow:
            assert uow.session.autoflush is False
    await db.dispose_async()
    db.dispose()


@pytest.mark.anyio
async def test_uow_lock_timeout_of_a_quart_app_applies_to_its_units(
    backend_url: str, anyio_backend: str
) -> None:
    db = Database(metadata=Base.metadata)
    app = Quart(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_LOCK_TIMEOUT=0.25)
    db.init_app(app)
    async with app.app_context():
        async with db.unit_of_work() as uow:
            pass
    assert uow.timeouts is not None and uow.timeouts.lock == 0.25
    await db.dispose_async()
    db.dispose()


def test_quart_apps_sharing_a_database_with_different_session_options_are_refused(
    db: Database,
) -> None:
    first, second = Quart("first"), Quart("second")
    first.config.update(UOW_DATABASE_URL="sqlite://", UOW_SESSION_OPTIONS={"autoflush": False})
    second.config.update(UOW_DATABASE_URL="sqlite://", UOW_SESSION_OPTIONS={"autoflush": True})
    db.init_app(first)
    with pytest.raises(UnitOfWorkError, match="pass session_options to Database"):
        db.init_app(second)


@pytest.mark.anyio
async def test_outside_a_quart_app_context_units_run_on_the_database_url(
    backend_url: str, observer: sa.Engine, anyio_backend: str
) -> None:
    db = Database(backend_url, metadata=Base.metadata)
    app = Quart(__name__)
    app.config["UOW_DATABASE_URL"] = backend_url
    db.init_app(app)
    db.drop_all()
    db.create_all()
    try:
        with db.unit_of_work():
            db.session.add(Item(name="sync, no app context"))
        async with db.unit_of_work():
            db.session.add(Item(name="async, no app context"))
        assert committed_names(observer) == ["async, no app context", "sync, no app context"]
    finally:
        db.drop_all()
        await db.dispose_async()
        db.dispose()


# -- the request's unit when after_request hooks do not all run --------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("propagate", [False, True], ids=["500", "propagated"])
async def test_an_after_request_hook_that_raises_rolls_the_request_back(
    app: Quart, db: Database, observer: sa.Engine, anyio_backend: str, propagate: bool
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = propagate

    @app.post("/items/<name>")
    async def add(name: str) -> str:
        db.session.add(Item(name=name))
        await db.async_session.flush()
        return "created"

    @app.after_request  # registered after init_app: runs before the request's unit ends
    async def fail(response: Response) -> Response:
        raise Boom

    async with app.test_app():
        if propagate:
            with pytest.raises(Boom):
                await app.test_client().post("/items/lost")
        else:
            assert (await app.test_client().post("/items/lost")).status_code == 500
    assert committed_names(observer) == []


@pytest.mark.anyio
async def test_a_sync_unit_leaked_by_a_view_is_rolled_back_with_a_warning(
    db: Database, backend_url: str, observer: sa.Engine, anyio_backend: str
) -> None:
    app = Quart(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_PER_REQUEST=False)
    db.init_app(app)

    @app.post("/leak")
    async def leak() -> str:
        db.unit_of_work().__enter__()  # never exited
        db.session.add(Item(name="leaked"))
        db.session.flush()
        return "ok"

    async with app.test_app():
        async with app.app_context():
            db.drop_all()
            db.create_all()
        try:
            with pytest.warns(UnitOfWorkWarning, match="test_flask_quart.py"):
                response = await app.test_client().post("/leak")
            assert response.status_code == 200
            assert committed_names(observer) == []
        finally:
            async with app.app_context():
                db.drop_all()


@pytest.mark.anyio
async def test_a_sync_view_opens_its_own_units_beside_the_request_unit(
    app: Quart, db: Database, observer: sa.Engine, anyio_backend: str
) -> None:
    @db.transactional
    def create(name: str) -> None:
        db.session.add(Item(name=name))

    @app.post("/items/<name>")
    def add(name: str) -> str:  # Quart runs it in a worker thread
        create(name)
        return "created"

    async with app.test_app():
        assert (await app.test_client().post("/items/synced")).status_code == 200
    assert committed_names(observer) == ["synced"]


@pytest.mark.anyio
async def test_uow_replica_urls_of_a_quart_app_route_its_read_only_units_to_the_replica(
    db: Database, primary_url: str, replica_url: str, anyio_backend: str
) -> None:
    app = Quart(__name__)
    app.config.update(
        UOW_DATABASE_URL=primary_url, UOW_REPLICA_URLS=replica_url, SECRET_KEY="test secret"
    )
    db.init_app(app)

    @app.get("/port/<mode>")
    def port(mode: str) -> str:  # a sync view: Quart runs it in a worker thread
        with db.unit_of_work(read_only=mode == "read-only"):
            return str(db.session.scalar(sa.text("SELECT inet_server_port()")))

    try:
        async with app.test_app():
            client = app.test_client()
            read_only = await (await client.get("/port/read-only")).get_data(as_text=True)
            read_write = await (await client.get("/port/read-write")).get_data(as_text=True)
            async with app.app_context():
                assert db.replicas is not None and db.replicas is not db.own_replicas
        assert (int(read_only), int(read_write)) == (5433, sa.make_url(primary_url).port)
    finally:
        db.dispose()


@pytest.mark.anyio
async def test_paginate_in_a_quart_view_reads_page_and_per_page_from_the_query_string(
    app: Quart, db: Database, anyio_backend: str
) -> None:
    @app.get("/items")
    def items() -> dict[str, int]:  # a sync view, in its own unit
        with db.unit_of_work(read_only=True):
            page = db.paginate(sa.select(Item).order_by(Item.id))
            return {"page": page.page, "per_page": page.per_page}

    async with app.test_app():
        response = await app.test_client().get("/items?page=1&per_page=7")
        assert await response.get_json() == {"page": 1, "per_page": 7}


@pytest.mark.anyio
async def test_a_task_in_a_copied_request_context_leaves_the_requests_unit_to_the_request(
    app: Quart, db: Database, observer: sa.Engine, anyio_backend: str
) -> None:
    rolled_back: list[str] = []

    @app.post("/items/<name>")
    async def add(name: str) -> str:
        db.session.add(Item(name=name))
        db.on_rollback(lambda: rolled_back.append(name))

        @copy_current_request_context
        async def in_task() -> str:
            return request.path

        assert await asyncio.create_task(in_task()) == f"/items/{name}"
        return "created"

    async with app.test_app():
        assert (await app.test_client().post("/items/kept")).status_code == 200
    assert rolled_back == []
    assert committed_names(observer) == ["kept"]
