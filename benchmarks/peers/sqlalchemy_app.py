"""The ledger's hot endpoints with bare SQLAlchemy: each view opens its ``Session`` by hand.

Reads use ``with reads.begin() as session:`` on a read-only engine, writes
``with writes.begin() as session:``: both commit at the end of the block and roll back on
error, as the ledger's read-only and read-write units do. The engines are stock, configured as
SQLAlchemy's documentation says for each backend:

- PostgreSQL: reads with ``postgresql_readonly=True`` (psycopg sends ``BEGIN READ ONLY``);
- MariaDB: reads send ``SET TRANSACTION READ ONLY`` first;
- SQLite: the documented pysqlite recipe for real transactions (driver transactions off,
  ``BEGIN`` from a ``begin`` listener), ``BEGIN IMMEDIATE`` for writes, as the ledger sends.

A transfer sends the same notification after COMMIT as the ledger's ``on_commit`` hook.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy import event, or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ledger import errorhandlers, notifications, schemas
from ledger.errors import BalanceLimitExceeded, InsufficientFunds, NotFound, SameAccount
from ledger.models import MAX_CENTS, Account, Customer, Transfer

from . import shapes
from .settings import HOLD_SECONDS, database_url, engine_options

EXTENSION_KEY = "bench-sessionmakers"
api = Blueprint("api", __name__)


def engines(url: str, options: dict[str, Any]) -> tuple[sa.Engine, sa.Engine]:
    """(read-write, read-only) engines on one pool, configured as described above."""
    engine = sa.create_engine(url, **options)
    name = engine.dialect.name
    if name == "sqlite":

        @event.listens_for(engine, "connect")
        def connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA foreign_keys = ON").close()

        @event.listens_for(engine, "begin")
        def begin(connection: sa.Connection) -> None:
            immediate = connection.get_execution_options().get("bench_write_lock")
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine.execution_options(bench_write_lock=True), engine
    if name == "postgresql":
        return engine, engine.execution_options(postgresql_readonly=True)
    read_only = engine.execution_options(bench_read_only=True)
    event.listen(read_only, "begin", lambda c: c.exec_driver_sql("SET TRANSACTION READ ONLY"))
    return engine, read_only


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    read_write, read_only = engines(database_url(), engine_options())
    app.extensions[EXTENSION_KEY] = (
        sessionmaker(read_write, expire_on_commit=False),
        sessionmaker(read_only, expire_on_commit=False),
    )
    errorhandlers.register(app)
    app.register_blueprint(api)
    return app


def dispose(app: Flask) -> None:
    """Close the app's pooled connections."""
    writes, _ = app.extensions[EXTENSION_KEY]
    writes.kw["bind"].dispose()


def writes() -> sessionmaker[Session]:
    return current_app.extensions[EXTENSION_KEY][0]  # type: ignore[no-any-return]


def reads() -> sessionmaker[Session]:
    return current_app.extensions[EXTENSION_KEY][1]  # type: ignore[no-any-return]


def _locked_account(session: Session, account_id: int) -> Account | None:
    stmt = (
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one_or_none()


@api.get(f"/customers/<{shapes.ID}:customer_id>")
def get_customer(customer_id: int) -> ResponseReturnValue:
    stmt = (
        select(Customer).where(Customer.id == customer_id).options(selectinload(Customer.account))
    )
    with reads().begin() as session:
        customer = session.scalars(stmt).one_or_none()
        if customer is None:
            raise NotFound("customer", customer_id)
        return shapes.customer(customer)


@api.get(f"/accounts/<{shapes.ID}:account_id>/transfers")
def account_transfers(account_id: int) -> ResponseReturnValue:
    stmt = (
        select(Transfer)
        .where(or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id))
        .order_by(Transfer.id.desc())
    )
    with reads().begin() as session:
        if session.get(Account, account_id) is None:
            raise NotFound("account", account_id)
        return {"items": [shapes.transfer(t) for t in session.scalars(stmt)]}


@api.post("/transfers")
def create_transfer() -> ResponseReturnValue:
    data = schemas.new_transfer(schemas.json_object(request.get_data(cache=False)))
    if data.from_account == data.to_account:
        raise SameAccount(data.from_account)
    with writes().begin() as session:
        # Lock both rows in ascending id order, as the ledger does.
        ids = sorted((data.from_account, data.to_account))
        locked = {i: _locked_account(session, i) for i in ids}
        source, target = locked[data.from_account], locked[data.to_account]
        if source is None:
            raise NotFound("account", data.from_account)
        if target is None:
            raise NotFound("account", data.to_account)
        if source.balance < data.amount:
            raise InsufficientFunds(source.id, source.balance, data.amount)
        if target.balance > MAX_CENTS - data.amount:
            raise BalanceLimitExceeded(target.id)
        source.balance -= data.amount
        target.balance += data.amount
        transfer = Transfer(from_account_id=source.id, to_account_id=target.id, amount=data.amount)
        session.add(transfer)
        session.flush()
        body = shapes.transfer(transfer)
    notifications.transfer_completed(
        body["id"], body["from_account"], body["to_account"], body["amount"]
    )
    return body, 201


@api.get("/bench/noop")
def noop() -> ResponseReturnValue:
    return {"ok": True}


@api.post(f"/bench/hold/<{shapes.ID}:account_id>")
def hold(account_id: int) -> ResponseReturnValue:
    """Read, wait on an external service, write: one transaction held across the wait, as
    the Flask-SQLAlchemy twin and flask-uow's per-request unit do."""
    with writes().begin() as session:
        if session.get(Account, account_id) is None:
            raise NotFound("account", account_id)
        time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
        account = _locked_account(session, account_id)
        assert account is not None
        account.balance += 1
        session.flush()
        body = shapes.account_balance(account)
    return body


@api.post(f"/bench/hold-short/<{shapes.ID}:account_id>")
def hold_short(account_id: int) -> ResponseReturnValue:
    """Short transactions around the external call, as the ledger's services do: a read-only
    one to read, nothing open during the wait, a read-write one to deposit."""
    with reads().begin() as session:
        if session.get(Account, account_id) is None:
            raise NotFound("account", account_id)
    time.sleep(HOLD_SECONDS)
    with writes().begin() as session:
        account = _locked_account(session, account_id)
        if account is None:
            raise NotFound("account", account_id)
        account.balance += 1
        session.flush()
        return shapes.account_balance(account)
