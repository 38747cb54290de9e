"""Quart integration: per-app engines, an async unit per request, the teardown safety net.

``db.init_app(quart_app)`` reads the same ``UOW_*`` keys as for Flask. Quart serves every
request of an app on one event loop, so the app's async engine keeps a pool (unlike Flask's
async views, which each run on a loop of their own). Sync views, which Quart runs in worker
threads, open their own units there; the request's unit belongs to the request's task.

This is a layer on top of the core: it imports the core, and the core never imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quart import Quart, Response, current_app, g, request, session
from quart.cli import AppGroup
from quart.globals import _cv_app, _cv_request
from quart.signals import request_started

from ._flask import Framework
from ._request_units import (
    abandon_async,
    end_aborted_request_unit_async,
    flag_rollback_on_error,
    run_without_units,
    settle_request_unit_async,
    units_in_scope,
)
from ._unit import UnitOfWork

if TYPE_CHECKING:
    from ._database import Database
    from ._flask_config import AppConfig

_REQUEST_UNIT = "_flask_uow_request_unit"


def install_quart_units(db: Database, app: Quart, config: AppConfig) -> None:
    """The request's async unit (with ``UOW_PER_REQUEST``), the sync functions' units and
    the safety nets of a Quart app; its async connections close when it stops serving."""
    if config.per_request:
        _install_request_unit(db, app, config.read_only_methods)
    _install_sync_functions(db, app)

    @app.teardown_appcontext
    async def end_leaked(error: BaseException | None) -> None:
        await end_leaked_units(db)

    @app.after_serving
    async def close_connections() -> None:
        # Async connections belong to the serving loop: close them before it ends.
        await db.dispose_async()


def _as_coroutine(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` as a coroutine function, so that Quart runs it in the request's task (a
    sync function would run in a worker thread, in a copy of the request's context)."""

    @functools.wraps(hook)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return hook(*args, **kwargs)

    return run


def _install_request_unit(db: Database, app: Quart, read_only_methods: frozenset[str]) -> None:
    # request_started is sent before any before_request hook runs, in the request's task.
    async def begin(sender: Quart, **extra: Any) -> None:
        method = request.method
        unit = UnitOfWork(
            db.runtime,
            read_only=method in read_only_methods,
            origin=f"the per-request unit of {method} {request.path}",
        )
        await unit.__aenter__()
        setattr(g, _REQUEST_UNIT, (_cv_request.get(), unit))

    request_started.connect(begin, app, weak=False)

    @app.after_request
    async def end(response: Response) -> Response:
        unit = _take_request_unit()
        if unit is not None:
            await settle_request_unit_async(db.runtime, unit, response.status_code, _ADVICE)
            await unit.__aexit__(None, None, None)
        return response

    @app.teardown_request
    async def abort(error: BaseException | None) -> None:
        unit = _take_request_unit()
        if unit is not None:
            await end_aborted_request_unit_async(db.runtime, unit, error, _ADVICE)

    # An exception raised by a before_request hook or the view rolls the request back,
    # whatever status its error handler answers.
    handle_user_exception = app.handle_user_exception

    async def roll_back_then_handle(error: Exception) -> Any:
        flag_rollback_on_error(_request_unit())
        return await handle_user_exception(error)

    app.handle_user_exception = roll_back_then_handle  # type: ignore[method-assign]


def _request_unit() -> UnitOfWork | None:
    """The request's unit, seen from the request's own context: a task running a copy of
    the request context (``copy_current_request_context``) shares its ``g``, not its unit."""
    stored: tuple[object, UnitOfWork] | None = g.get(_REQUEST_UNIT)
    if stored is None or stored[0] is not _cv_request.get(None):
        return None
    return stored[1]


def _take_request_unit() -> UnitOfWork | None:
    """``_request_unit()``, which the request's context then no longer holds."""
    unit = _request_unit()
    if unit is not None:
        g.pop(_REQUEST_UNIT)
    return unit


def _install_sync_functions(db: Database, app: Quart) -> None:
    # Quart runs sync views and hooks in worker threads, in a copy of the request's context:
    # they must not see the request's async unit (it belongs to the request's task), so they
    # start with no unit and open their own; one they leave open is rolled back, with a
    # warning, before the worker returns.
    sync_to_async = app.sync_to_async

    def sync_to_async_with_units(func: Callable[..., Any]) -> Callable[..., Any]:
        return sync_to_async(functools.partial(run_without_units, db.runtime, func))

    app.sync_to_async = sync_to_async_with_units  # type: ignore[method-assign]


async def end_leaked_units(db: Database) -> None:
    """Roll back units opened in the app context that is ending, warning where they began."""
    await abandon_async(units_in_scope(db.runtime, _cv_app.get(None)), _ADVICE)


_ADVICE = (
    "End units with 'async with db.unit_of_work():' or '@db.transactional' so that they "
    "close on every path."
)


QUART = Framework(
    name="Quart",
    app_context=_cv_app,
    request_context=_cv_request,
    request_started=request_started,
    g=g,
    session=session,
    current_app=current_app,
    cli_group=AppGroup,
    hook=_as_coroutine,
    install_units=install_quart_units,
    pooled_async=True,
)
"""Quart: hooks are coroutines, an async unit per request, one event loop for all requests."""
