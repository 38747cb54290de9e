"""Replicas from app config, and read-your-writes across requests via the Flask or Quart session.

The causal position (the primary's WAL position after the user's last write) travels in
the signed Flask session cookie, so it follows a user from request to request, whichever
worker process or thread serves them, without any change on the client side.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

from flask.sessions import SessionMixin

from ._replicas import (
    UNKNOWN_POSITION,
    Replicas,
    format_lsn,
    parse_lsn,
)

if TYPE_CHECKING:
    from ._database import Database
    from ._flask import Framework
    from ._flask_config import AppConfig

SESSION_KEY = "_uow_lsn"
"""Key in the Flask session: the primary's WAL position after this user's last write."""

_SCOPE = "_flask_uow_causal_scope"
_WARNED = "flask-uow-replicas-warned-no-secret"


def register_replicas(
    db: Database, app: Any, config: AppConfig, framework: Framework
) -> Replicas | None:
    """The app's replicas, from ``UOW_REPLICA_URLS``; carry causal positions per user.

    The replicas belong to this app (each app of a shared Database has its own); without
    ``UOW_REPLICA_URLS`` the app uses ``Database(replicas=...)``, if any. Returns None, and
    installs nothing, when neither names a replica.
    """
    replicas = db.own_replicas
    if config.replica_urls:
        replicas = Replicas(
            list(config.replica_urls),
            config.engine_options,
            max_lag=config.replica_max_lag,
            max_wait=config.replica_max_wait,
        )
    if replicas is None:
        return None
    g, session, hook = framework.g, framework.session, framework.hook
    request_context = framework.request_context

    def owner() -> tuple[object, int]:
        # A thread running a copy of the request context shares its g: only the request's
        # own context and thread end its causal scope.
        return request_context.get(None), threading.get_ident()

    def start(sender: Any, **extra: Any) -> None:
        stored = session.get(SESSION_KEY)
        position = None
        if isinstance(stored, str):
            try:
                position = parse_lsn(stored)
            except ValueError:
                position = None
        setattr(g, _SCOPE, (owner(), replicas.begin_scope(position)))

    def save(response: Any) -> Any:
        position = replicas.current_position()
        if position is None or position == UNKNOWN_POSITION:
            return response
        stored = session.get(SESSION_KEY)
        if isinstance(stored, str) and parse_lsn(stored) >= position:
            return response
        if app.session_interface.is_null_session(session):
            _warn_no_secret(app)
            return response
        _store(session, position)
        return response

    def end(error: BaseException | None) -> None:
        started = g.get(_SCOPE)
        if started is None or started[0] != owner():
            return
        g.pop(_SCOPE)
        try:
            replicas.end_scope(started[1])
        except ValueError:  # ended in another context: start none there
            replicas.begin_scope(None)

    framework.request_started.connect(hook(start), app, weak=False)
    # after_request functions run last-registered first: at index 0, this one runs after
    # every other (a per-request unit commits in one), just before the session is saved.
    app.after_request_funcs.setdefault(None, []).insert(0, hook(save))
    app.teardown_request(hook(end))
    return replicas


def _store(flask_session: SessionMixin, position: int) -> None:
    flask_session[SESSION_KEY] = format_lsn(position)


def _warn_no_secret(app: Any) -> None:
    if app.extensions.get(_WARNED):
        return
    app.extensions[_WARNED] = True
    from ._errors import UnitOfWorkWarning

    warnings.warn(
        "flask-uow: this app has read replicas but no SECRET_KEY, so the Flask session cannot "
        "carry a user's last write to their next request, and that request may read from a "
        "replica that has not replayed it yet. Set app.secret_key (or SECRET_KEY in config).",
        UnitOfWorkWarning,
        stacklevel=2,
    )
