"""A unit interrupted while its COMMIT is on its way reports an unknown outcome, never a rollback.

The COMMIT reaches the database and commits; its answer is held back (a proxy in front of the
server, or a listener that commits first on SQLite) while a real SIGINT or the shutdown of
``asyncio.run()`` interrupts the unit. Nobody knows then whether it committed: the unit says
so (``Outcome.OUTCOME_UNKNOWN``, ``on_outcome_unknown`` hooks, counted as unknown) and lets
the interruption go on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from flask_uow import Database, Outcome, UnitOfWork

from ._interrupt import (
    after_sqlite_commit,
    await_forever,
    holding_proxy,
    sigint_main_thread,
    sigint_once_commit_is_sent,
)
from .conftest import committed_names
from .models import Item


def _hooks(uow: object, ran: list[str]) -> None:
    unit = uow  # the same calls on a sync unit and on an async one
    unit.on_commit(lambda: ran.append("on_commit"))  # type: ignore[attr-defined]
    unit.on_rollback(lambda: ran.append("on_rollback"))  # type: ignore[attr-defined]
    unit.on_outcome_unknown(lambda: ran.append("on_outcome_unknown"))  # type: ignore[attr-defined]


def _assert_unknown(db: Database, unit: UnitOfWork, ran: list[str], observer: sa.Engine) -> None:
    assert unit.outcome is Outcome.OUTCOME_UNKNOWN
    assert ran == ["on_outcome_unknown"]
    stats = db.stats
    assert (stats.outcome_unknown, stats.rolled_back, stats.committed) == (1, 0, 0)
    assert committed_names(observer) == ["interrupted"]  # it did commit


@contextmanager
def _sigint_at_commit(db: Database, backend_url: str, backend_name: str) -> Iterator[Database]:
    """A Database whose next COMMIT lands and is then interrupted by a real SIGINT."""
    if backend_name == "sqlite":
        with after_sqlite_commit(db.engine, sigint_main_thread):
            yield db
        return
    with holding_proxy(backend_url) as (url, proxy):
        proxied = Database(url)
        try:
            proxy.holding = True
            sigint_once_commit_is_sent(proxy)
            yield proxied
        finally:
            proxy.release()
            proxied.dispose()


def test_a_sigint_while_commit_is_on_its_way_is_an_unknown_outcome_not_a_rollback(
    db: Database, backend_url: str, backend_name: str, observer: sa.Engine
) -> None:
    assert threading.current_thread() is threading.main_thread(), "SIGINT reaches the main thread"
    ran: list[str] = []
    with _sigint_at_commit(db, backend_url, backend_name) as target:
        with pytest.raises(KeyboardInterrupt):
            with target.unit_of_work() as uow:
                _hooks(uow, ran)
                target.session.add(Item(name="interrupted"))
        _assert_unknown(target, uow, ran, observer)
        assert target.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_asyncio_run_returning_while_commit_is_on_its_way_is_an_unknown_outcome(
    db: Database, backend_url: str, backend_name: str, observer: sa.Engine
) -> None:
    ran: list[str] = []
    units: list[UnitOfWork] = []
    reached = threading.Event()

    async def transfer(target: Database) -> None:
        async with target.unit_of_work() as uow:
            units.append(uow)  # type: ignore[arg-type]
            _hooks(uow, ran)
            target.session.add(Item(name="interrupted"))

    async def main(target: Database) -> None:
        asyncio.get_running_loop().create_task(transfer(target))
        while not reached.is_set():  # COMMIT has landed; its answer has not come
            await asyncio.sleep(0.01)
        # Returning now: asyncio.run() cancels every task left, the unit's included.

    if backend_name == "sqlite":
        with after_sqlite_commit(db.async_engine.sync_engine, await_forever(reached.set)):
            asyncio.run(main(db))
        target = db
    else:
        with holding_proxy(backend_url) as (url, proxy):
            target = Database(url)
            proxy.holding = True

            def reach() -> None:
                if proxy.commit_sent.wait(30):
                    reached.set()

            threading.Thread(target=reach, daemon=True).start()
            asyncio.run(main(target))
            proxy.release()
    _assert_unknown(target, units[0], ran, observer)
    asyncio.run(target.dispose_async())
    target.dispose()
