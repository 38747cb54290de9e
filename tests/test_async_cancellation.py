"""Cancelled tasks leak nothing: every unit ends, every connection goes back, nothing lingers."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import warnings

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from flask_uow import Database, Outcome, Propagation, UnitState

from .conftest import async_checked_out, committed_names
from .models import Item

pytestmark = pytest.mark.anyio

TASKS = int(os.environ.get("UOW_CANCELLED_TASKS", "1000"))
"""How many tasks the test cancels; the reliability stress run raises it."""

PHASES = ("waiting", "query", "savepoint", "commit", "rollback")
"""Where a task is when it is cancelled: waiting for a connection, in a query, in a
SAVEPOINT, during COMMIT, during ROLLBACK."""


class Boom(Exception):
    pass


async def test_a_thousand_tasks_cancelled_at_random_points_leave_no_connection_behind(
    adb: Database, observer: sa.Engine, backend_name: str
) -> None:
    rng = random.Random(10)
    reached = [asyncio.Event() for _ in range(TASKS)]
    units = {}

    def in_commit(session: Session) -> None:
        number = session.info.get("task")
        if number is not None and number % len(PHASES) == PHASES.index("commit"):
            reached[number].set()

    async def work(number: int) -> None:
        phase = PHASES[number % len(PHASES)]
        if phase == "waiting":
            reached[number].set()  # cancelled at once: most tasks are still in the pool queue
        async with adb.unit_of_work() as uow:
            units[number] = uow
            uow.session.sync_session.info["task"] = number
            adb.session.add(Item(name=f"task-{number:04d}"))
            if phase == "query":
                reached[number].set()
            await adb.async_session.flush()
            if phase == "savepoint":
                async with adb.unit_of_work(propagation=Propagation.NESTED):
                    reached[number].set()
                    await adb.async_session.execute(sa.select(sa.func.count(Item.id)))
            await adb.async_session.execute(sa.select(Item.id).limit(1))
            if phase == "rollback":
                reached[number].set()
                raise Boom

    async def cancel(task: asyncio.Task[None], number: int) -> None:
        reached_phase = asyncio.create_task(reached[number].wait())
        await asyncio.wait([reached_phase, task], return_when=asyncio.FIRST_COMPLETED)
        reached_phase.cancel()
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        task.cancel()

    event.listen(adb.session_class, "before_commit", in_commit)
    try:
        tasks = [asyncio.create_task(work(number)) for number in range(TASKS)]
        await asyncio.gather(*(cancel(task, number) for number, task in enumerate(tasks)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        event.remove(adb.session_class, "before_commit", in_commit)

    assert all(
        result is None or isinstance(result, Boom | asyncio.CancelledError) for result in results
    ), [result for result in results if not isinstance(result, Boom | asyncio.CancelledError)]
    assert sum(isinstance(result, asyncio.CancelledError) for result in results) > TASKS // 2
    assert all(unit.state is UnitState.ENDED for unit in units.values())
    for number, unit in units.items():
        # A COMMIT under way finishes despite the cancellation; everything else rolls back.
        committing = PHASES[number % len(PHASES)] == "commit"
        expected = Outcome.COMMITTED if committing else Outcome.ROLLED_BACK
        assert unit.outcome is expected, (number, unit.outcome)
    cancelled_in_commit = [
        number
        for number, result in enumerate(results)
        if PHASES[number % len(PHASES)] == "commit" and isinstance(result, asyncio.CancelledError)
    ]
    assert cancelled_in_commit, "no cancellation reached a COMMIT under way"
    committed = sorted(
        f"task-{number:04d}" for number, unit in units.items() if unit.outcome is Outcome.COMMITTED
    )
    assert committed_names(observer) == committed
    assert async_checked_out(adb) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [warning for warning in caught if "garbage collector" in str(warning.message)]
    if backend_name == "postgresql":
        assert _idle_in_transaction(observer) == 0


def _idle_in_transaction(observer: sa.Engine) -> int:
    with observer.connect() as connection:
        return int(
            connection.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
            )
            or 0
        )
