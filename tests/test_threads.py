"""Units in different threads never share a session, and counts stay exact under load."""

from __future__ import annotations

import contextvars
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from flask_uow import Database, Propagation, UnitOfWorkError

from .conftest import checked_out
from .models import Item


class Boom(Exception):
    pass


def test_concurrent_units_in_different_threads_have_different_sessions(db: Database) -> None:
    barrier = threading.Barrier(8, timeout=10)

    def open_unit(_: int) -> int:
        with db.unit_of_work() as uow:
            barrier.wait()
            return id(uow.session)

    with ThreadPoolExecutor(8) as pool:
        session_ids = list(pool.map(open_unit, range(8)))
    assert len(set(session_ids)) == 8


def test_a_session_reached_through_a_copied_context_in_another_thread_raises(
    db: Database,
) -> None:
    results: list[BaseException] = []
    with db.unit_of_work():
        context = contextvars.copy_context()

        def use_copied_context() -> None:
            attempts = (
                lambda: db.session.execute(sa.select(1)),
                lambda: db.unit_of_work().__enter__(),
            )
            for attempt in attempts:
                try:
                    context.run(attempt)
                except BaseException as error:
                    results.append(error)

        thread = threading.Thread(target=use_copied_context)
        thread.start()
        thread.join(10)
    assert len(results) == 2
    assert all(isinstance(error, UnitOfWorkError) for error in results)
    assert "another thread" in str(results[0])


def test_requires_new_works_in_a_thread_with_a_copied_context(db: Database) -> None:
    names: list[str] = []
    with db.unit_of_work():
        context = contextvars.copy_context()

        def insert() -> None:
            with db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                db.session.add(Item(name="from-thread"))
            names.append("done")

        thread = threading.Thread(target=lambda: context.run(insert))
        thread.start()
        thread.join(10)
    assert names == ["done"]
    with db.unit_of_work(read_only=True):
        assert db.session.scalars(sa.select(Item.name)).all() == ["from-thread"]


@pytest.fixture
def patient_db(db: Database, backend_name: str) -> Iterator[Database]:
    """``db``, but SQLite writers wait up to two minutes for the lock: 16 threads take turns."""
    if backend_name != "sqlite":
        yield db
        return
    assert db.url is not None
    patient = Database(
        db.url, metadata=db.metadata, engine_options={"connect_args": {"timeout": 120}}
    )
    yield patient
    patient.dispose()


@pytest.mark.parametrize("threads, units", [(16, 500)])
def test_sixteen_threads_interleaving_commits_and_rollbacks_keep_exact_counts(
    patient_db: Database, threads: int, units: int
) -> None:
    db = patient_db
    committed_per_thread = [0] * threads
    hooks_run = [0] * threads

    def work(worker: int) -> None:
        rng = random.Random(worker)
        for number in range(units):
            fail = rng.random() < 0.4
            try:
                with db.unit_of_work() as uow:
                    uow.on_commit(lambda: hooks_run.__setitem__(worker, hooks_run[worker] + 1))
                    if rng.random() < 0.5:
                        db.session.add(Item(name=f"{worker}-{number}"))
                    else:
                        db.session.execute(sa.select(1))
                    if fail:
                        raise Boom
            except Boom:
                continue
            committed_per_thread[worker] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))

    stats = db.stats
    total = threads * units
    assert stats.started == total
    assert stats.committed == sum(committed_per_thread)
    assert stats.rolled_back == total - sum(committed_per_thread)
    assert stats.active == 0
    assert hooks_run == committed_per_thread
    assert checked_out(db) == 0
    expected_rows = 0
    for worker in range(threads):
        rng = random.Random(worker)
        for _ in range(units):
            fail = rng.random() < 0.4
            inserted = rng.random() < 0.5
            expected_rows += inserted and not fail
    with db.unit_of_work(read_only=True):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Item)) == expected_rows
