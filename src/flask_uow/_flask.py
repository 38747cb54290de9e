"""Flask integration: per-app engines, units per request, the teardown safety net.

This is a layer on top of the core: it imports the core, and the core never imports it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, has_request_context, request
from flask.ctx import AppContext
from flask.globals import _cv_app, _cv_request
from flask.signals import request_started

from . import _flask_replicas
from ._engines import EngineVariants, create_engine
from ._errors import UnitOfWorkError
from ._flask_config import AppConfig, read_config
from ._request_units import (
    abandon,
    abandon_async,
    end_aborted_request_unit,
    roll_back_on_error,
    settle_request_unit,
    settle_request_unit_async,
    units_above,
    units_in_scope,
)
from ._unit import UnitOfWork, live_units

if TYPE_CHECKING:
    from ._database import Database
    from ._replicas import Replicas
    from ._timeouts import Timeouts

EXTENSION_KEY = "flask-uow"
_REQUEST_UNIT = "_flask_uow_request_unit"
_ASYNC_VIEW = "_flask_uow_async_view"

_POOL_ONLY_OPTIONS = frozenset(
    {"pool_size", "max_overflow", "pool_timeout", "pool_use_lifo", "poolclass", "pool"}
)


@dataclass(eq=False)
class AppState:
    """What one Flask app configured for a Database; the engine is made on first use."""

    config: AppConfig
    pooled_async: bool = False
    """Whether the async engine keeps a pool: only when every request of the app runs on
    one event loop (Quart), not for Flask's async views (one loop per view)."""
    created: EngineVariants | None = None
    replicas: Replicas | None = None
    timeouts: Timeouts | None = None
    """The app's UOW_STATEMENT_TIMEOUT / UOW_LOCK_TIMEOUT, carried by its engines."""
    async_created: EngineVariants | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def async_variants(self) -> EngineVariants:
        """The app's async engine, made on first use.

        Flask runs each ``async def`` view in an event loop of its own (asgiref), and an
        async driver's connection belongs to the loop that opened it: this engine keeps no
        pool (NullPool), each unit connects and disconnects.
        """
        created = self.async_created
        if created is None:
            from sqlalchemy.pool import NullPool

            from ._aio import AsyncEngineVariants, async_url

            with self.lock:
                if self.async_created is None:
                    config = self.config
                    options = dict(config.engine_options)
                    if not self.pooled_async:
                        options = {
                            key: value
                            for key, value in options.items()
                            if key not in _POOL_ONLY_OPTIONS
                        }
                        options["poolclass"] = NullPool
                    self.async_created = AsyncEngineVariants(
                        create_engine(
                            config.async_url or async_url(config.url),
                            options,
                            sqlite_foreign_keys=config.sqlite_foreign_keys,
                            sqlite_wal=config.sqlite_wal,
                            asynchronous=True,
                        )
                    )
                    self.async_created.timeouts = self.timeouts
                created = self.async_created
        return created

    def variants(self) -> EngineVariants:
        created = self.created
        if created is None:
            with self.lock:
                if self.created is None:
                    config = self.config
                    created = EngineVariants(
                        create_engine(
                            config.url,
                            config.engine_options,
                            sqlite_foreign_keys=config.sqlite_foreign_keys,
                            sqlite_wal=config.sqlite_wal,
                        )
                    )
                    created.replicas = self.replicas
                    created.timeouts = self.timeouts
                    self.created = created
                created = self.created
        return created


class FlaskIntegration:
    """Gives a Database's units the current app's engine and app context."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.apps: weakref.WeakKeyDictionary[Flask, AppState] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[Flask], AppState] | None = None

    def state(self, app: Flask) -> AppState | None:
        """The state of ``app``, or None when it is not registered but the Database has a URL."""
        cached = self._last
        if cached is not None and cached[0]() is app:
            return cached[1]
        state = self.apps.get(app)
        if state is None:
            if self.db.url is None:
                raise UnitOfWorkError(
                    f"The current Flask app {app.name!r} is not registered with this Database. "
                    "Did you forget to call db.init_app(app) in the app factory?"
                )
            return None
        self._last = (weakref.ref(app), state)
        return state

    def current_engines(self) -> EngineVariants | None:
        context = _cv_app.get(None)
        if context is None:
            return None
        state = self.state(context.app)
        return state.variants() if state is not None else None

    def current_async_engines(self) -> EngineVariants | None:
        context = _cv_app.get(None)
        if context is None:
            return None
        state = self.state(context.app)
        return state.async_variants() if state is not None else None

    def current_scope(self) -> object | None:
        return _cv_app.get(None)

    def created_engines(self) -> list[EngineVariants]:
        return [state.created for state in list(self.apps.values()) if state.created]

    def current_replicas(self) -> Replicas | None:
        context = _cv_app.get(None)
        if context is None:
            return None
        state = self.state(context.app)
        return state.replicas if state is not None else None

    def dispose(self) -> None:
        for state in list(self.apps.values()):
            if state.replicas is not None:
                state.replicas.dispose()

    def created_async_engines(self) -> list[EngineVariants]:
        return [state.async_created for state in list(self.apps.values()) if state.async_created]


def register(db: Database, app: Flask) -> None:
    """Attach ``db`` to ``app``: config, request hooks, teardown, CLI and shell context."""
    from ._cli import uow_cli

    if EXTENSION_KEY in app.extensions:
        raise UnitOfWorkError(
            f"The Flask app {app.name!r} is already registered with a flask-uow Database "
            f"({app.extensions[EXTENSION_KEY]!r}). Call init_app once per app."
        )
    integration = db.runtime.integration
    if integration is None:
        integration = FlaskIntegration(db)
        db.runtime.attach(integration)
    if type(integration) is not FlaskIntegration:  # a Quart integration is a subclass
        raise UnitOfWorkError(
            "This Database is already attached to another framework (a Quart app); one "
            "Database serves apps of one framework. Create a second Database for the Flask app."
        )
    config = read_config(
        app.config,
        instance_path=app.instance_path,
        default_url=db.url,
        default_engine_options=db.engine_options,
        default_sqlite_foreign_keys=db.sqlite_foreign_keys,
        default_sqlite_wal=db.sqlite_wal,
        debug=app.debug,
    )
    state = add_app(db, integration, app, config)
    app.extensions[EXTENSION_KEY] = db

    if config.per_request:
        _install_request_unit(db, app, config.read_only_methods)
    _install_async_views(db, app)
    app.teardown_appcontext(lambda error: end_leaked_units(db))
    app.cli.add_command(uow_cli)
    app.shell_context_processor(lambda: {"db": db})
    state.replicas = _flask_replicas.register(db, app)


def add_app(
    db: Database,
    integration: FlaskIntegration,
    app: object,
    config: AppConfig,
    *,
    pooled_async: bool = False,
) -> AppState:
    """Record what ``app`` configured, for a Flask or a Quart app alike: its engines (made on
    first use) and timeouts are its own; session options, the idle warning and
    OpenTelemetry belong to the Database."""
    if config.session_options:
        # Session options are shared by every app: refuse ones that would differ silently.
        merged = {**db.session_options, **config.session_options}
        if integration.apps and merged != db.session_options:
            raise UnitOfWorkError(
                "UOW_SESSION_OPTIONS differ between apps sharing one Database; pass "
                "session_options to Database() instead."
            )
        db.session_options = merged
    _apply_observability(db, config)
    state = AppState(config, pooled_async=pooled_async, timeouts=_app_timeouts(config))
    integration.apps[app] = state  # type: ignore[index]
    return state


def _app_timeouts(config: AppConfig) -> Timeouts | None:
    """The timeouts the app's config sets: they belong to this app (its engines carry
    them), like its URL and replicas; units of other apps sharing the Database keep theirs."""
    if config.statement_timeout is None and config.lock_timeout is None:
        return None
    from ._timeouts import Timeouts

    return Timeouts.resolve(
        Timeouts.from_options(config.statement_timeout, config.lock_timeout), None
    )


def _apply_observability(db: Database, config: AppConfig) -> None:
    # The idle warning and OpenTelemetry observe the Database, shared by its apps: an app
    # that turns them on turns them on for all (as Database(warn_idle_ms=...) would).
    if config.warn_idle_ms is not None and db.warn_idle_ms is None:
        db.warn_idle(config.warn_idle_ms)
    if config.otel:
        from . import otel

        if not otel.is_instrumented(db):
            otel.instrument(db)


def _install_request_unit(db: Database, app: Flask, read_only_methods: frozenset[str]) -> None:
    # request_started is sent before any before_request hook runs, whatever order the
    # hooks, blueprints and extensions were registered in.
    async_views: dict[tuple[str | None, str], bool] = {}  # (endpoint, method): async view?

    def begin(sender: Flask, **extra: Any) -> None:
        current = _cv_request.get().request  # one lookup instead of a proxy per attribute
        method = current.method
        origin = f"the per-request unit of {method} {current.path}"
        rule = current.url_rule
        key = (rule.endpoint if rule is not None else None, method)
        view_is_async = async_views.get(key)
        if view_is_async is None:
            view_is_async = async_views[key] = _view_is_async(app)
        if view_is_async:
            # The view runs in an event loop of its own: its unit is entered there.
            setattr(g, _ASYNC_VIEW, (origin, method in read_only_methods))
            return
        unit = UnitOfWork(db.runtime, read_only=method in read_only_methods, origin=origin)
        unit.__enter__()
        setattr(g, _REQUEST_UNIT, unit)

    request_started.connect(begin, app, weak=False)
    app.after_request(lambda response: _end_request_unit(db, response))
    app.teardown_request(lambda error: _abort_request_unit(db, error))

    # An exception raised by a before_request hook or the view rolls the request back,
    # whatever status its error handler answers (a redirect to a login page, say). Flask
    # offers no hook for handled exceptions, so the app's own handler is wrapped.
    handle_user_exception = app.handle_user_exception

    def roll_back_then_handle(error: Exception) -> Any:
        roll_back_on_error(g.get(_REQUEST_UNIT))
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
    # Flask runs an async view in an event loop of its own (asgiref), in another thread:
    # its units must be entered, and leaked ones rolled back, in that loop.
    # Flask's ensure_sync() hands coroutine functions to async_to_sync(): wrapping the latter
    # costs sync views and hooks nothing.
    async_to_sync = app.async_to_sync

    def async_to_sync_with_units(func: Callable[..., Any]) -> Callable[..., Any]:
        if has_request_context():
            # The view may run in the request's unit; any coroutine (a view, an async
            # before_request hook, an error handler) has its leaked units rolled back
            # before its loop ends, while their connections can still be closed.
            request_unit = g.pop(_ASYNC_VIEW, None) if _is_the_view(app, func) else None
            return async_to_sync(_async_view(db, func, request_unit))
        return async_to_sync(func)

    app.async_to_sync = async_to_sync_with_units  # type: ignore[method-assign]


def _async_view(
    db: Database,
    view: Callable[..., Coroutine[Any, Any, Any]],
    request_unit: tuple[str, bool] | None,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Run an async view in its event loop: in the request's unit when ``request_unit``
    gives its origin and read-only flag, and rolling back (with a warning) any async unit
    it leaves open.

    The request's unit commits when the response's status is below 400, and rolls back
    otherwise or when the view raises (the error then goes to the app's error handlers).
    """
    if request_unit is None:

        @functools.wraps(view)
        async def run_with_safety_net(*args: Any, **kwargs: Any) -> Any:
            depth = len(live_units(db.runtime))
            try:
                return await view(*args, **kwargs)
            finally:
                await abandon_async(live_units(db.runtime)[depth:], _ADVICE)

        return run_with_safety_net

    @functools.wraps(view)
    async def run_in_request_unit(*args: Any, **kwargs: Any) -> Response:
        origin, read_only = request_unit
        unit = UnitOfWork(db.runtime, read_only=read_only, origin=origin)
        async with unit:
            try:
                response = current_app.make_response(await view(*args, **kwargs))
            except BaseException:
                await abandon_async(units_above(db.runtime, unit), _ADVICE)
                raise
            await settle_request_unit_async(db.runtime, unit, response.status_code, _ADVICE)
        return response

    return run_in_request_unit


def _end_request_unit(db: Database, response: Response) -> Response:
    unit: UnitOfWork | None = g.pop(_REQUEST_UNIT, None)
    if unit is not None:
        settle_request_unit(db.runtime, unit, response.status_code, _ADVICE)
        unit.__exit__(None, None, None)
    return response


def _abort_request_unit(db: Database, error: BaseException | None) -> None:
    unit: UnitOfWork | None = g.pop(_REQUEST_UNIT, None)
    if unit is not None:
        end_aborted_request_unit(db.runtime, unit, error, _ADVICE)


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
