"""The ledger (flask-uow) with the ``bench`` endpoints, and bare SQLAlchemy serving the same
endpoints (``views``) with ``sessionmaker.begin()`` blocks; ``app`` builds any peer's app."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session, sessionmaker

from ledger.app import create_app as create_ledger_app
from ledger.database import db
from ledger.http import errorhandlers, schemas
from ledger.services import accounts
from ledger.views import ID

from .settings import HOLD_SECONDS, database_url, engine_options, read_write_engines
from .views import blueprint

DB, DISPOSE, SESSIONMAKERS = "bench-db", "bench-dispose", "bench-sessionmakers"
"""Keys of ``app.extensions``: the extension object (``benchmarks.units`` calls it directly),
the function closing the pool, bare SQLAlchemy's (read-write, read-only) sessionmakers."""


def app(db: object, dispose: Callable[[], None], **config: object) -> Flask:
    """A Flask app answering errors as the ledger does, its pool closed by :func:`dispose`."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, **config)
    app.extensions[DB], app.extensions[DISPOSE] = db, dispose
    errorhandlers.register(app)
    return app


def dispose(app: Flask) -> None:
    """Close the app's pooled connections (call inside its app context)."""
    app.extensions[DISPOSE]()


# -- flask-uow: the real ledger app, untouched, plus the connection hold endpoints -----------

bench = Blueprint("bench", __name__)


def create_uow_app() -> Flask:
    ledger = create_ledger_app(
        {"UOW_DATABASE_URL": database_url(), "UOW_ENGINE_OPTIONS": engine_options()}
    )
    ledger.register_blueprint(bench)
    ledger.extensions[DISPOSE] = db.dispose
    return ledger


@bench.get("/bench/noop")
def noop() -> ResponseReturnValue:
    return {"ok": True}


@bench.post(f"/bench/hold/<{ID}:account_id>")
def hold(account_id: int) -> ResponseReturnValue:
    """Read, wait, write in one unit: one transaction throughout, like the other apps'
    ``/bench/hold`` (the ledger's services join the enclosing unit)."""
    with db.unit_of_work():
        accounts.get_account(account_id)  # raises NotFound
        time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
        return schemas.ACCOUNT_BALANCE.write(accounts.deposit(account_id, 1))


@bench.post(f"/bench/hold-short/<{ID}:account_id>")
def hold_short(account_id: int) -> ResponseReturnValue:
    """Short units around the external call, as the ledger's services are written: read in a
    read-only unit, wait with no unit open, deposit in a read-write unit."""
    accounts.get_account(account_id)  # raises NotFound
    time.sleep(HOLD_SECONDS)
    return schemas.ACCOUNT_BALANCE.write(accounts.deposit(account_id, 1))


# -- bare SQLAlchemy ---------------------------------------------------------------------------


def create_bare_app() -> Flask:
    """Bare SQLAlchemy: ``with sessionmaker.begin() as session:`` per view, which commits at the
    end of the block and rolls back on error, as the ledger's units do."""
    read_write, read_only = read_write_engines(sa.create_engine(database_url(), **engine_options()))
    bare = app(None, read_write.dispose)
    bare.extensions[SESSIONMAKERS] = (
        sessionmaker(read_write, expire_on_commit=False),
        sessionmaker(read_only, expire_on_commit=False),
    )
    bare.register_blueprint(blueprint(reads, writes))
    return bare


def writes() -> AbstractContextManager[Session]:
    return current_app.extensions[SESSIONMAKERS][0].begin()  # type: ignore[no-any-return]


def reads() -> AbstractContextManager[Session]:
    return current_app.extensions[SESSIONMAKERS][1].begin()  # type: ignore[no-any-return]
