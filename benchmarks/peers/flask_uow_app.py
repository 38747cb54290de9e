"""The flask-uow contender: the real ledger app, plus the benchmark's ``bench`` blueprint.

The hot endpoints are the ledger's own views and services, untouched. ``/bench/hold`` is
written the way a ledger developer would write it: the read and the write are each a unit of
work (the ledger's services), and nothing is open while waiting on the external service.
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
    """Read in one unit, wait with no unit open, write in another."""
    accounts.get_account(account_id)  # raises NotFound
    time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
    return schemas.account_balance(accounts.deposit(account_id, 1))
