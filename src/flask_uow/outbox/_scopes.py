"""The framework scopes a thread of the outbox works in: one Flask app context per app.

A Database bound with ``init_app(app)`` finds its engine through the current app context.
A thread the outbox starts has none, so it enters one of its own: the app of the unit whose
messages it delivers, and, to relay leftovers, each app registered with the Database. A
Database with a URL and no framework runs without any scope. Nothing here imports Flask or
Quart: apps are objects with an ``app_context()`` method, whose context is entered with
``with`` (Flask) or only with ``async with`` (Quart: entered on an event loop of this
thread's own, for the time of one call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .._database import Database

R = TypeVar("R")


def current_app(db: Database) -> object | None:
    """The app whose context is current for ``db``'s units (None outside apps)."""
    scope = db.runtime.scope
    if scope is None:
        return None
    return getattr(scope(), "app", None)


def call_in(app: object | None, function: Callable[[], R]) -> R:
    """Call ``function`` in a new app context of ``app`` (for this thread), or as is."""
    make = getattr(app, "app_context", None)
    if make is None:
        return function()
    context = make()
    if hasattr(context, "__enter__"):
        with context:
            return function()
    # Quart's app context is entered with 'async with' only: on a loop of this call's own.
    return asyncio.run(_call_in_async(context, function))


async def _call_in_async(context: Any, function: Callable[[], R]) -> R:
    async with context:
        return function()


def registered_apps(db: Database) -> Iterator[object | None]:
    """Each app registered with ``db`` (``init_app``), then None if ``db`` has a URL itself."""
    apps = getattr(db.runtime.integration, "apps", None)
    if apps is not None:
        yield from list(apps)
    if db.url is not None:
        yield None
