"""Three async traps that used to lose work silently: each now works, or fails saying why."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_uow import Database, Outcome, Propagation, UnitOfWorkError

from .conftest import committed_names
from .models import Item

pytestmark = pytest.mark.anyio


async def test_db_session_inside_run_sync_is_the_units_sync_session(
    adb: Database, observer: sa.Engine
) -> None:
    def rename(session: Session) -> None:
        assert adb.session is session
        adb.session.execute(sa.update(Item).values(name="renamed"))  # a sync adapter's call

    async with adb.unit_of_work() as uow:
        adb.session.add(Item(name="first"))
        await adb.async_session.flush()
        await uow.session.run_sync(rename)
    assert uow.outcome is Outcome.COMMITTED
    assert committed_names(observer) == ["renamed"]


async def _numbers(db: Database) -> AsyncGenerator[int, None]:
    async with db.unit_of_work():
        db.session.add(Item(name="from the generator"))
        for number in range(3):
            yield number


async def test_a_unit_opened_after_leaving_an_async_generator_holding_one_is_refused(
    adb: Database, observer: sa.Engine
) -> None:
    numbers = _numbers(adb)
    async for _ in numbers:
        break  # the generator's unit stays open, suspended at its 'yield'
    with pytest.raises(UnitOfWorkError, match="aclose") as raised:
        async with adb.unit_of_work():
            adb.session.add(Item(name="mine"))
    assert "generator" in str(raised.value)
    await numbers.aclose()  # ends the generator's unit (it rolls back: it never finished)
    async with adb.unit_of_work(propagation=Propagation.REQUIRED):
        adb.session.add(Item(name="mine"))
    assert committed_names(observer) == ["mine"]


async def test_units_inside_an_async_generator_still_join_its_unit(
    adb: Database, observer: sa.Engine
) -> None:
    async def numbers() -> AsyncIterator[int]:
        async with adb.unit_of_work():
            for number in range(2):
                async with adb.unit_of_work() as inner:  # joins: the generator is running
                    async with adb.unit_of_work(propagation=Propagation.NESTED):
                        adb.session.add(Item(name=f"item-{number}"))
                assert inner.kind is not None and inner.kind.value == "joined"
                yield number

    assert [number async for number in numbers()] == [0, 1]
    assert committed_names(observer) == ["item-0", "item-1"]
