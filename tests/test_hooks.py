"""on_commit and on_rollback hooks: when they run, in what order, and what a failing one does."""

from __future__ import annotations

import functools
import logging

import pytest

from flask_uow import Database, NoActiveUnitOfWork, Propagation

from .conftest import checked_out
from .models import Item


class Boom(Exception):
    pass


def test_commit_hooks_run_once_in_order_after_commit_and_close(db: Database) -> None:
    seen: list[tuple[str, int]] = []

    def record(number: int) -> None:
        seen.append(("commit", checked_out(db) + number))

    with db.unit_of_work() as uow:
        db.session.add(Item(name="a"))
        db.session.flush()
        for number in range(3):
            uow.on_commit(functools.partial(record, number))
        uow.on_rollback(lambda: seen.append(("rollback", 0)))
        assert seen == []
    assert seen == [("commit", 0), ("commit", 1), ("commit", 2)]


def test_rollback_hooks_run_after_an_exception_and_commit_hooks_never(db: Database) -> None:
    seen: list[str] = []
    with pytest.raises(Boom):
        with db.unit_of_work() as uow:
            uow.on_commit(lambda: seen.append("commit"))
            uow.on_rollback(lambda: seen.append("rollback"))
            raise Boom
    assert seen == ["rollback"]


def test_a_failing_hook_is_logged_and_neither_stops_the_others_nor_fails_the_unit(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken() -> None:
        raise Boom("hook failed")

    with caplog.at_level(logging.ERROR, logger="flask_uow"):
        with db.unit_of_work() as uow:
            uow.on_commit(broken)
            uow.on_commit(lambda: seen.append("second"))
    assert seen == ["second"]
    assert db.stats.committed == 1
    [record] = caplog.records
    assert record.name == "flask_uow"
    assert record.exc_info is not None and isinstance(record.exc_info[1], Boom)


def test_hooks_registered_in_a_joined_unit_belong_to_the_outermost(db: Database) -> None:
    seen: list[str] = []
    with db.unit_of_work():
        with db.unit_of_work() as inner:
            inner.on_commit(lambda: seen.append("inner"))
        assert seen == []
    assert seen == ["inner"]


def test_hooks_of_a_rolled_back_savepoint_are_discarded(db: Database) -> None:
    seen: list[str] = []
    with db.unit_of_work():
        with pytest.raises(Boom):
            with db.unit_of_work(propagation=Propagation.NESTED) as nested:
                nested.on_commit(lambda: seen.append("nested commit"))
                nested.on_rollback(lambda: seen.append("nested rollback"))
                raise Boom
        db.current.on_commit(lambda: seen.append("outer commit"))  # type: ignore[union-attr]
    assert seen == ["outer commit"]


def test_hooks_of_a_released_savepoint_follow_the_outer_outcome(db: Database) -> None:
    seen: list[str] = []
    with pytest.raises(Boom):
        with db.unit_of_work():
            with db.unit_of_work(propagation=Propagation.NESTED) as nested:
                nested.on_commit(lambda: seen.append("nested commit"))
                nested.on_rollback(lambda: seen.append("nested rollback"))
            raise Boom
    assert seen == ["nested rollback"]


@pytest.mark.parametrize("backend_url", ["postgresql", "mariadb"], indirect=True)
def test_requires_new_runs_its_own_hooks_when_it_commits(db: Database) -> None:
    seen: list[str] = []
    with pytest.raises(Boom):
        with db.unit_of_work() as outer:
            outer.on_commit(lambda: seen.append("outer"))
            with db.unit_of_work(propagation=Propagation.REQUIRES_NEW) as audit:
                audit.on_commit(lambda: seen.append("audit"))
            assert seen == ["audit"]
            raise Boom
    assert seen == ["audit"]


def test_a_hook_may_open_a_new_unit_of_work(db: Database) -> None:
    def follow_up() -> None:
        with db.unit_of_work() as uow:
            assert uow.is_outermost
            db.session.add(Item(name="follow-up"))

    with db.unit_of_work() as uow:
        db.session.add(Item(name="first"))
        uow.on_commit(follow_up)
    with db.unit_of_work(read_only=True):
        assert db.session.query(Item).count() == 2


def test_db_on_commit_registers_on_the_active_unit(db: Database) -> None:
    seen: list[str] = []
    with db.unit_of_work():
        with db.unit_of_work():
            db.on_commit(lambda: seen.append("commit"))
            db.on_rollback(lambda: seen.append("rollback"))
        assert seen == []
    assert seen == ["commit"]


def test_db_on_commit_outside_a_unit_raises(db: Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match="on_commit"):
        db.on_commit(lambda: None)
    with pytest.raises(NoActiveUnitOfWork, match="on_rollback"):
        db.on_rollback(lambda: None)
