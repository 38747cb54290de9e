"""The flask-uow contender: the real ledger app, plus the benchmark's ``bench`` blueprint.

The hot endpoints are the ledger's own views and services, untouched. ``/bench/hold`` holds
one unit across the external call, as the other apps hold one transaction;
``/bench/hold-short`` is how the ledger's services are written (a unit to read, a unit to
write, nothing open during the wait), beside bare SQLAlchemy written the same way.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask
from flask.typing import ResponseReturnValue

from ledger import schemas
from ledger.app import create_app as create_ledger_app
from ledger.database import db
from ledger.services import accounts

from . import shapes
from .settings import HOLD_SECONDS, database_url, engine_options

bench = Blueprint("bench", __name__)


def create_app() -> Flask:
    app = create_ledger_app(
        {"UOW_DATABASE_URL": database_url(), "UOW_ENGINE_OPTIONS": engine_options()}
    )
    app.register_blueprint(bench)
    return app


def dispose(app: Flask) -> None:
    """Close the app's pooled connections (call inside its app context)."""
    db.dispose()


@bench.get("/bench/noop")
def noop() -> ResponseReturnValue:
    return {"ok": True}


@bench.post(f"/bench/hold/<{shapes.ID}:account_id>")
def hold(account_id: int) -> ResponseReturnValue:
    """Read, wait, write in one unit: one transaction throughout, like the other apps'
    ``/bench/hold`` (the ledger's services join the enclosing unit)."""
    with db.unit_of_work():
        accounts.get_account(account_id)  # raises NotFound
        time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
        return schemas.account_balance(accounts.deposit(account_id, 1))


@bench.post(f"/bench/hold-short/<{shapes.ID}:account_id>")
def hold_short(account_id: int) -> ResponseReturnValue:
    """Short units around the external call, as the ledger's services are written: read in a
    read-only unit, wait with no unit open, deposit in a read-write unit."""
    accounts.get_account(account_id)  # raises NotFound
    time.sleep(HOLD_SECONDS)
    return schemas.account_balance(accounts.deposit(account_id, 1))
