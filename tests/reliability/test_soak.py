"""Soak: a long run of units of work with random outcomes leaves nothing behind.

Four threads run units that commit, raise, call ``set_rollback()``, read only, touch no
table, undo a savepoint, doom a joined unit, commit a REQUIRES_NEW unit inside a failing one,
run a failing hook, or retry after a transient error. Afterwards the rows, the hook calls and
every ``db.stats`` counter match what the threads expected, exactly; no unit is open, no
connection checked out or idle in a transaction, and traced memory grew by a bounded amount.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

import flask_uow._decorate
from flask_uow import Database, Propagation, UnexpectedRollback

from ._faults import checked_out, open_transactions
from ._scale import scaled
from .conftest import Target

UNITS = scaled(2_000, 100_000)
"""Units in the measured run, across all threads (warm-up not included)."""
WARMUP = scaled(400, 4_000)
THREADS = 4
MEMORY_BUDGET = 2 * 1024 * 1024
"""Traced memory may grow by at most this much over the measured run (bytes)."""
SECOND_HALF_BUDGET = 512 * 1024
"""...and by at most this much over its second half, where a leak would keep growing."""
SECONDARY = 50_000_000
"""Offset of ids written by savepoints and REQUIRES_NEW units."""

metadata = sa.MetaData()
items = sa.Table(
    "rel_soak_items",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("outcome", sa.String(20), nullable=False),
)

OUTCOMES = (
    "commit",
    "raise",
    "set_rollback",
    "read_only",
    "no_sql",
    "savepoint_undone",
    "joined_failure",
    "requires_new",
    "hook_raises",
    "retried",
)


class Boom(Exception):
    """The failure a unit of the soak raises on purpose."""


class TransientDriverError(Exception):
    """Stands for a driver error with PostgreSQL's serialization_failure SQLSTATE."""

    sqlstate = "40001"


ROW_OF_OUTCOME = {
    "commit": 0,
    "savepoint_undone": 0,
    "hook_raises": 0,
    "retried": 0,
    "requires_new": SECONDARY,
}
"""The row each outcome leaves behind: its id plus this offset; outcomes not listed leave none."""


@dataclass
class Expected:
    """What units should have done. Counters only: the soak must not grow memory itself."""

    started: int = 0
    committed: int = 0
    read_only: int = 0
    rolled_back: int = 0
    retried: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, other: Expected) -> None:
        self.started += other.started
        self.committed += other.committed
        self.read_only += other.read_only
        self.rolled_back += other.rolled_back
        self.retried += other.retried
        self.outcomes.update(other.outcomes)


class HookCounts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commits = 0
        self.rollbacks = 0

    def committed(self) -> None:
        with self.lock:
            self.commits += 1

    def rolled_back(self) -> None:
        with self.lock:
            self.rollbacks += 1


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.levels: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1


def failing_hook() -> None:
    raise Boom("an on_commit hook failed")


class Soak:
    """Runs units with random outcomes on one Database and tallies what they should do."""

    def __init__(self, db: Database, hooks: HookCounts) -> None:
        self.db = db
        self.hooks = hooks
        self._retry_state = threading.local()
        self.retried_function = db.transactional(retries=2)(self._flaky_insert)

    def _flaky_insert(self, ident: int) -> None:
        self._register_hooks()
        self.db.session.execute(items.insert().values(id=ident, outcome="retried"))
        if not getattr(self._retry_state, "failed", False):
            self._retry_state.failed = True
            raise sa.exc.OperationalError("COMMIT", {}, TransientDriverError("serialization"))

    def _register_hooks(self) -> None:
        unit = self.db.current
        assert unit is not None
        unit.on_commit(self.hooks.committed)
        unit.on_rollback(self.hooks.rolled_back)

    def _insert(self, ident: int, outcome: str) -> None:
        self.db.session.execute(items.insert().values(id=ident, outcome=outcome))

    def run(self, outcome: str, ident: int, expected: Expected) -> None:
        db = self.db
        expected.outcomes[outcome] += 1
        expected.started += 1
        if outcome == "commit":
            with db.unit_of_work():
                self._register_hooks()
                self._insert(ident, outcome)
            expected.committed += 1
        elif outcome == "raise":
            with pytest.raises(Boom), db.unit_of_work():
                self._register_hooks()
                self._insert(ident, outcome)
                raise Boom()
            expected.rolled_back += 1
        elif outcome == "set_rollback":
            with db.unit_of_work() as unit:
                self._register_hooks()
                self._insert(ident, outcome)
                unit.set_rollback()
            expected.rolled_back += 1
        elif outcome == "read_only":
            with db.unit_of_work(read_only=True) as unit:
                self._register_hooks()
                unit.session.execute(sa.select(sa.func.count()).select_from(items)).scalar()
            expected.read_only += 1
        elif outcome == "no_sql":
            with db.unit_of_work():
                self._register_hooks()
            expected.committed += 1
        elif outcome == "savepoint_undone":
            with db.unit_of_work():
                self._register_hooks()
                self._insert(ident, outcome)
                with pytest.raises(Boom), db.unit_of_work(propagation=Propagation.NESTED):
                    self._insert(ident + SECONDARY, outcome)
                    raise Boom()
            expected.committed += 1
        elif outcome == "joined_failure":
            with pytest.raises(UnexpectedRollback), db.unit_of_work():
                self._register_hooks()
                self._insert(ident, outcome)
                with pytest.raises(Boom), db.unit_of_work():
                    raise Boom()
            expected.rolled_back += 1
        elif outcome == "requires_new":
            # The outer unit is read-only: on SQLite a writing REQUIRES_NEW unit inside a
            # writing one of the same thread is refused (it would wait for its own lock). It
            # runs no SQL, so a pool of one connection per thread is enough.
            with pytest.raises(Boom), db.unit_of_work(read_only=True):
                self._register_hooks()
                with db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                    self._register_hooks()
                    self._insert(ident + SECONDARY, outcome)
                raise Boom()
            expected.started += 1
            expected.committed += 1
            expected.rolled_back += 1
        elif outcome == "hook_raises":
            with db.unit_of_work() as unit:
                self._register_hooks()
                unit.on_commit(failing_hook)
                self._insert(ident, outcome)
            expected.committed += 1
        elif outcome == "retried":
            self._retry_state.failed = False
            self.retried_function(ident)
            expected.started += 1
            expected.rolled_back += 1
            expected.committed += 1
            expected.retried += 1
        else:  # pragma: no cover - OUTCOMES and this chain are kept in step
            raise AssertionError(outcome)


@dataclass(frozen=True)
class Batch:
    """Units run by THREADS threads; thread i uses ``random.Random(seed * 1000 + i)``."""

    units: int
    first_id: int
    seed: int

    @property
    def per_thread(self) -> int:
        return self.units // THREADS

    def plan(self, index: int) -> Iterator[tuple[str, int]]:
        """(outcome, id) of each unit of thread ``index``, in order."""
        rng = random.Random(self.seed * 1000 + index)
        base = self.first_id + index * self.per_thread
        for n in range(self.per_thread):
            yield rng.choice(OUTCOMES), base + n

    def rows(self) -> set[int]:
        """The ids that must be stored after the batch, replayed from the random plan."""
        return {
            ident + ROW_OF_OUTCOME[outcome]
            for index in range(THREADS)
            for outcome, ident in self.plan(index)
            if outcome in ROW_OF_OUTCOME
        }


def run_threads(soak: Soak, batch: Batch) -> Expected:
    """Run the batch, one plan per thread, and add up what its units should have done."""
    results: list[Expected] = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + scaled(120, 1800)

    def work(index: int) -> None:
        expected = Expected()
        try:
            for n, (outcome, ident) in enumerate(batch.plan(index)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"soak thread {index} ran out of time after {n} units")
                soak.run(outcome, ident, expected)
        except BaseException as error:  # reported in the test's thread
            errors.append(error)
        results.append(expected)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = Expected()
    for result in results:
        total.add(result)
    return total


@pytest.fixture
def soak_db(target: Target) -> Iterator[Database]:
    options: dict[str, Any] = {"pool_size": THREADS, "max_overflow": 0}
    if target.backend == "postgresql":
        options["connect_args"] = {"application_name": "flask_uow_rel_soak"}
    db = Database(target.url, engine_options=options, metadata=metadata)
    db.drop_all()
    db.create_all()
    yield db
    db.drop_all()
    db.dispose()


def test_soak_leaves_no_unit_connection_or_memory_behind(
    soak_db: Database,
    target: Target,
    figures: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many units with random outcomes: exact counters and rows, flat memory, nothing open."""
    db = soak_db
    # Keep the soak's own log records (failing hooks, retries) out of pytest's capture, which
    # would hold every one of them in memory; count them instead.
    uow_logger = logging.getLogger("flask_uow")
    counting = CountingHandler()
    monkeypatch.setattr(uow_logger, "propagate", False)
    uow_logger.addHandler(counting)
    no_wait: Callable[[float], None] = lambda seconds: None  # noqa: E731
    monkeypatch.setattr(flask_uow._decorate, "sleep", no_wait)
    try:
        hooks = HookCounts()
        soak = Soak(db, hooks)
        batches = [
            Batch(WARMUP, first_id=0, seed=1),
            Batch(UNITS // 2, first_id=10_000_000, seed=2),
            Batch(UNITS - UNITS // 2, first_id=20_000_000, seed=3),
        ]
        warmup = run_threads(soak, batches[0])
        gc.collect()
        before = db.stats
        hooks_before = (hooks.commits, hooks.rollbacks)
        tracemalloc.start()
        started_at = time.monotonic()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            first = run_threads(soak, batches[1])
            gc.collect()
            middle = tracemalloc.get_traced_memory()[0]
            second = run_threads(soak, batches[2])
            gc.collect()
            end, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        seconds = time.monotonic() - started_at
        after = db.stats
    finally:
        uow_logger.removeHandler(counting)

    expected = Expected()
    for part in (warmup, first, second):
        expected.add(part)
    measured = Expected()
    measured.add(first)
    measured.add(second)
    with db.unit_of_work(read_only=True) as unit:
        stored = set(unit.session.execute(sa.select(items.c.id)).scalars())
    pool_checked_out = checked_out(db.engine)
    idle = open_transactions(target.admin_url, database=target.database)

    figures.update(
        backend=target.backend,
        units=sum(b.per_thread * THREADS for b in batches[1:]),
        outermost_units_started=measured.started,
        units_per_second=round(measured.started / seconds),
        outcomes=dict(sorted(measured.outcomes.items())),
        stats_delta={
            "started": after.started - before.started,
            "committed": after.committed - before.committed,
            "read_only": after.read_only - before.read_only,
            "rolled_back": after.rolled_back - before.rolled_back,
            "retried": after.retried - before.retried,
        },
        memory_growth_bytes=end - baseline,
        memory_growth_second_half_bytes=end - middle,
        memory_peak_bytes=peak - baseline,
        open_units=after.active,
        pool_checked_out=pool_checked_out,
        idle_in_transaction=idle,
        rows=len(stored),
        log_records=dict(counting.levels),
        seconds=round(seconds, 1),
    )

    assert after.active == 0 and db.current is None
    assert pool_checked_out == 0
    assert idle == 0
    assert (after.started, after.committed, after.read_only, after.rolled_back, after.retried) == (
        expected.started,
        expected.committed,
        expected.read_only,
        expected.rolled_back,
        expected.retried,
    )
    # Every outermost unit registers both hooks; the one that runs is its outcome's. A failed
    # attempt that is retried runs neither ("hooks of failed attempts never run").
    assert (hooks.commits - hooks_before[0], hooks.rollbacks - hooks_before[1]) == (
        measured.committed + measured.read_only,
        measured.rolled_back - measured.retried,
    )
    assert stored == set().union(*(batch.rows() for batch in batches))
    assert counting.levels["ERROR"] == expected.outcomes["hook_raises"]
    assert end - baseline < MEMORY_BUDGET, f"memory grew by {end - baseline} bytes"
    assert end - middle < SECOND_HALF_BUDGET, f"memory grew by {end - middle} bytes"
