"""The async bank test: asyncio tasks move money in async units while real faults hit them.

Faults, all at once:

(a) the app's connections are terminated from outside at random moments
    (``pg_terminate_backend``, MariaDB ``KILL CONNECTION``);
(b) another connection holds row locks (SQLite: the write lock) longer than the units'
    ``lock_timeout``, so units time out waiting; transfers lock their two accounts in random
    order, so they also deadlock each other;
(c) part of the work reads and rewrites balances at REPEATABLE READ or SERIALIZABLE, where
    concurrent transfers make the server refuse to commit (PostgreSQL 40001; MariaDB 1020
    under ``innodb_snapshot_isolation``, or deadlocks at SERIALIZABLE);
(d) tasks are cancelled: in the middle of a statement, while COMMIT is under way, at a
    random moment, or by ``asyncio.timeout``; and an application error is raised after the
    writes, in the unit or in a savepoint of it;
(e) in processes of their own, transfers run under ``asyncio.run()`` while COMMIT's answer is
    held back, and the loop is really stopped once a COMMIT has landed: ``asyncio.run()``
    returns (its shutdown cancels the task awaiting COMMIT's answer), or a real SIGINT
    interrupts it (``_bank_interrupts.py``). Their outcome is unknown: resolved as below.

Each transfer runs in its own task, through ``@db.transactional(retries=...)``, an ``async
with db.unit_of_work()`` block, or a SAVEPOINT inside a decorated unit. Its truth is the
outcome of the last unit it ran in (``uow.outcome``): a cancellation that arrives while COMMIT
is under way lets the COMMIT finish, so the outcome says whether the transfer is stored. Only
a connection lost during COMMIT, or a loop stopped while COMMIT's answer is awaited, leaves it
unknown (``CommitOutcomeUnknown``, ``Outcome.OUTCOME_UNKNOWN``): those transfers are resent
with their idempotency key afterwards, which finds them stored or applies them. Then the money
must be all there, every account's balance must be what its stored transfers make it, exactly
the committed transfers must be stored, each unit's hooks must match its outcome, and nothing
may be left checked out, idle in a transaction, or for the garbage collector.
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from flask_uow import (
    CommitOutcomeUnknown,
    Database,
    Outcome,
    Propagation,
    UnexpectedRollback,
    UnitOfWork,
    UnitState,
    UnitTimeout,
)

from ._bank_interrupts import MODES, run_episode
from ._faults import (
    ConnectionKiller,
    ErrorTally,
    RowLockHolder,
    SqliteLockHolder,
    admin_engine,
    checked_out,
    open_transactions,
    sqlite_path,
)
from ._scale import scaled, scaled_seconds
from .conftest import LogRecorder, Target

pytestmark = pytest.mark.anyio

TASKS = 24
ACCOUNTS = 6
OPENING_BALANCE = 10_000
RETRIES = 6
LOAD_SECONDS = scaled_seconds(3, 120)
CANCEL_SHARE = 0.3
"""Of the transfers, those cancelled on purpose (at one of ``CANCEL_POINTS``)."""
CANCEL_POINTS = ("query", "commit", "soon", "timeout", "shutdown")
EPISODE_OPS = 3
"""Transfers in each process whose loop is stopped at COMMIT (fault (e))."""
MAX_EPISODES = scaled(6, 60)
"""Such processes at most; one of each kind at least, more while the load runs (full mode)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """How hard each backend is pushed."""

    pool_size: int
    """Fewer connections than tasks: some tasks are cancelled while they wait for one."""
    lock_timeout: float
    """Of every unit. MariaDB counts whole seconds. SQLite has one writer at a time, whose
    waiters poll for the lock (every 25 to 100 ms): a short timeout there would fail most
    units without any fault."""
    hold: tuple[float, float]
    """How long the lock holder keeps its locks: longer than ``lock_timeout``."""
    every: tuple[float, float]
    """The pause between two holds."""


PROFILES = {
    "sqlite": Profile(pool_size=4, lock_timeout=1.0, hold=(1.1, 1.5), every=(0.5, 1.5)),
    "postgresql": Profile(pool_size=8, lock_timeout=0.25, hold=(0.3, 0.8), every=(0.2, 0.8)),
    "mariadb": Profile(pool_size=8, lock_timeout=1.0, hold=(1.1, 1.5), every=(0.5, 1.5)),
}

metadata = sa.MetaData()
accounts = sa.Table(
    "rel_abank_accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("balance", sa.BigInteger, nullable=False),
)
transfers = sa.Table(
    "rel_abank_transfers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("op_key", sa.String(40), nullable=False, unique=True),
    sa.Column("source", sa.Integer, nullable=False),
    sa.Column("target", sa.Integer, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
)


class InjectedFault(Exception):
    """Raised on purpose after a transfer's writes; whatever it leaves must roll them back."""


class InsufficientFunds(Exception):
    """The source account cannot pay: the transfer is refused and its unit rolls back."""


@dataclass(frozen=True, slots=True)
class Op:
    """One transfer a client asks for."""

    id: str
    route: str
    """decorated: ``@db.transactional(retries=...)``; block: ``async with db.unit_of_work()``,
    no retries; savepoint: in a NESTED unit inside a decorated unit, which commits even when
    the savepoint rolls back."""
    isolation: str | None
    """None: the default level, accounts locked with FOR UPDATE. Otherwise balances are read
    and rewritten at this level, which refuses conflicting transfers."""
    fault: bool
    """Raise ``InjectedFault`` after the writes."""
    cancel: str | None
    """query: cancel the task at its ``cancel_at``-th statement; commit: while COMMIT is under
    way; soon: ``cancel_at`` seconds after it starts; timeout: ``asyncio.timeout(cancel_at)``;
    shutdown: cancel the task that sends COMMIT, as ``asyncio.run()`` shutting down (or a
    SIGINT stopping the loop) does, once COMMIT is on its way: the outcome is unknown."""
    cancel_at: float
    source: int
    target: int
    amount: int

    @property
    def key(self) -> str:
        """The transfer's idempotency key, stored with it."""
        return f"abank-{self.id}"


@dataclass(eq=False)
class Run:
    """What happened to one transfer."""

    op: Op
    task: asyncio.Task[None] | None = None
    units: list[UnitOfWork] = field(default_factory=list)
    """The outermost unit of each attempt, in order."""
    wrote: bool = False
    """The last attempt's writes were part of its transaction when it ended."""
    statements: int = 0
    cancelled_at: str | None = None
    """Where the test cancelled the task (query, commit, soon), if it did."""
    raised: str | None = None
    """What the caller saw: None for a return, else the exception's class name."""
    result: str | None = None
    """applied, replayed or undone (the savepoint rolled back and the unit committed)."""
    status: str = "?"
    """committed, not committed, or unknown (resolved afterwards)."""
    resolution: str | None = None

    @property
    def last_unit(self) -> UnitOfWork | None:
        return self.units[-1] if self.units else None


CURRENT: ContextVar[Run | None] = ContextVar("abank_run", default=None)
"""The transfer the running task works on; seen by the engine listeners below."""

EXPECTED_ERRORS = (
    InjectedFault,
    InsufficientFunds,
    UnitTimeout,
    CommitOutcomeUnknown,
    UnexpectedRollback,
    sa.exc.DBAPIError,
    asyncio.CancelledError,
    TimeoutError,
)
"""What a transfer's caller may see; anything else fails the test. ``UnexpectedRollback``:
the connection died while a savepoint rolled back after ``InjectedFault``, which the unit
caught to go on; the transaction it would have committed is gone, and it says so."""


class Bank:
    """Runs transfers as the ops ask, each in a task of its own, and keeps what happened."""

    def __init__(self, db: Database, levels: list[str | None], lock_timeout: float) -> None:
        self.db = db
        self.lock_timeout = lock_timeout
        self.hooks: dict[UnitOfWork, list[str]] = {}
        self.runs: list[Run] = []
        options: dict[str, Any] = {
            "retries": RETRIES,
            "lock_timeout": lock_timeout,
            "retry_lock_timeouts": True,
        }
        self.decorated = {
            level: db.transactional(isolation_level=level, **options)(self._in_unit)
            for level in levels
        }
        self.with_savepoint = {
            level: db.transactional(isolation_level=level, **options)(self._in_savepoint)
            for level in levels
        }

    # -- the work ------------------------------------------------------------------------

    def _begin_attempt(self, run: Run) -> None:
        """Note the unit this attempt runs in and register its hooks (one async)."""
        unit = self.db.current
        assert unit is not None and unit.is_outermost
        run.units.append(unit)
        run.wrote = False
        seen = self.hooks.setdefault(unit, [])

        async def committed() -> None:
            await asyncio.sleep(0)
            seen.append("commit")

        unit.on_commit(committed)
        unit.on_rollback(lambda: seen.append("rollback"))
        unit.on_outcome_unknown(lambda: seen.append("unknown"))

    async def _transfer(self, run: Run) -> str:
        op = run.op
        session = self.db.async_session
        stored = await session.scalar(sa.select(transfers.c.id).where(transfers.c.op_key == op.key))
        if stored is not None:
            return "replayed"
        balances: dict[int, int] = {}
        for account in (op.source, op.target):  # in the op's order: opposite ones deadlock
            query = sa.select(accounts.c.balance).where(accounts.c.id == account)
            if op.isolation is None:
                query = query.with_for_update()
            balances[account] = (await session.execute(query)).scalar_one()
        if balances[op.source] < op.amount:
            raise InsufficientFunds(op.id)
        for account, change in ((op.source, -op.amount), (op.target, op.amount)):
            await session.execute(
                sa.update(accounts)
                .where(accounts.c.id == account)
                .values(balance=balances[account] + change)
            )
        await session.execute(
            transfers.insert().values(
                op_key=op.key, source=op.source, target=op.target, amount=op.amount
            )
        )
        run.wrote = True
        if op.fault:
            raise InjectedFault(op.id)
        return "applied"

    async def _in_unit(self, run: Run) -> str:
        self._begin_attempt(run)
        return await self._transfer(run)

    async def _in_savepoint(self, run: Run) -> str:
        self._begin_attempt(run)
        try:
            async with self.db.unit_of_work(propagation=Propagation.NESTED):
                return await self._transfer(run)
        except InjectedFault:
            run.wrote = False  # rolled back to the savepoint; the unit goes on and commits
            return "undone"

    async def _in_block(self, run: Run) -> str:
        op = run.op
        async with self.db.unit_of_work(
            isolation_level=op.isolation, lock_timeout=self.lock_timeout
        ):
            self._begin_attempt(run)
            return await self._transfer(run)

    # -- running and cancelling ------------------------------------------------------------

    async def run(self, op: Op) -> Run:
        """Run ``op`` in a task of its own (so that cancelling it hits this op only)."""
        run = Run(op)
        self.runs.append(run)
        task = asyncio.get_running_loop().create_task(self._run(run))
        run.task = task
        await asyncio.wait([task])
        task.result()  # an unexpected error fails the test here
        return run

    async def _run(self, run: Run) -> None:
        CURRENT.set(run)
        op = run.op
        route: Callable[[Run], Awaitable[str]] = {
            "decorated": self.decorated[op.isolation],
            "savepoint": self.with_savepoint[op.isolation],
            "block": self._in_block,
        }[op.route]
        soon = None
        if op.cancel == "soon":
            soon = asyncio.get_running_loop().call_later(op.cancel_at, self.cancel, run, "soon")
        try:
            if op.cancel == "timeout":
                async with asyncio.timeout(op.cancel_at):
                    run.result = await route(run)
            else:
                run.result = await route(run)
        except EXPECTED_ERRORS as error:
            run.raised = type(error).__name__
        finally:
            if soon is not None:
                soon.cancel()

    @staticmethod
    def cancel(run: Run, where: str) -> None:
        if run.cancelled_at is None and run.task is not None and not run.task.done():
            run.cancelled_at = where
            run.task.cancel()

    def listen(self, engine: sa.Engine) -> Callable[[], None]:
        """Cancel tasks mid-statement and mid-COMMIT, as their ops ask; returns the remover."""

        def before_statement(*_: object) -> None:
            run = CURRENT.get()
            if run is None:
                return
            run.statements += 1
            if run.op.cancel == "query" and run.statements == run.op.cancel_at:
                self.cancel(run, "query")

        def before_commit(_: object) -> None:
            run = CURRENT.get()
            if run is not None and run.op.cancel == "commit":
                self.cancel(run, "commit")
            elif run is not None and run.op.cancel == "shutdown" and run.cancelled_at is None:
                # The task running the unit's end, not the caller's: the loop's shutdown
                # cancels every task. The driver sends COMMIT, then awaits its answer and
                # gets the cancellation there.
                run.cancelled_at = "shutdown"
                task = asyncio.current_task()
                assert task is not None and task is not run.task
                task.cancel()

        event.listen(engine, "before_cursor_execute", before_statement)
        event.listen(engine, "commit", before_commit)

        def remove() -> None:
            event.remove(engine, "before_cursor_execute", before_statement)
            event.remove(engine, "commit", before_commit)

        return remove


def plan_ops(rng: random.Random, worker: int, levels: list[str | None]) -> Iterator[Op]:
    """The random transfers of one worker, endless."""
    for n in range(10**9):
        route = rng.choices(["decorated", "block", "savepoint"], [0.5, 0.25, 0.25])[0]
        isolation = rng.choice(levels)
        cancel = rng.choice(CANCEL_POINTS) if rng.random() < CANCEL_SHARE else None
        cancel_at = {
            "query": float(rng.randint(1, 6)),
            "soon": rng.uniform(0.0, 0.05),
            "timeout": rng.uniform(0.002, 0.08),
        }.get(cancel or "", 0.0)
        source, target = rng.sample(range(1, ACCOUNTS + 1), 2)
        yield Op(
            id=f"{worker}-{n}",
            route=route,
            isolation=isolation,
            fault=rng.random() < 0.08,
            cancel=cancel,
            cancel_at=cancel_at,
            source=source,
            target=target,
            amount=rng.randint(1, 3_000),
        )


def engine_options(target: Target, application_name: str) -> dict[str, Any]:
    pool_size = PROFILES[target.backend].pool_size
    options: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 30}
    if target.backend == "postgresql":
        options["connect_args"] = {
            "application_name": application_name,
            "connect_timeout": 5,
            "options": "-c statement_timeout=30000",
        }
    elif target.backend == "mariadb":
        # Snapshot isolation (the default from MariaDB 11.6) makes REPEATABLE READ refuse to
        # overwrite a row changed since the transaction's snapshot: error 1020.
        options["connect_args"] = {
            "connect_timeout": 5,
            "init_command": "SET SESSION innodb_snapshot_isolation = ON",
        }
    return options


async def test_async_bank_balances_to_the_cent_under_faults_and_cancellations(
    target: Target,
    figures: dict[str, Any],
    logs: LogRecorder,
) -> None:
    """Transfers in async units under kills, lock holders, conflicts and cancellations."""
    application_name = f"flask_uow_abank_{uuid.uuid4().hex[:8]}"
    books = admin_engine(target.admin_url)
    metadata.drop_all(books)
    metadata.create_all(books)
    with books.connect() as conn:
        conn.execute(
            accounts.insert(),
            [{"id": n, "balance": OPENING_BALANCE} for n in range(1, ACCOUNTS + 1)],
        )
    levels: list[str | None] = [None]
    if target.backend != "sqlite":  # SQLite serializes writers: any level is the same there
        levels += ["REPEATABLE READ", "SERIALIZABLE"]
    profile = PROFILES[target.backend]
    db = Database(target.url, engine_options=engine_options(target, application_name))
    bank = Bank(db, levels, profile.lock_timeout)
    engine = db.async_engine.sync_engine
    remove_listeners = bank.listen(engine)
    tally = ErrorTally(engine)
    threads_before = set(threading.enumerate())

    try:
        killer: ConnectionKiller | None = None
        holder: RowLockHolder | SqliteLockHolder
        with ExitStack() as faults:
            if target.backend == "sqlite":
                holder = SqliteLockHolder(sqlite_path(target.url), hold=profile.hold, seed=3)
            else:
                ids = list(range(1, ACCOUNTS + 1))
                holder = RowLockHolder(target.admin_url, accounts, ids, hold=profile.hold, seed=3)
                faults.callback(holder.close)
            faults.enter_context(holder.in_background(every=profile.every, seconds=LOAD_SECONDS))
            if target.backend != "sqlite":
                killer = ConnectionKiller(
                    target.admin_url,
                    database=target.database,
                    application_name=application_name if target.backend == "postgresql" else None,
                    user=sa.make_url(target.url).username if target.backend == "mariadb" else None,
                    seed=3,
                )
                faults.callback(killer.close)
                faults.enter_context(killer.in_background(every=(0.02, 0.1), seconds=LOAD_SECONDS))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                before = db.stats
                started = time.monotonic()
                deadline = started + LOAD_SECONDS

                async def worker(number: int) -> None:
                    for op in plan_ops(random.Random(number), number, levels):
                        if time.monotonic() > deadline:
                            return
                        await bank.run(op)

                episodes: list[tuple[str, dict[str, Any]]] = []

                async def stop_loops_at_commit() -> None:
                    """Fault (e): one process at a time, until each kind stopped a COMMIT."""
                    plan = plan_ops(random.Random(1_000), 1_000, levels)
                    while len(episodes) < MAX_EPISODES:
                        stopped = {mode for mode, report in episodes if _stopped(report)}
                        if time.monotonic() > deadline and stopped == set(MODES):
                            return
                        mode = MODES[len(episodes) % len(MODES)]
                        ops = [
                            replace(next(plan), fault=False, cancel=None)
                            for _ in range(EPISODE_OPS)
                        ]
                        # Out of the killer's reach (another application_name; on MariaDB,
                        # another user): a killed connection would end it before COMMIT.
                        # Without MariaDB's init_command, which the driver ends with a COMMIT
                        # of its own when it connects (the proxy would hold that one).
                        options = engine_options(target, f"{application_name}_s")
                        options.get("connect_args", {}).pop("init_command", None)
                        spec = {
                            "mode": mode,
                            "ops": [asdict(op) for op in ops],
                            "url": target.admin_url if target.backend == "mariadb" else target.url,
                            "backend": target.backend,
                            "engine_options": options,
                            "levels": levels,
                            "lock_timeout": profile.lock_timeout,
                        }
                        episodes.append((mode, await run_episode(spec)))

                async with asyncio.timeout(LOAD_SECONDS + 120):  # a hung unit fails the test
                    await asyncio.gather(stop_loops_at_commit(), *(worker(n) for n in range(TASKS)))
                load_seconds = time.monotonic() - started
                faults.close()  # stop the injectors before looking at the results
                after = db.stats
                pool_checked_out = checked_out(engine)
                if target.backend == "sqlite":
                    # An aiosqlite connection that SQLAlchemy closed after a cancellation in the
                    # middle of a statement lives on inside SQLite, with its locks, until that
                    # statement's cursor is freed (sqlite3_close_v2 on Python 3.11+); the cursor
                    # sits in the reference cycle of the cancellation's traceback.
                    gc.collect()
                idle = open_transactions(
                    target.admin_url,
                    database=target.database,
                    application_name=application_name if target.backend == "postgresql" else None,
                )
                remove_listeners()
                tally.remove()
                runs = list(bank.runs)

                # Resolve unknown outcomes as a client would: resend with the idempotency key.
                resolutions: Counter[str] = Counter()
                for run in runs:
                    unit = run.last_unit
                    outcome = unit.outcome if unit is not None else None
                    if outcome is Outcome.OUTCOME_UNKNOWN:
                        resent = await bank.run(replace(run.op, fault=False, cancel=None))
                        run.resolution = {
                            "replayed": "was committed",
                            "applied": "applied on resend",
                        }.get(str(resent.result), f"resend raised {resent.raised}")
                        run.status = "committed" if resent.result else "not committed"
                        resolutions[run.resolution] += 1
                    elif outcome is Outcome.COMMITTED and run.wrote:
                        run.status = "committed"
                    else:
                        run.status = "not committed"
                remote: list[tuple[str, Run, dict[str, Any]]] = []
                for mode, report in episodes:
                    for done in report["runs"]:
                        run = Run(Op(**done["op"]), cancelled_at=mode, raised=done["raised"])
                        run.result, run.wrote = done["result"], done["wrote"]
                        last = done["outcomes"][-1] if done["outcomes"] else None
                        if last == Outcome.OUTCOME_UNKNOWN.value:
                            resent = await bank.run(replace(run.op, fault=False, cancel=None))
                            run.resolution = {
                                "replayed": "was committed",
                                "applied": "applied on resend",
                            }.get(str(resent.result), f"resend raised {resent.raised}")
                            run.status = "committed" if resent.result else "not committed"
                            resolutions[f"{mode}: {run.resolution}"] += 1
                        elif last == Outcome.COMMITTED.value and run.wrote:
                            run.status = "committed"
                        else:
                            run.status = "not committed"
                        remote.append((mode, run, done))
    finally:
        await db.dispose_async()
        # aiosqlite runs each connection in a thread of its own; one that SQLAlchemy dropped
        # after a cancellation finishes its statement there, then reports to this loop: wait
        # for those threads before the loop closes under them.
        give_up = time.monotonic() + 30
        while _new_driver_threads(threads_before) and time.monotonic() < give_up:
            await asyncio.sleep(0.005)
    assert not _new_driver_threads(threads_before)
    with warnings.catch_warnings(record=True) as collected:
        warnings.simplefilter("always")
        gc.collect()  # a connection nobody returned would be found here, with a warning
    caught.extend(collected)

    with books.connect() as conn:
        balances: dict[int, int] = {
            row.id: row.balance for row in conn.execute(sa.select(accounts))
        }
        stored = {
            row.op_key: (row.source, row.target, row.amount)
            for row in conn.execute(sa.select(transfers))
        }
    metadata.drop_all(books)
    books.dispose()

    committed = {
        run.op.key: run
        for run in [*runs, *(run for _, run, _ in remote)]
        if run.status == "committed"
    }
    cancelled_in_commit = [
        run for run in runs if run.cancelled_at == "commit" and run.raised == "CancelledError"
    ]
    committed_despite_cancellation = [
        run
        for run in cancelled_in_commit
        if run.last_unit is not None and run.last_unit.outcome is Outcome.COMMITTED
    ]
    figures.update(
        backend=target.backend,
        tasks=TASKS,
        transfers=len(runs),
        transfers_per_second=round(len(runs) / load_seconds),
        seconds=round(load_seconds, 1),
        outcomes=_count(run.status for run in runs),
        seen_by_callers=_count(str(run.raised or run.result) for run in runs),
        by_route=_count(f"{run.op.route}/{run.status}" for run in runs),
        unknown_resolved=dict(resolutions),
        units_attempted=after.started - before.started,
        units_committed=after.committed - before.committed,
        units_rolled_back=after.rolled_back - before.rolled_back,
        retries=after.retried - before.retried,
        faults_injected={
            "connections_killed": killer.kills if killer is not None else 0,
            "locks_held": holder.holds,
            "lock_holder_lost_a_deadlock": getattr(holder, "lost", 0),
            "cancelled": _count(str(run.cancelled_at) for run in runs if run.cancelled_at),
            "timed_out": sum(run.raised == "TimeoutError" for run in runs),
            "exception_after_write": sum(run.op.fault for run in runs),
            "loop_stopped_processes": _count(mode for mode, _ in episodes),
            "loop_stopped_at_commit": _count(mode for mode, _, done in remote if _unknown(done)),
        },
        cancelled_during_commit=len(cancelled_in_commit),
        cancelled_during_commit_and_committed=len(committed_despite_cancellation),
        database_errors_seen=tally.snapshot(),
        total_balance=sum(balances.values()),
        pool_checked_out=pool_checked_out,
        idle_in_transaction=idle,
        log_records=logs.summary(),
    )

    # Every unit ended, and what each caller saw agrees with the outcome of its last unit.
    for run in runs:
        assert all(unit.state is UnitState.ENDED for unit in run.units), run
        outcome = run.last_unit.outcome if run.last_unit is not None else None
        if run.raised is None:
            assert outcome is Outcome.COMMITTED, run
            assert run.wrote is (run.result == "applied"), run
        elif run.raised == "CommitOutcomeUnknown":
            assert outcome is Outcome.OUTCOME_UNKNOWN, run
        elif run.cancelled_at == "shutdown":
            # Cancelled once COMMIT was sent, as a loop shutting down does: nobody knows.
            assert outcome is Outcome.OUTCOME_UNKNOWN, run
        elif run.cancelled_at == "commit":
            # The cancellation came while COMMIT was under way, which finished first: it
            # committed, was refused by the server, or lost its connection.
            assert outcome in (
                Outcome.COMMITTED,
                Outcome.ROLLED_BACK,
                Outcome.OUTCOME_UNKNOWN,
            ), run
        elif run.raised not in ("CancelledError", "TimeoutError"):
            assert outcome in (Outcome.ROLLED_BACK, Outcome.DOOMED), run

    # In the processes whose loop was stopped: every unit ended, a unit whose COMMIT the
    # stop interrupted says its outcome is unknown and ran on_outcome_unknown hooks only,
    # and the others ran the hooks of their outcome.
    for mode, run, done in remote:
        assert done["ended"], done
        if _unknown(done):
            assert run.raised == "CancelledError", (mode, done)
        outcomes = done["outcomes"]
        for number, (outcome, hooks) in enumerate(zip(outcomes, done["hooks"], strict=True)):
            last = number == len(outcomes) - 1
            expected = {"committed": ["commit"], "outcome_unknown": ["unknown"]}.get(
                str(outcome), ["rollback"] if last else []
            )
            assert hooks == expected, (mode, done)

    # The money is all there, every balance is what its stored transfers make it, and
    # exactly the committed transfers are stored, each once and as asked.
    assert sum(balances.values()) == ACCOUNTS * OPENING_BALANCE
    moved: Counter[int] = Counter()
    for source, target_account, amount in stored.values():
        moved[source] -= amount
        moved[target_account] += amount
    assert balances == {a: OPENING_BALANCE + moved[a] for a in balances}
    assert all(balance >= 0 for balance in balances.values())
    assert set(stored) == set(committed), [
        (key, committed.get(key)) for key in set(stored) ^ set(committed)
    ]
    for key, run in committed.items():
        assert stored[key] == (run.op.source, run.op.target, run.op.amount), run

    # Each unit's hooks ran once, for the outcome it had; an attempt that ran again ran none
    # (a cancellation that called off the retry made the attempt before it the last one).
    for run in runs:
        for unit in run.units:
            if unit.outcome is Outcome.COMMITTED:
                expected = ["commit"]
            elif unit.outcome is Outcome.OUTCOME_UNKNOWN:
                expected = ["unknown"]
            else:
                expected = ["rollback"] if unit is run.last_unit else []
            assert bank.hooks[unit] == expected, (run, unit.outcome)

    # Nothing left behind: no unit, no checked-out connection, no open transaction, no
    # connection for the garbage collector to clean up.
    assert after.active == 0
    assert pool_checked_out == 0
    assert idle == 0
    assert [str(w.message) for w in caught] == []
    assert not [r for r in logs.records if "garbage collector" in r.getMessage()]
    if target.password:
        assert target.password not in logs.text()

    # The faults happened, and the load still got through.
    assert holder.holds > 0, "no lock was ever held from outside"
    if killer is not None:
        assert killer.kills > 0, "no connection was ever killed"
        assert tally.counts["serialization_failure"] > 0, "no conflict was ever refused"
    cancelled = Counter(run.cancelled_at for run in runs)
    assert cancelled["query"] and cancelled["commit"] and cancelled["soon"], cancelled
    assert cancelled["shutdown"], cancelled
    assert any(run.raised == "TimeoutError" for run in runs)
    stopped_at_commit = Counter(mode for mode, _, done in remote if _unknown(done))
    assert set(stopped_at_commit) == set(MODES), f"no COMMIT was stopped: {stopped_at_commit}"
    assert committed_despite_cancellation, "no cancellation reached a COMMIT that went on"
    assert len(committed) > len(runs) // 4, "faults drowned the load; the test proves little"


def _new_driver_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and "connection_worker" in thread.name
    ]


def _unknown(done: dict[str, Any]) -> bool:
    """The transfer's last unit, in a process whose loop was stopped, has an unknown outcome."""
    return bool(done["outcomes"]) and done["outcomes"][-1] == Outcome.OUTCOME_UNKNOWN.value


def _stopped(report: dict[str, Any]) -> bool:
    """The episode stopped its loop while a COMMIT's answer was awaited."""
    return any(_unknown(done) for done in report["runs"])


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
