"""The bank test: 16 threads move money through the ledger's services while faults hit them.

Faults, all at once:

(a) application faults: an exception raised inside the transfer service right after it wrote
    the transfer and its idempotency key, or raised in the caller's unit after a service
    returned and its writes were flushed;
(b) the app's connections terminated from outside at random moments (``pg_terminate_backend``,
    MariaDB ``KILL CONNECTION``); SQLite has no server, so there another connection holds the
    write lock longer than the app's busy timeout;
(c) a quarter of the work runs at SERIALIZABLE isolation, which provokes serialization
    failures and deadlocks that ``@db.transactional(retries=...)`` must retry.

Every operation is classified by what its caller saw: ok, failed (the error proves nothing was
committed), or unknown (the connection died while COMMIT was in flight). Unknown transfers are
resent with their Idempotency-Key, unknown deposits looked up in their deposit slip. Then the
books must balance to the cent, every success be stored exactly once, no failure be visible,
no hook have run for a rolled-back unit, and no connection be left checked out or idle in a
transaction.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_uow import CommitOutcomeUnknown, UnitOfWork, is_transient
from ledger.adapter import DBAdapter
from ledger.database import db
from ledger.models import Account, IdempotencyKey, Transfer
from ledger.services import accounts, customers, transfers
from ledger.services.errors import LedgerError
from ledger.services.notifications import outbox

from ._faults import (
    ConnectionKiller,
    ErrorTally,
    SqliteLockHolder,
    admin_engine,
    checked_out,
    open_transactions,
    sqlite_path,
)
from ._scale import scaled, scaled_seconds
from .conftest import LedgerFactory, LogRecorder, Target

THREADS = 16
OPS_PER_THREAD = scaled(20, 600)
ACCOUNTS = scaled(8, 12)
OPENING_DEPOSIT = 10_000
RETRIES = 6
"""Retries of the test's own units; the ledger's services retry 3 times on their own."""
LOAD_DEADLINE = scaled_seconds(90, 1200)

slips = sa.MetaData()
deposit_slips = sa.Table(
    "rel_bank_deposit_slips",
    slips,
    sa.Column("op_id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.BigInteger, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
)
"""One row per committed deposit, written in the deposit's own transaction: the ground truth."""


class InjectedFault(Exception):
    """Raised on purpose after partial writes; the unit around it must roll back."""


@dataclass(frozen=True, slots=True)
class Op:
    """One operation a client asks for."""

    id: str
    kind: str
    """deposit or transfer."""
    route: str
    """service: call the ledger's service as is; unit: inside a unit of the test (the service
    joins it); serializable: the same, at SERIALIZABLE isolation."""
    fault: str | None
    """None, "inside_service" (after the transfer's writes) or "after_write" (in the unit)."""
    account: int
    other: int
    amount: int

    @property
    def key(self) -> str:
        """The transfer's Idempotency-Key."""
        return f"bank-{self.id}"


@dataclass(slots=True)
class Outcome:
    op: Op
    status: str
    """ok, failed or unknown."""
    error: str | None = None
    transfer_id: int | None = None
    replayed: bool = False
    resolution: str | None = None


@dataclass
class Tracker:
    """What the threads saw, and what faults and hooks did."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: Counter[str] = field(default_factory=Counter)
    commit_hooks: Counter[str] = field(default_factory=Counter)
    rollback_hooks: Counter[str] = field(default_factory=Counter)
    local: threading.local = field(default_factory=threading.local)

    def count(self, counter: Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1

    @property
    def last_unit(self) -> UnitOfWork | None:
        unit: UnitOfWork | None = getattr(self.local, "unit", None)
        return unit

    def note_unit(self) -> None:
        """Remember the thread's outermost unit: after a failure it tells whether COMMIT was
        sent (a service joining the test's unit leaves the test's unit noted)."""
        unit = db.current
        if unit is not None and unit.is_outermost:
            self.local.unit = unit


class Bank:
    """Runs operations through the ledger's services, the way the ops ask."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.in_unit = db.transactional(retries=RETRIES)(self._apply)
        self.in_serializable_unit = db.transactional(
            isolation_level="SERIALIZABLE", retries=RETRIES
        )(self._apply)

    def _apply(self, op: Op) -> transfers.TransferResult | accounts.AccountDetails:
        tracker = self.tracker
        tracker.note_unit()
        unit = db.current
        assert unit is not None
        unit.on_commit(partial(tracker.count, tracker.commit_hooks, op.id))
        unit.on_rollback(partial(tracker.count, tracker.rollback_hooks, op.id))
        result: transfers.TransferResult | accounts.AccountDetails
        if op.kind == "deposit":
            result = accounts.deposit(op.account, op.amount)
            db.session.execute(
                deposit_slips.insert().values(op_id=op.id, account_id=op.account, amount=op.amount)
            )
        else:
            result = self._transfer(op)
        if op.fault == "after_write":
            db.session.flush()
            tracker.count(tracker.faults, "after_write")
            raise InjectedFault(op.id)
        return result

    def _transfer(self, op: Op) -> transfers.TransferResult:
        self.tracker.local.fail_inside = op.fault == "inside_service"
        try:
            return transfers.transfer(op.account, op.other, op.amount, idempotency_key=op.key)
        finally:
            self.tracker.local.fail_inside = False

    def run(self, op: Op) -> Outcome:
        """Run ``op`` and classify what its caller saw."""
        self.tracker.local.unit = None
        try:
            if op.route == "service":
                result: Any = self._transfer(op)
            elif op.route == "serializable":
                result = self.in_serializable_unit(op)
            else:
                result = self.in_unit(op)
        except (InjectedFault, LedgerError) as error:
            return Outcome(op, "failed", type(error).__name__)
        except CommitOutcomeUnknown as error:
            assert isinstance(error.__cause__, sa.exc.DBAPIError)
            return Outcome(op, "unknown", type(error.__cause__.orig).__name__)
        except sa.exc.DBAPIError as error:
            return Outcome(op, "failed", type(error.orig).__name__)
        if isinstance(result, transfers.TransferResult):
            return Outcome(op, "ok", transfer_id=result.transfer.id, replayed=result.replayed)
        return Outcome(op, "ok")


def plan_ops(rng: random.Random, thread: int, account_ids: list[int]) -> Iterator[Op]:
    """The random operations of one thread."""
    for n in range(OPS_PER_THREAD):
        kind = "deposit" if rng.random() < 0.3 else "transfer"
        if kind == "deposit":
            route = "serializable" if rng.random() < 0.25 else "unit"
        else:
            route = rng.choices(["service", "unit", "serializable"], [0.45, 0.3, 0.25])[0]
        fault: str | None = None
        if rng.random() < 0.1:
            fault = "inside_service" if kind == "transfer" and rng.random() < 0.5 else "after_write"
        source, target = rng.sample(account_ids, 2)
        amount = rng.randint(1, 3_000) if kind == "transfer" else rng.randint(1, 1_000)
        yield Op(f"{thread}-{n}", kind, route, fault, source, target, amount)


def patch_adapter(monkeypatch: pytest.MonkeyPatch, tracker: Tracker) -> None:
    """Fault (a) inside the service: fail right after the idempotency key was written."""
    find_key = DBAdapter.find_idempotency_key
    add_key = DBAdapter.add_idempotency_key

    def find_and_note(self: DBAdapter, scope: str, key_hash: str) -> IdempotencyKey | None:
        tracker.note_unit()
        return find_key(self, scope, key_hash)

    def add_then_fail(
        self: DBAdapter, scope: str, key_hash: str, request_hash: str, transfer_id: int
    ) -> IdempotencyKey:
        record = add_key(self, scope, key_hash, request_hash, transfer_id)
        if getattr(tracker.local, "fail_inside", False):
            tracker.count(tracker.faults, "inside_service")
            raise InjectedFault(f"after writing transfer {transfer_id}")
        return record

    monkeypatch.setattr(DBAdapter, "find_idempotency_key", find_and_note)
    monkeypatch.setattr(DBAdapter, "add_idempotency_key", add_then_fail)


def engine_options(target: Target, application_name: str) -> dict[str, Any]:
    options: dict[str, Any] = {"pool_size": THREADS, "max_overflow": 4, "pool_timeout": 30}
    if target.backend == "postgresql":
        options["connect_args"] = {
            "application_name": application_name,
            "connect_timeout": 5,
            "options": "-c statement_timeout=30000 -c lock_timeout=20000",
        }
    elif target.backend == "mariadb":
        options["connect_args"] = {
            "connect_timeout": 5,
            "init_command": "SET SESSION innodb_lock_wait_timeout = 20",
        }
    else:
        # Shorter than the outside lock holder keeps the lock: units fail "database is locked".
        options["connect_args"] = {"timeout": 1.0}
    return options


def run_threads(app: Flask, bank: Bank, plans: list[list[Op]]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(plans))
    deadline = time.monotonic() + LOAD_DEADLINE

    def work(plan: list[Op]) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=30)
                for op in plan:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the bank load ran out of time at op {op.id}")
                    outcome = bank.run(op)
                    with lock:
                        outcomes.append(outcome)
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=LOAD_DEADLINE + 60)
    if errors:
        raise errors[0]
    assert not any(thread.is_alive() for thread in threads), "a bank thread hung"
    return outcomes


def _relay_leftovers(app: Flask, seconds: float = 60.0) -> None:
    """Relay the outbox until nothing is pending (failed deliveries return after a backoff)."""
    deadline = time.monotonic() + seconds
    with app.app_context():
        while True:
            assert time.monotonic() < deadline, f"still pending: {db.outbox.status()}"
            try:
                if not db.outbox.pending():
                    return
                if not db.outbox.relay_once():
                    time.sleep(0.2)
            except sa.exc.DBAPIError as error:
                # A pooled connection the faults killed fails once, then the pool replaces it.
                assert is_transient(error), error


def test_bank_balances_to_the_cent_under_faults(
    target: Target,
    ledger_app: LedgerFactory,
    figures: dict[str, Any],
    logs: LogRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Random transfers and deposits under injected faults: nothing lost, nothing doubled."""
    application_name = f"flask_uow_rel_{uuid.uuid4().hex[:8]}"
    app = ledger_app(target.url, engine_options=engine_options(target, application_name))
    tracker = Tracker()
    rng = random.Random(20240611)

    with app.app_context():
        bank = Bank(tracker)
        patch_adapter(monkeypatch, tracker)
        slips.drop_all(db.engine)
        slips.create_all(db.engine)
        account_ids = [
            customers.register_customer(f"Bank {n}", f"bank{n}@example.com").account.id
            for n in range(ACCOUNTS)
        ]
        opening = [
            bank.run(Op(f"open-{a}", "deposit", "unit", None, a, a, OPENING_DEPOSIT))
            for a in account_ids
        ]
        assert all(o.status == "ok" for o in opening)
        tally = ErrorTally(db.engine)
        engine = db.engine
    plans = [list(plan_ops(rng, thread, account_ids)) for thread in range(THREADS)]

    before = db.stats
    started = time.monotonic()
    holder: SqliteLockHolder | None = None
    killer: ConnectionKiller | None = None
    if target.backend == "sqlite":
        holder = SqliteLockHolder(sqlite_path(target.url), hold=(1.1, 1.5), seed=7)
        injector = holder.in_background(every=(0.3, 1.0), seconds=LOAD_DEADLINE)
    else:
        killer = ConnectionKiller(
            target.admin_url,
            database=target.database,
            application_name=application_name if target.backend == "postgresql" else None,
            seed=7,
        )
        injector = killer.in_background(every=(0.01, 0.06), seconds=LOAD_DEADLINE)
    try:
        with injector:
            outcomes = run_threads(app, bank, plans)
    finally:
        if killer is not None:
            killer.close()
    load_seconds = time.monotonic() - started
    with app.app_context():
        # The outbox's thread delivers transfer.completed in units of its own: let it finish.
        db.outbox.flush(timeout=60)
    after = db.stats
    tally.remove()
    outcomes.extend(opening)

    pool_checked_out = checked_out(engine)
    # Resolve unknown outcomes the way a client would: resend the transfer with its key; look
    # the deposit up in its slip (deposits carry no key). The test reads the books through an
    # engine of its own: the app's pool may still hold connections killed while idle.
    books = admin_engine(target.admin_url)
    with app.app_context():
        slip_ids = set(_scalars(books, sa.select(deposit_slips.c.op_id)))
        resolutions: Counter[str] = Counter()
        for outcome in outcomes:
            if outcome.status != "unknown":
                continue
            op = outcome.op
            if op.kind == "deposit":
                outcome.status = "ok" if op.id in slip_ids else "failed"
                outcome.resolution = f"slip {'found' if op.id in slip_ids else 'missing'}"
            else:
                try:
                    replay = transfers.transfer(
                        op.account, op.other, op.amount, idempotency_key=op.key
                    )
                except LedgerError as error:
                    outcome.status, outcome.error = "failed", type(error).__name__
                    outcome.resolution = "refused on resend"
                else:
                    outcome.status, outcome.transfer_id = "ok", replay.transfer.id
                    outcome.replayed = replay.replayed
                    outcome.resolution = "was committed" if replay.replayed else "applied on resend"
            resolutions[outcome.resolution] += 1

        balances: dict[int, int] = {
            row[0]: row[1] for row in _rows(books, sa.select(Account.id, Account.balance))
        }
        stored: dict[int, tuple[int, int, int]] = {
            row[0]: (row[1], row[2], row[3])
            for row in _rows(
                books,
                sa.select(
                    Transfer.id, Transfer.from_account_id, Transfer.to_account_id, Transfer.amount
                ),
            )
        }
        keys: dict[str, int] = {
            row[0]: row[1]
            for row in _rows(books, sa.select(IdempotencyKey.key_hash, IdempotencyKey.transfer_id))
        }
        slips_stored: dict[str, tuple[int, int]] = {
            row[0]: (row[1], row[2])
            for row in _rows(
                books,
                sa.select(
                    deposit_slips.c.op_id, deposit_slips.c.account_id, deposit_slips.c.amount
                ),
            )
        }
        slips.drop_all(books)
        books.dispose()
    idle = open_transactions(
        target.admin_url,
        database=target.database,
        application_name=application_name if target.backend == "postgresql" else None,
    )

    ok = [o for o in outcomes if o.status == "ok"]
    failed = [o for o in outcomes if o.status == "failed"]
    ok_deposits = {o.op.id: o.op for o in ok if o.op.kind == "deposit"}
    ok_transfers = [o for o in ok if o.op.kind == "transfer"]

    figures.update(
        backend=target.backend,
        threads=THREADS,
        operations=len(outcomes),
        operations_per_second=round(len(outcomes) / load_seconds),
        seconds=round(load_seconds, 1),
        outcomes=dict(Counter(o.status for o in outcomes)),
        outcomes_by_route=_by(outcomes, lambda o: f"{o.op.kind}/{o.op.route}/{o.status}"),
        failure_reasons=_by(failed, lambda o: o.error or "?"),
        unknown_resolved=dict(resolutions),
        units_attempted=after.started - before.started,
        units_committed=after.committed - before.committed,
        units_rolled_back=after.rolled_back - before.rolled_back,
        retries=after.retried - before.retried,
        faults_injected={
            "exception_inside_service": tracker.faults["inside_service"],
            "exception_after_write": tracker.faults["after_write"],
            "connections_killed": killer.kills if killer is not None else 0,
            "sqlite_lock_held": holder.holds if holder is not None else 0,
            "serializable_operations": sum(o.op.route == "serializable" for o in outcomes),
        },
        database_errors_seen=tally.snapshot(),
        transfers_stored=len(stored),
        deposits_stored=len(slips_stored),
        total_balance=sum(balances.values()),
        pool_checked_out=pool_checked_out,
        idle_in_transaction=idle,
        log_records=logs.summary(),
    )

    # Every success is stored exactly once, and nothing else is.
    by_id = {o.op.id: o for o in outcomes}
    assert set(slips_stored) == set(ok_deposits), [
        by_id.get(op_id) for op_id in set(slips_stored) ^ set(ok_deposits)
    ]
    # The books balance: per account, and in total against the committed deposits.
    deposited: Counter[int] = Counter()
    for account_id, amount in slips_stored.values():
        deposited[account_id] += amount
    moved: Counter[int] = Counter()
    for source, target_account, amount in stored.values():
        moved[source] -= amount
        moved[target_account] += amount
    assert balances == {a: deposited[a] + moved[a] for a in balances}
    assert sum(balances.values()) == sum(op.amount for op in ok_deposits.values())
    assert all(balance >= 0 for balance in balances.values())

    transfer_ids = [o.transfer_id for o in ok_transfers if o.transfer_id is not None]
    assert len(transfer_ids) == len(ok_transfers)
    assert len(set(transfer_ids)) == len(transfer_ids), "two operations got one transfer"
    op_of_key = {_sha256(o.op.key): o for o in outcomes if o.op.kind == "transfer"}
    op_of_transfer = {transfer_id: op_of_key.get(key) for key, transfer_id in keys.items()}
    assert set(stored) == set(transfer_ids), [
        (transfer_id, op_of_transfer.get(transfer_id))
        for transfer_id in set(stored) ^ set(transfer_ids)
    ]
    for o in ok_transfers:
        assert o.transfer_id is not None
        assert stored[o.transfer_id] == (o.op.account, o.op.other, o.op.amount), o
        assert keys[_sha256(o.op.key)] == o.transfer_id
    # No failure is visible.
    for o in failed:
        if o.op.kind == "transfer":
            assert _sha256(o.op.key) not in keys, o
        else:
            assert o.op.id not in slips_stored, o
    assert len(keys) == len(stored)

    # Hooks ran for committed units only, once: the ledger's notifications and the test's own.
    # transfer.completed travels through the outbox: a delivery a fault interrupted waits for
    # a relay (a served ledger runs one); relay the rest, then each was delivered once.
    _relay_leftovers(app)
    assert outbox.dropped == 0, "the outbox discarded notifications: raise its max_size"
    notified = Counter(
        int(str(n.payload["transfer_id"])) for n in outbox.sent("transfer.completed")
    )
    # Every stored transfer is announced exactly once, by the unit that created it: a transfer
    # found on resend ("was committed") was announced by its first unit, whose COMMIT landed
    # with its outbox row although the client never heard back.
    assert notified == Counter(o.transfer_id for o in ok_transfers)
    wrapped = [o for o in outcomes if o.op.route != "service"]
    for o in wrapped:
        committed_hooks = tracker.commit_hooks[o.op.id]
        rollback_hooks = tracker.rollback_hooks[o.op.id]
        if o.resolution is None:
            expected = (1, 0) if o.status == "ok" else (0, 1)
        else:  # COMMIT was lost in flight: CommitOutcomeUnknown runs neither kind of hook
            expected = (0, 0)
        assert (committed_hooks, rollback_hooks) == expected, o

    # The password never reached a log record, tracebacks included.
    if target.password:
        assert target.password not in logs.text()

    # Nothing left open.
    assert after.active == 0
    assert pool_checked_out == 0
    assert idle == 0
    assert len(ok) > len(outcomes) // 2, "faults drowned the load; the test proves little"
    if holder is not None:
        assert holder.holds > 0, "the SQLite lock was never taken from outside"
    if killer is not None:
        assert killer.kills > 0, "no connection was ever killed"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _rows(engine: sa.Engine, statement: sa.Executable) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(statement))


def _scalars(engine: sa.Engine, statement: sa.Executable) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(statement).scalars())


def _by(outcomes: list[Outcome], key: Callable[[Outcome], str]) -> dict[str, int]:
    return dict(sorted(Counter(key(o) for o in outcomes).items()))
