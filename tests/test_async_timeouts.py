"""Timeouts hold for async units as for sync ones, and an app's timeouts are its own."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from flask_uow import Database, UnitTimeout

from .conftest import async_checked_out
from .models import Item
from .test_timeouts import row_locked_elsewhere

pytestmark = pytest.mark.serial  # counts the transactions open on the server


async def add_row(adb: Database) -> None:
    async with adb.unit_of_work():
        adb.session.add(Item(name="row"))


@pytest.mark.anyio
async def test_an_async_unit_runs_under_the_database_default_timeouts(
    adb: Database, backend_name: str, observer: sa.Engine
) -> None:
    await add_row(adb)
    adb.set_timeouts(lock_timeout=0.1)
    with row_locked_elsewhere(observer, backend_name):
        with pytest.raises(UnitTimeout) as raised:
            async with adb.unit_of_work() as uow:
                await adb.async_session.execute(sa.update(Item).values(name="mine"))
    assert uow.timeouts is not None and uow.timeouts.lock == 0.1
    assert raised.value.kind == "lock"
    assert async_checked_out(adb) == 0


@pytest.mark.flask
def test_an_apps_timeouts_apply_to_its_units_and_not_to_another_apps(backend_url: str) -> None:
    import flask

    db = Database()
    strict, plain = flask.Flask("strict"), flask.Flask("plain")
    strict.config.update(UOW_DATABASE_URL=backend_url, UOW_LOCK_TIMEOUT=0.25)
    plain.config.update(UOW_DATABASE_URL=backend_url)
    db.init_app(strict)
    db.init_app(plain)
    try:
        with strict.app_context(), db.unit_of_work() as in_strict:
            pass
        with plain.app_context(), db.unit_of_work() as in_plain:
            pass
        assert in_strict.timeouts is not None and in_strict.timeouts.lock == 0.25
        assert in_plain.timeouts is None
    finally:
        db.dispose()


@pytest.mark.anyio
async def test_a_statement_timeout_holds_when_an_async_units_first_statement_streams(
    adb: Database, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite has no statement timeout")
    sleep = "SELECT pg_sleep(2)"
    if backend_name == "mariadb":
        await add_row(adb)
        sleep = "SELECT SLEEP(2) FROM uow_item"
    started = time.monotonic()
    with pytest.raises(UnitTimeout) as raised:
        async with adb.unit_of_work(statement_timeout=0.2):
            streamed = await adb.async_session.stream(sa.text(sleep))
            await streamed.all()
    assert raised.value.kind == "statement"
    assert time.monotonic() - started < 1.5
    assert async_checked_out(adb) == 0
