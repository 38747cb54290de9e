"""asyncio support: the AsyncSession of async units, async engines, and cleanup that
a cancellation cannot interrupt.

Async units run the same state machine as sync ones (``_unit.py``): entering and ending
are the same methods, run in a greenlet so that the SQL they send goes through the async
driver. This module holds only what asyncio needs on top of that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from greenlet import getcurrent  # type: ignore[import-untyped]
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

from ._engines import EngineVariants, masked
from ._errors import UnitOfWorkError
from ._timeouts import Timeouts, engine_with

if TYPE_CHECKING:
    from ._session import UnitSession

ASYNC_DRIVERS = {
    "sqlite": "aiosqlite",
    "postgresql": "psycopg",
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
}
"""The async driver used for each backend when the async URL is derived from the sync one.

psycopg 3 serves both (``postgresql+psycopg`` picks its async mode by itself); aiomysql is
built on PyMySQL, the sync driver flask-uow documents for MariaDB, so both raise the same
errors with the same codes (what retries classify).
"""

_ASYNC_DRIVER_NAMES = frozenset({"aiosqlite", "psycopg_async", "asyncpg", "aiomysql", "asyncmy"})


class AsyncUnitSession(AsyncSession):
    """The ``AsyncSession`` of an async unit of work (``async with db.unit_of_work()``).

    Its ``sync_session`` is an instance of the Database's ``session_class``, so it refuses
    ``commit()``, ``close()`` and (unless the unit is already bound to roll back)
    ``rollback()`` exactly as a sync unit's session does: the unit commits, rolls back and
    closes by itself when its ``async with`` block or decorated coroutine ends.
    """


def async_session_class(session_class: type[UnitSession]) -> type[AsyncUnitSession]:
    """An ``AsyncUnitSession`` subclass whose sync sessions are ``session_class`` instances."""
    return type(
        "AsyncUnitSession",
        (AsyncUnitSession,),
        {"sync_session_class": session_class, "__module__": "flask_uow._database"},
    )


def async_url(url: URL) -> URL:
    """The URL of the async driver for the database ``url`` names.

    An URL that already names an async driver is kept; otherwise the driver is replaced by
    the one in ``ASYNC_DRIVERS``.
    """
    backend = url.get_backend_name()
    driver = url.get_driver_name()
    if driver in _ASYNC_DRIVER_NAMES or (backend == "postgresql" and driver == "psycopg"):
        return url
    replacement = ASYNC_DRIVERS.get(backend)
    if replacement is None:
        raise UnitOfWorkError(
            f"flask-uow knows no async driver for {masked(url)}. Pass the URL of one with "
            "Database(url, async_url=...) (or the UOW_ASYNC_DATABASE_URL config key)."
        )
    return url.set(drivername=f"{backend}+{replacement}")


class AsyncEngineVariants(EngineVariants):
    """Engine variants of an async engine: ``for_unit`` gives the sync face each unit's
    sync session binds to, ``async_for_unit`` the ``AsyncEngine`` its AsyncSession binds to."""

    __slots__ = ("_async",)

    def __init__(self, engine: sa.Engine, *, timeouts: Timeouts | None = None) -> None:
        super().__init__(engine, timeouts=timeouts)
        self._async: dict[sa.Engine, AsyncEngine] = {}

    @property
    def async_engine(self) -> AsyncEngine:
        """The AsyncEngine itself (for ``create_all`` through ``run_sync``, ``dispose()``)."""
        return self._wrap(self.engine)

    def async_for_unit(
        self, *, read_only: bool, isolation_level: str | None, timeouts: Timeouts | None = None
    ) -> AsyncEngine:
        """The AsyncEngine a unit with these options binds its AsyncSession to."""
        variant = self.for_unit(read_only=read_only, isolation_level=isolation_level)
        if timeouts is not None:
            variant = engine_with(variant, timeouts)
        return self._wrap(variant)

    def _wrap(self, variant: sa.Engine) -> AsyncEngine:
        found = self._async.get(variant)
        if found is None:
            found = self._async.setdefault(variant, AsyncEngine(variant))
        return found


def open_async_session(
    session_class: type[AsyncUnitSession],
    engines: EngineVariants,
    options: dict[str, Any],
    *,
    read_only: bool,
    isolation_level: str | None,
    timeouts: Timeouts | None,
) -> AsyncUnitSession:
    """A new AsyncSession for an outermost async unit (no connection is checked out yet).

    Its transaction runs with ``timeouts`` (statement and lock timeouts), as a sync unit's.
    """
    if not isinstance(engines, AsyncEngineVariants):
        raise UnitOfWorkError(
            "An async unit of work needs an async engine, and the current app's engines are "
            "synchronous. Use the app through db.init_app(), which creates both."
        )
    bind = engines.async_for_unit(
        read_only=read_only, isolation_level=isolation_level, timeouts=timeouts
    )
    return session_class(bind=bind, **options)


def running_task() -> asyncio.Task[Any] | None:
    """The asyncio task running now, or None outside any event loop."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


async def run_to_completion(function: Callable[..., object], *args: Any) -> None:
    """Run the sync ``function`` (which may send SQL through an async driver) to its end.

    It runs in a task of its own sharing the caller's context (so the ambient stack it
    changes is the caller's), and a cancellation of the caller does not interrupt it: the
    caller waits for it, then re-raises the cancellation. That is how an async unit ends:
    its ROLLBACK or COMMIT and the return of its connection always finish.
    """
    context = getcurrent().gr_context
    task = asyncio.get_running_loop().create_task(greenlet_spawn(function, *args), context=context)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if task.done():
                raise
            cancelled = error
            continue
        except BaseException:
            if cancelled is not None:
                raise cancelled  # noqa: B904 - the error is kept as its __context__
            raise
        break
    if cancelled is not None:
        raise cancelled


async def run_in_greenlet(function: Callable[..., object], *args: Any) -> None:
    """Run the sync ``function`` in a greenlet of the current task (entering a savepoint)."""
    await greenlet_spawn(function, *args)
