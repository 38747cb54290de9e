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
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from flask_uow import Database, UnitOfWorkWarning

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
