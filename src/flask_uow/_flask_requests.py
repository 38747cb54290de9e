"""Flask's per-request units: a sync unit per request, or the request's event loop for an
async view; and the safety net that rolls back units an app context leaves open.

The request's unit belongs to the request context and thread that opened it: a thread
running a copy of the request context shares its ``g`` but never ends its unit.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, has_request_context, request
from flask.ctx import AppContext
from flask.globals import _cv_app, _cv_request
from flask.signals import request_started

from ._flask_request_loop import RequestLoop
from ._request_units import (
    abandon,
    abandon_async,
    end_aborted_request_unit,
    flag_rollback_on_error,
    settle_request_unit,
    units_in_scope,
)
from ._unit import UnitOfWork, live_units

if TYPE_CHECKING:
    from ._database import Database
    from ._flask_config import AppConfig

_REQUEST_UNIT = "_flask_uow_request_unit"


def install_flask_units(db: Database, app: Flask, config: AppConfig) -> None:
    """The request's unit (with ``UOW_PER_REQUEST``), the async views' loops and the
    app-context safety net of a Flask app."""
    if config.per_request:
        _install_request_unit(db, app, config.read_only_methods)
    _install_async_views(db, app)
    app.teardown_appcontext(lambda error: end_leaked_units(db))


@dataclass(eq=False)
class RequestUnit:
    """The unit of one request, kept in ``g``: a sync unit (sync view) or the request's
    event loop (async view), with the request context and thread that own it.

    ``g`` is shared with every thread running a copy of the request context (a copied
    context's app context is the same object): only the owner may end the unit.
    """

    owner: tuple[object, int]
    unit: UnitOfWork | None = None
    loop: RequestLoop | None = None


def _owned_request_unit() -> RequestUnit | None:
    """The request unit of the current request, when this thread and request context own it."""
    app_context = _cv_app.get(None)
    if app_context is None:
        return None
    found: RequestUnit | None = getattr(app_context.g, _REQUEST_UNIT, None)
    if found is None or found.owner != (_cv_request.get(None), threading.get_ident()):
        return None
    return found


def _install_request_unit(db: Database, app: Flask, read_only_methods: frozenset[str]) -> None:
    # request_started is sent before any before_request hook runs, whatever order the
    # hooks, blueprints and extensions were registered in.
    async_views: dict[tuple[str | None, str], bool] = {}  # (endpoint, method): async view?

    units = db.runtime.units

    def begin(sender: Flask, **extra: Any) -> None:
        context = _cv_request.get()
        current = context.request  # one lookup instead of a proxy per attribute
        method = current.method
        origin = f"the per-request unit of {method} {current.path}"
        if units.get():  # it will join a unit open around the request: a test's, mostly
            origin += _JOINS_AN_OPEN_UNIT
        rule = current.url_rule
        key = (rule.endpoint if rule is not None else None, method)
        view_is_async = async_views.get(key)
        if view_is_async is None:
            view_is_async = async_views[key] = _view_is_async(app)
        read_only = method in read_only_methods
        owner = (context, threading.get_ident())
        if view_is_async:
            # The view runs in the request's event loop: its unit is entered there.
            loop = RequestLoop(db.runtime, origin, read_only, _ADVICE)
            setattr(_cv_app.get().g, _REQUEST_UNIT, RequestUnit(owner, loop=loop))
            return
        unit = UnitOfWork(db.runtime, read_only=read_only, origin=origin)
        unit.__enter__()
        setattr(_cv_app.get().g, _REQUEST_UNIT, RequestUnit(owner, unit=unit))

    request_started.connect(begin, app, weak=False)
    app.after_request(lambda response: _end_request_unit(db, response))
    app.teardown_request(lambda error: _abort_request_unit(db, error))

    # An exception raised by a before_request hook or the view rolls the request back,
    # whatever status its error handler answers (a redirect to a login page, say). Flask
    # offers no hook for handled exceptions, so the app's own handler is wrapped.
    handle_user_exception = app.handle_user_exception

    def roll_back_then_handle(error: Exception) -> Any:
        request_unit = _owned_request_unit()
        if request_unit is None:
            return handle_user_exception(error)
        if request_unit.loop is None:
            flag_rollback_on_error(request_unit.unit)
            return handle_user_exception(error)
        request_unit.loop.flag_rollback()
        # An async handler runs in the request's loop, in its unit; a sync handler runs
        # here, in a unit of its own that rolls back, so that it can query too.
        origin = "the error handler of " + request_unit.loop.origin
        with UnitOfWork(db.runtime, origin=origin) as handler_unit:
            handler_unit.set_rollback()
            return handle_user_exception(error)

    app.handle_user_exception = roll_back_then_handle  # type: ignore[method-assign,assignment]


def _view_is_async(app: Flask) -> bool:
    """True when the view this request goes to is a coroutine (function or method)."""
    rule = request.url_rule
    if rule is None or rule.endpoint is None:
        return False
    view = app.view_functions.get(rule.endpoint)
    if view is None:
        return False
    if inspect.iscoroutinefunction(view):
        return True
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return False
    handler = getattr(view_class, request.method.lower(), None)
    if handler is None and request.method == "HEAD":
        handler = getattr(view_class, "get", None)
    return inspect.iscoroutinefunction(handler or view_class.dispatch_request)


def _is_the_view(app: Flask, func: Callable[..., Any]) -> bool:
    rule = request.url_rule
    view = app.view_functions.get(rule.endpoint) if rule and rule.endpoint else None
    if view is None:
        return False
    if func is view:
        return True
    view_class = getattr(view, "view_class", None)
    return view_class is not None and isinstance(getattr(func, "__self__", None), view_class)


def _install_async_views(db: Database, app: Flask) -> None:
    # Flask runs coroutine functions with async_to_sync: an event loop per call, in another
    # thread. Those of a request to an async view run in the request's loop instead (see
    # RequestLoop); any other one has its leaked units rolled back before its loop ends,
    # while their connections can still be closed. Flask's ensure_sync() hands only
    # coroutine functions to async_to_sync(): wrapping it costs sync views and hooks nothing.
    async_to_sync = app.async_to_sync

    def async_to_sync_with_units(func: Callable[..., Any]) -> Callable[..., Any]:
        if not has_request_context():
            return async_to_sync(func)
        request_unit = _owned_request_unit()
        loop = request_unit.loop if request_unit is not None else None
        if loop is not None and loop.open:
            return loop.run(func, in_unit=_is_the_view(app, func))
        return async_to_sync(_with_safety_net(db, func))

    app.async_to_sync = async_to_sync_with_units  # type: ignore[method-assign]


def _with_safety_net(
    db: Database, func: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``func``, rolling back (with a warning) any async unit it leaves open."""

    @functools.wraps(func)
    async def run_with_safety_net(*args: Any, **kwargs: Any) -> Any:
        depth = len(live_units(db.runtime))
        try:
            return await func(*args, **kwargs)
        finally:
            await abandon_async(live_units(db.runtime)[depth:], _ADVICE)

    return run_with_safety_net


def _end_request_unit(db: Database, response: Response) -> Response:
    """End the request's unit with its response: COMMIT below status 400, else ROLLBACK."""
    request_unit = _owned_request_unit()
    if request_unit is None:
        return response
    if request_unit.loop is not None:
        request_unit.loop.end(response.status_code)
        return response
    unit = request_unit.unit
    if unit is not None:
        request_unit.unit = None
        settle_request_unit(db.runtime, unit, response.status_code, _ADVICE)
        unit.__exit__(None, None, None)
    return response


def _abort_request_unit(db: Database, error: BaseException | None) -> None:
    """The request is torn down: roll back its unit if its response did not end it."""
    request_unit = _owned_request_unit()
    if request_unit is None:
        return
    delattr(_cv_app.get().g, _REQUEST_UNIT)
    if request_unit.loop is not None:
        request_unit.loop.close(error)
    elif request_unit.unit is not None:
        end_aborted_request_unit(db.runtime, request_unit.unit, error, _ADVICE)


def end_leaked_units(db: Database) -> None:
    """Roll back units opened in the app context that is ending, warning where they began.

    Outermost, joined and savepoint units alike: whatever they touched is rolled back.
    """
    if not db.runtime.units.get():
        return
    context: AppContext | None = _cv_app.get(None)
    leaked = units_in_scope(db.runtime, context)
    if any(unit.is_async for unit in leaked):
        # Their event loop (asgiref's, one per view) has ended: roll back on a new one.
        asyncio.run(abandon_async(leaked, _ADVICE))
    else:
        abandon(leaked, _ADVICE)


_ADVICE = (
    "End units with 'with db.unit_of_work():' or '@db.transactional' so that they close on "
    "every path; for a streaming response, wrap the generator in stream_with_context()."
)


_JOINS_AN_OPEN_UNIT = (
    ", which joined a unit already open around the request (a test-wide unit around "
    "test-client calls?), so its 4xx or error dooms that unit. In tests, roll back each test "
    "with flask_uow.testing.isolated(db) (the pytest plugin's isolated_db fixture) instead "
    "of holding one unit open around the requests"
)
"""Told in the per-request unit's origin, which an UnexpectedRollback of the outer unit quotes."""
