"""Flask: replicas from app config, and read-your-writes across requests via the Flask session.

The causal position (the primary's WAL position after the user's last write) travels in
the signed Flask session cookie, so it follows a user from request to request, whichever
worker process or thread serves them, without any change on the client side.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from flask import Flask, g, request_started, session
from flask.sessions import SessionMixin

from ._replicas import (
    DEFAULT_MAX_LAG,
    DEFAULT_MAX_WAIT,
    UNKNOWN_POSITION,
    Replicas,
    format_lsn,
    parse_lsn,
)

if TYPE_CHECKING:
    from ._database import Database

SESSION_KEY = "_uow_lsn"
"""Key in the Flask session: the primary's WAL position after this user's last write."""

_SCOPE = "_flask_uow_causal_scope"
_WARNED = "flask-uow-replicas-warned-no-secret"


def register(db: Database, app: Flask) -> None:
    """Create ``db.replicas`` from ``UOW_REPLICA_URLS`` and carry causal positions per user.

    Reads ``UOW_REPLICA_URLS`` (a list of URLs, or one string with URLs separated by
    spaces or commas), ``UOW_REPLICA_MAX_LAG`` and ``UOW_REPLICA_MAX_WAIT`` (seconds).
    Does nothing when neither the config nor ``Database(replicas=...)`` names a replica.
    """
    config = app.config
    urls = config.get("UOW_REPLICA_URLS")
    if isinstance(urls, str):
        urls = urls.replace(",", " ").split()
    if urls and db.replicas is None:
        db.replicas = Replicas(
            list(urls),
            {**db.engine_options, **config.get("UOW_ENGINE_OPTIONS", {})},
            max_lag=float(config.get("UOW_REPLICA_MAX_LAG", DEFAULT_MAX_LAG)),
            max_wait=float(config.get("UOW_REPLICA_MAX_WAIT", DEFAULT_MAX_WAIT)),
        )
    replicas = db.replicas
    if replicas is None:
        return

    def start(sender: Flask, **extra: Any) -> None:
        stored = session.get(SESSION_KEY)
        position = None
        if isinstance(stored, str):
            try:
                position = parse_lsn(stored)
            except ValueError:
                position = None
        setattr(g, _SCOPE, replicas.begin_scope(position))

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
        scope = g.pop(_SCOPE, None)
        if scope is not None:
            try:
                replicas.end_scope(scope)
            except ValueError:  # ended in another context: start none there
                replicas.begin_scope(None)

    request_started.connect(start, app, weak=False)
    # after_request functions run last-registered first: at index 0, this one runs after
    # every other (a per-request unit commits in one), just before the session is saved.
    app.after_request_funcs.setdefault(None, []).insert(0, save)
    app.teardown_request(end)


def _store(flask_session: SessionMixin, position: int) -> None:
    flask_session[SESSION_KEY] = format_lsn(position)


def _warn_no_secret(app: Flask) -> None:
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
