"""The ambient stack: ended units vanish everywhere, and units end in the order they began."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from flask_uow import (
    Database,
    NoActiveUnitOfWork,
    Outcome,
    Propagation,
    UnitOfWorkError,
    UnitState,
)

from .conftest import checked_out, committed_names
from .models import Item

# -- ended units in copied contexts ---------------------------------------------------------


def test_an_ended_unit_is_not_current_in_a_context_copied_while_it_was_active(
    db: Database,
) -> None:
    with db.unit_of_work():
        context = contextvars.copy_context()
    assert context.run(lambda: db.current) is None


def test_the_session_of_an_ended_unit_is_no_session_in_a_copied_context(db: Database) -> None:
    with db.unit_of_work():
        context = contextvars.copy_context()
    with pytest.raises(NoActiveUnitOfWork, match="outside a unit of work"):
        context.run(lambda: db.session.execute(sa.select(1)))


def test_a_new_unit_in_a_copied_context_starts_fresh_instead_of_joining_an_ended_one(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        context = contextvars.copy_context()

    def new_unit() -> bool:
        with db.unit_of_work() as uow:
            db.session.add(Item(name="fresh"))
            return uow.is_outermost

    assert context.run(new_unit) is True
    assert committed_names(observer) == ["fresh"]
    assert checked_out(db) == 0


def test_a_thread_pool_that_copies_contexts_never_sees_the_ended_request_unit(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        context = contextvars.copy_context()

    def job(number: int) -> str:
        with db.unit_of_work():
            db.session.add(Item(name=f"job-{number}"))
        return "done"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: context.copy().run(job, n), range(4)))
    assert results == ["done"] * 4
    assert committed_names(observer) == [f"job-{n}" for n in range(4)]


def test_current_is_none_in_a_context_copied_from_a_thread_whose_unit_is_still_open(
    db: Database,
) -> None:
    seen: list[object] = []
    with db.unit_of_work():
        context = contextvars.copy_context()
        thread = threading.Thread(target=lambda: seen.append(context.run(lambda: db.current)))
        thread.start()
        thread.join(10)
    assert seen == [None]


# -- out-of-order exits ----------------------------------------------------------------------


def _writer(db: Database, name: str) -> Iterator[None]:
    """A generator that holds a unit across its ``yield``."""
    with db.unit_of_work():
        db.session.add(Item(name=name))
        db.session.flush()
        yield


def test_interleaved_generators_roll_back_and_raise_instead_of_committing_half(
    db: Database, observer: sa.Engine
) -> None:
    first, second = _writer(db, "first"), _writer(db, "second")
    next(first)
    next(second)  # joins the unit of the first generator
    with pytest.raises(UnitOfWorkError, match="entered after it were still active"):
        next(first)
    with pytest.raises(UnitOfWorkError, match="invalidated"):
        next(second)
    assert committed_names(observer) == []
    assert db.current is None
    assert checked_out(db) == 0
    assert (db.stats.committed, db.stats.rolled_back, db.stats.active) == (0, 1, 0)


def test_a_unit_invalidated_by_an_early_exit_refuses_its_session(db: Database) -> None:
    outer, inner = db.unit_of_work(), db.unit_of_work()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(UnitOfWorkError):
        outer.__exit__(None, None, None)
    assert inner.state is UnitState.INVALIDATED
    assert inner.outcome is Outcome.ROLLED_BACK
    with pytest.raises(UnitOfWorkError, match="invalidated"):
        inner.session  # noqa: B018
    with pytest.raises(UnitOfWorkError, match="invalidated"):
        inner.on_commit(lambda: None)
    with pytest.raises(UnitOfWorkError, match="invalidated"):
        inner.__exit__(None, None, None)
    assert inner.state in (UnitState.ENDED,)
    assert db.current is None


def test_an_out_of_order_exit_with_an_exception_still_raises_the_ordering_error(
    db: Database, observer: sa.Engine
) -> None:
    outer, inner = db.unit_of_work(), db.unit_of_work()
    outer.__enter__()
    db.session.add(Item(name="outer"))
    inner.__enter__()
    error = ValueError("while leaving")
    with pytest.raises(UnitOfWorkError, match="entered after it") as raised:
        outer.__exit__(ValueError, error, None)
    assert raised.value.__cause__ is error
    assert committed_names(observer) == []
    with pytest.raises(UnitOfWorkError):
        inner.__exit__(None, None, None)


@pytest.mark.parametrize("backend_url", ["postgresql", "mariadb"], indirect=True)
def test_an_independent_unit_left_open_above_an_ending_unit_is_rolled_back_at_once(
    db: Database, observer: sa.Engine
) -> None:
    outer = db.unit_of_work()
    independent = db.unit_of_work(propagation=Propagation.REQUIRES_NEW)
    rolled_back: list[str] = []
    outer.__enter__()
    independent.__enter__()
    independent.on_rollback(lambda: rolled_back.append("independent"))
    db.session.add(Item(name="independent"))
    db.session.flush()
    with pytest.raises(UnitOfWorkError):
        outer.__exit__(None, None, None)
    assert rolled_back == ["independent"]
    assert checked_out(db) == 0
    with pytest.raises(UnitOfWorkError, match="invalidated"):
        independent.__exit__(None, None, None)
    assert committed_names(observer) == []


def test_a_unit_exited_twice_raises_the_second_time(db: Database) -> None:
    unit = db.unit_of_work()
    with unit:
        pass
    with pytest.raises(UnitOfWorkError, match="ended; it cannot end again"):
        unit.__exit__(None, None, None)


def test_a_unit_entered_twice_raises_the_second_time(db: Database) -> None:
    unit = db.unit_of_work()
    with unit, pytest.raises(UnitOfWorkError, match="entered only once"):
        unit.__enter__()


def test_the_life_of_a_unit_is_recorded_in_its_state_and_outcome(db: Database) -> None:
    unit = db.unit_of_work(read_only=True)
    assert (unit.state, unit.outcome) == (UnitState.NEW, None)
    with unit:
        assert unit.state is UnitState.ACTIVE
        db.session.execute(sa.select(1))
    assert (unit.state, unit.outcome) == (UnitState.ENDED, Outcome.READ_ONLY)


# -- units ended in another context, and abandoned ---------------------------------------------


def test_a_joined_unit_ended_in_a_copy_of_its_context_leaves_the_outer_unit_current(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work() as outer:
        inner = db.unit_of_work()
        inner.__enter__()
        db.session.add(Item(name="joined"))
        copy = contextvars.copy_context()
        copy.run(inner.__exit__, None, None, None)
        assert copy.run(lambda: db.current) is outer
        assert db.current is outer
    assert inner.outcome is Outcome.JOINED
    assert committed_names(observer) == ["joined"]


def test_a_unit_entered_in_a_copied_context_can_be_ended_from_the_original_one(
    db: Database, observer: sa.Engine
) -> None:
    unit = db.unit_of_work()
    copy = contextvars.copy_context()
    copy.run(unit.__enter__)
    copy.run(lambda: db.session.add(Item(name="entered in a copy")))
    assert db.current is None
    unit.__exit__(None, None, None)
    assert unit.outcome is Outcome.COMMITTED
    assert copy.run(lambda: db.current) is None
    assert committed_names(observer) == ["entered in a copy"]


def test_abandoning_a_unit_abandons_the_units_left_open_above_it_first(
    db: Database, observer: sa.Engine
) -> None:
    outer = db.unit_of_work()
    savepoint = db.unit_of_work(propagation=Propagation.NESTED)
    ended: list[UnitState] = []
    outer.__enter__()
    outer.on_rollback(lambda: ended.append(savepoint.state))
    db.session.add(Item(name="outer"))
    savepoint.__enter__()
    db.session.add(Item(name="savepoint"))
    db.session.flush()
    outer.abandon()
    assert ended == [UnitState.ENDED]  # the savepoint ended before the outer unit rolled back
    assert (savepoint.outcome, outer.outcome) == (Outcome.ROLLED_BACK, Outcome.ROLLED_BACK)
    assert db.current is None
    assert committed_names(observer) == []
    assert checked_out(db) == 0


def test_abandoning_an_invalidated_or_ended_unit_only_marks_it_ended(db: Database) -> None:
    outer, inner = db.unit_of_work(), db.unit_of_work()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(UnitOfWorkError):
        outer.__exit__(None, None, None)
    assert inner.state is UnitState.INVALIDATED
    inner.abandon()
    assert (inner.state, inner.outcome) == (UnitState.ENDED, Outcome.ROLLED_BACK)
    inner.abandon()
    outer.abandon()
    assert (outer.state, outer.outcome) == (UnitState.ENDED, Outcome.ROLLED_BACK)
