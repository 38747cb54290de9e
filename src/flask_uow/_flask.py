"""The framework layer: Flask and Quart apps go through one code path.

Registering an app reads its config (``AppConfig``), records its engines, timeouts and
replicas, turns on the idle warning and OpenTelemetry, installs the per-request unit and
the safety nets, and adds the ``uow`` commands and ``db`` to the shell. What differs
between Flask and Quart is a ``Framework`` record: their context variables, signals and
proxies, how a hook runs (sync or async), and how the request's unit runs
(``_flask_requests`` for Flask, ``_quart`` for Quart).

This is a layer on top of the core: it imports the core, and the core never imports it
(``Database.init_app`` reaches it through ``_frameworks``).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
import flask
import flask.cli
from flask.globals import _cv_app, _cv_request

from ._cli import command_group
from ._engines import EngineVariants, create_engine
from ._errors import UnitOfWorkError
from ._flask_config import AppConfig, read_config
from ._flask_replicas import register_replicas
from ._flask_requests import install_flask_units
from ._frameworks import EXTENSION_KEY

if TYPE_CHECKING:
    from ._database import Database
    from ._replicas import Replicas
    from ._timeouts import Timeouts

_POOL_ONLY_OPTIONS = frozenset(
    {"pool_size", "max_overflow", "pool_timeout", "pool_use_lifo", "poolclass", "pool"}
)


@dataclass(frozen=True, eq=False)
class Framework:
    """What differs between Flask and Quart for flask-uow; everything else is shared."""

    name: str
    """"Flask" or "Quart", for messages."""
    app_context: ContextVar[Any]
    """The framework's app-context variable: the current app, and the scope of units."""
    request_context: ContextVar[Any]
    """The framework's request-context variable (the current request's query arguments)."""
    request_started: Any
    """The signal sent before any ``before_request`` hook runs."""
    g: Any
    session: Any
    """The framework's ``g`` and ``session`` proxies."""
    current_app: Any
    cli_group: type[click.Group]
    """The framework's ``current_app`` proxy and ``AppGroup`` class, for the ``uow`` group."""
    hook: Callable[[Callable[..., Any]], Callable[..., Any]]
    """Makes a hook (a plain function) fit to register with the framework: Quart's hooks
    and signal receivers are coroutines, so that they run in the request's task."""
    install_units: Callable[[Database, Any, AppConfig], None]
    """Installs the request's unit (with ``UOW_PER_REQUEST``) and the safety nets."""
    pooled_async: bool
    """Whether the app's async engine keeps a pool: only when every request of the app
    runs on one event loop (Quart), not for Flask's async views (a loop per request)."""


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
                        ),
                        timeouts=self.timeouts,
                    )
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
                        ),
                        replicas=self.replicas,
                        timeouts=self.timeouts,
                    )
                    self.created = created
                created = self.created
        return created


class AppIntegration:
    """Gives a Database's units the current app's engines, replicas and app context."""

    def __init__(self, db: Database, framework: Framework) -> None:
        self.db = db
        self.framework = framework
        self.apps: weakref.WeakKeyDictionary[Any, AppState] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[Any], AppState] | None = None
        self.current_scope: Callable[[], object | None] = functools.partial(
            framework.app_context.get, None
        )
        """The current app context, or None: the scope a unit is opened in."""

    def state(self, app: Any) -> AppState | None:
        """The state of ``app``, or None when it is not registered but the Database has a URL;
        remembered as the last app's, which ``current_state`` looks at first."""
        state = self.apps.get(app)
        if state is None:
            if self.db.url is None:
                raise UnitOfWorkError(
                    f"The current {self.framework.name} app {app.name!r} is not registered "
                    "with this Database. Did you forget to call db.init_app(app) in the app "
                    "factory?"
                )
            return None
        self._last = (weakref.ref(app), state)
        return state

    def current_state(self) -> AppState | None:
        context = self.framework.app_context.get(None)
        if context is None:
            return None
        cached = self._last  # the hot path: the same app as last time, without a call
        if cached is not None and cached[0]() is context.app:
            return cached[1]
        return self.state(context.app)

    def current_engines(self) -> EngineVariants | None:
        """The current app's engines (created on its first unit), None outside an app.

        Every outermost unit asks this once: ``current_state``'s lookup is written out here
        rather than called (the cost gates count Python calls per unit)."""
        context = self.framework.app_context.get(None)
        if context is None:
            return None
        cached = self._last
        if cached is not None and cached[0]() is context.app:
            state = cached[1]
        else:
            found = self.state(context.app)
            if found is None:
                return None
            state = found
        created = state.created
        return created if created is not None else state.variants()

    def current_async_engines(self) -> EngineVariants | None:
        state = self.current_state()
        return state.async_variants() if state is not None else None

    def created_engines(self) -> list[EngineVariants]:
        return [state.created for state in list(self.apps.values()) if state.created]

    def current_replicas(self) -> Replicas | None:
        state = self.current_state()
        return state.replicas if state is not None else None

    def dispose(self) -> None:
        for state in list(self.apps.values()):
            if state.replicas is not None:
                state.replicas.dispose()

    def created_async_engines(self) -> list[EngineVariants]:
        return [state.async_created for state in list(self.apps.values()) if state.async_created]


def register(db: Database, app: Any, framework: Framework) -> None:
    """Attach ``db`` to a Flask or Quart ``app``: config, engines, timeouts, replicas, the
    idle warning and OpenTelemetry, the request's unit, safety nets, CLI and shell context."""
    if EXTENSION_KEY in app.extensions:
        raise UnitOfWorkError(
            f"The {framework.name} app {app.name!r} is already registered with a flask-uow "
            f"Database ({app.extensions[EXTENSION_KEY]!r}). Call init_app once per app."
        )
    integration = db.runtime.integration
    if integration is None:
        integration = AppIntegration(db, framework)
        db.runtime.attach(integration)
    if not isinstance(integration, AppIntegration) or integration.framework is not framework:
        other = integration.framework.name if isinstance(integration, AppIntegration) else "?"
        raise UnitOfWorkError(
            f"This Database is already attached to another framework (a {other} app); one "
            "Database serves apps of one framework. Create a second Database for the "
            f"{framework.name} app."
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
    state = add_app(db, integration, app, config, pooled_async=framework.pooled_async)
    app.extensions[EXTENSION_KEY] = db
    framework.install_units(db, app, config)
    app.cli.add_command(command_group(framework.cli_group, framework.current_app))
    app.shell_context_processor(lambda: {"db": db})
    state.replicas = register_replicas(db, app, config, framework)


def add_app(
    db: Database,
    integration: AppIntegration,
    app: object,
    config: AppConfig,
    *,
    pooled_async: bool = False,
) -> AppState:
    """Record what ``app`` configured: its engines (made on first use) and timeouts are its
    own; session options, the idle warning and OpenTelemetry belong to the Database."""
    if config.session_options:
        # Session options are shared by every app: refuse ones that would differ silently.
        merged = {**db.session_options, **config.session_options}
        if integration.apps and merged != db.session_options:
            raise UnitOfWorkError(
                "UOW_SESSION_OPTIONS differ between apps sharing one Database; pass "
                "session_options to Database() instead."
            )
        db.session_options = merged
    if config.session_commit is not None:
        if integration.apps and config.session_commit != db.session_commit:
            raise UnitOfWorkError(
                "UOW_SESSION_COMMIT differs between apps sharing one Database; pass "
                "session_commit to Database() instead."
            )
        db.session_commit = config.session_commit
    _apply_observability(db, config)
    state = AppState(config, pooled_async=pooled_async, timeouts=_app_timeouts(config))
    integration.apps[app] = state
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


def _same(hook: Callable[..., Any]) -> Callable[..., Any]:
    return hook


FLASK = Framework(
    name="Flask",
    app_context=_cv_app,
    request_context=_cv_request,
    request_started=flask.request_started,
    g=flask.g,
    session=flask.session,
    current_app=flask.current_app,
    cli_group=flask.cli.AppGroup,
    hook=_same,
    install_units=install_flask_units,
    pooled_async=False,
)
"""Flask: sync hooks; a sync unit per request, or a request loop for an async view."""
