"""Quart integration: per-app engines, an async unit per request, the teardown safety net.

``db.init_app(quart_app)`` reads the same ``UOW_*`` keys as for Flask. Quart serves every
request of an app on one event loop, so the app's async engine keeps a pool (unlike Flask's
async views, which each run on a loop of their own). Sync views, which Quart runs in worker
threads, open their own units there; the request's unit belongs to the request's task.

This is a layer on top of the core: it imports the core, and the core never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart, Response, g, request
from quart.cli import AppGroup
from quart.globals import _cv_app
from quart.signals import request_started

from ._cli import check_command, create_all_command, drop_all_command
from ._engines import EngineVariants
from ._errors import UnitOfWorkError
from ._flask import EXTENSION_KEY, FlaskIntegration, add_app
from ._flask_config import read_config
from ._request_units import (
    abandon_async,
    end_aborted_request_unit_async,
    roll_back_on_error,
    settle_request_unit_async,
    units_in_scope,
)
from ._unit import UnitOfWork

if TYPE_CHECKING:
    from ._database import Database

_REQUEST_UNIT = "_flask_uow_request_unit"


class QuartIntegration(FlaskIntegration):
    """Gives a Database's units the current Quart app's engines and app context."""

    def current_engines(self) -> EngineVariants | None:
        context = _cv_app.get(None)
        if context is None:
            return None
        state = self.state(context.app)  # type: ignore[arg-type]
        return state.variants() if state is not None else None

    def current_async_engines(self) -> EngineVariants | None:
        context = _cv_app.get(None)
        if context is None:
            return None
        state = self.state(context.app)  # type: ignore[arg-type]
        return state.async_variants() if state is not None else None

    def current_scope(self) -> object | None:
        return _cv_app.get(None)


def register(db: Database, app: Quart) -> None:
    """Attach ``db`` to a Quart ``app``: config, request unit, teardown, CLI, shell context."""
    if EXTENSION_KEY in app.extensions:
        raise UnitOfWorkError(
            f"The Quart app {app.name!r} is already registered with a flask-uow Database "
            f"({app.extensions[EXTENSION_KEY]!r}). Call init_app once per app."
        )
    integration = db.runtime.integration
    if integration is None:
        integration = QuartIntegration(db)
        db.runtime.attach(integration)
    if not isinstance(integration, QuartIntegration):
        raise UnitOfWorkError(
            "This Database is already attached to another framework (a Flask app); one "
            "Database serves apps of one framework. Create a second Database for the Quart app."
        )
    config = read_config(
        app.config,
        instance_path=app.instance_path,
        default_url=db.url,
        default_engine_options=db.engine_options,
        default_sqlite_foreign_keys=db.sqlite_foreign_keys,
        default_sqlite_wal=db.sqlite_wal,
    )
    add_app(db, integration, app, config, pooled_async=True)
    app.extensions[EXTENSION_KEY] = db

    if config.per_request:
        _install_request_unit(db, app, config.read_only_methods)

    @app.teardown_appcontext
    async def end_leaked(error: BaseException | None) -> None:
        await end_leaked_units(db)

    @app.after_serving
    async def close_connections() -> None:
        # Async connections belong to the serving loop: close them before it ends.
        await db.dispose_async()

    app.cli.add_command(_cli())
    app.shell_context_processor(lambda: {"db": db})


def _cli() -> AppGroup:
    group = AppGroup("uow", help="Manage the flask-uow database of this app.")
    for command in (create_all_command, drop_all_command, check_command):
        callback: Any = command.callback
        group.command(command.name, help=command.help, with_appcontext=True)(
            callback.__wrapped__
        )
    return group


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
        setattr(g, _REQUEST_UNIT, unit)

    request_started.connect(begin, app, weak=False)

    @app.after_request
    async def end(response: Response) -> Response:
        unit: UnitOfWork | None = g.pop(_REQUEST_UNIT, None)
        if unit is not None:
            await settle_request_unit_async(db.runtime, unit, response.status_code, _ADVICE)
            await unit.__aexit__(None, None, None)
        return response

    @app.teardown_request
    async def abort(error: BaseException | None) -> None:
        unit: UnitOfWork | None = g.pop(_REQUEST_UNIT, None)
        if unit is not None:
            await end_aborted_request_unit_async(db.runtime, unit, error, _ADVICE)

    # An exception raised by a before_request hook or the view rolls the request back,
    # whatever status its error handler answers.
    handle_user_exception = app.handle_user_exception

    async def roll_back_then_handle(error: Exception) -> Any:
        roll_back_on_error(g.get(_REQUEST_UNIT))
        return await handle_user_exception(error)

    app.handle_user_exception = roll_back_then_handle  # type: ignore[method-assign]


async def end_leaked_units(db: Database) -> None:
    """Roll back units opened in the app context that is ending, warning where they began."""
    await abandon_async(units_in_scope(db.runtime, _cv_app.get(None)), _ADVICE)


_ADVICE = (
    "End units with 'async with db.unit_of_work():' or '@db.transactional' so that they "
    "close on every path."
)
