"""Flask integration: per-app engines, units per request, the teardown safety net."""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, Response, g
from flask.ctx import AppContext
from flask.globals import _cv_app

from . import _flask_replicas
from ._engines import EngineVariants, create_engine
from ._errors import UnitOfWorkError
from ._hooks import logger

if TYPE_CHECKING:
    from ._database import Database
    from ._unit import UnitOfWork

EXTENSION_KEY = "flask-uow"
_REQUEST_UNIT = "_flask_uow_request_unit"


class UnitOfWorkWarning(RuntimeWarning):
    """A unit of work was left open and flask-uow had to end it."""


@dataclass(eq=False)
class AppState:
    """What one Flask app configured for a Database; the engine is made on first use."""

    url: sa.URL
    engine_options: dict[str, Any]
    per_request: bool
    created: EngineVariants | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def variants(self) -> EngineVariants:
        created = self.created
        if created is None:
            with self.lock:
                if self.created is None:
                    self.created = EngineVariants(create_engine(self.url, self.engine_options))
                created = self.created
        return created


def register(db: Database, app: Flask) -> None:
    """Attach ``db`` to ``app``: config, request hooks, teardown, CLI and shell context."""
    from ._cli import uow_cli
    from ._database import check_session_options

    if EXTENSION_KEY in app.extensions:
        raise UnitOfWorkError(
            f"The Flask app {app.name!r} is already registered with a flask-uow Database "
            f"({app.extensions[EXTENSION_KEY]!r}). Call init_app once per app."
        )
    config = app.config
    url = config.get("UOW_DATABASE_URL") or db.url or _default_sqlite_url(app)
    engine_options = {**db.engine_options, **config.get("UOW_ENGINE_OPTIONS", {})}
    session_options = config.get("UOW_SESSION_OPTIONS")
    if session_options:
        # Session options are shared by every app: refuse ones that would differ silently.
        merged = check_session_options({**db.session_options, **session_options})
        if db._apps and merged != db.session_options:
            raise UnitOfWorkError(
                "UOW_SESSION_OPTIONS differ between apps sharing one Database; pass "
                "session_options to Database() instead."
            )
        db.session_options = merged
    per_request = bool(config.get("UOW_PER_REQUEST", False))
    db._apps[app] = AppState(sa.make_url(url), engine_options, per_request)
    db._has_apps = True
    app.extensions[EXTENSION_KEY] = db

    if per_request:
        app.before_request(lambda: _begin_request_unit(db))
        app.after_request(lambda response: _end_request_unit(db, response))
        app.teardown_request(lambda error: _abort_request_unit(db, error))
    app.teardown_appcontext(lambda error: end_leaked_units(db))
    app.cli.add_command(uow_cli)
    app.shell_context_processor(lambda: {"db": db})
    _flask_replicas.register(db, app)


def _default_sqlite_url(app: Flask) -> str:
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "app.db")


def current_context() -> AppContext | None:
    """The active app context, or None (one ContextVar lookup)."""
    return _cv_app.get(None)


def current_state(db: Database, context: AppContext | None) -> AppState | None:
    """The state of the app of ``context``, or None outside an app context."""
    if context is None:
        return None
    app = context.app
    cached = db._last_app
    if cached is not None and cached[0]() is app:
        return cached[1]
    state = db._apps.get(app)
    if state is None:
        if db.url is None:
            raise UnitOfWorkError(
                f"The current Flask app {app.name!r} is not registered with this Database. Did "
                "you forget to call db.init_app(app) in the app factory?"
            )
        return None
    db._last_app = (weakref.ref(app), state)
    return state


def note_app_context(unit: UnitOfWork, context: AppContext | None) -> None:
    """Remember which app context an outermost unit was opened in, and where."""
    if context is not None:
        unit._app_context = context
        unit._note_origin()


def end_leaked_units(db: Database) -> None:
    """Roll back units opened in the app context that is ending, warning where they began."""
    stack = db._stack.get()
    if not stack:
        return
    context = current_context()
    for unit in reversed(stack):
        if unit._app_context is context and unit.is_outermost:
            warnings.warn(
                f"flask-uow: a unit of work opened at {unit.opened_at} was still open when the "
                "app context ended; it was rolled back. End units with 'with "
                "db.unit_of_work():' or '@db.transactional' so that they close on every path; "
                "for a streaming response, wrap the generator in stream_with_context().",
                UnitOfWorkWarning,
                stacklevel=2,
            )
            for above in db._stack.get()[::-1]:
                if above is unit:
                    break
                db._pop(above)
            unit._abandon()


def _begin_request_unit(db: Database) -> None:
    unit = db.unit_of_work()
    unit.__enter__()
    setattr(g, _REQUEST_UNIT, unit)


def _end_request_unit(db: Database, response: Response) -> Response:
    unit: UnitOfWork | None = g.pop(_REQUEST_UNIT, None)
    if unit is not None:
        if response.status_code >= 400:
            unit.set_rollback()
        unit.__exit__(None, None, None)
    return response


def _abort_request_unit(db: Database, error: BaseException | None) -> None:
    unit: UnitOfWork | None = g.pop(_REQUEST_UNIT, None)
    if unit is None:
        return
    try:
        if error is None:
            unit.set_rollback()
            unit.__exit__(None, None, None)
        else:
            unit.__exit__(type(error), error, error.__traceback__)
    except Exception:
        logger.exception("flask-uow: ending the request's unit of work failed")
