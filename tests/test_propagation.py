"""Propagation: joining, savepoints, independent units and mandatory ones."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_uow import Database, NoActiveUnitOfWork, Propagation, UnexpectedRollback

from .conftest import checked_out, committed_names
from .models import Item


class Boom(Exception):
    pass


def test_required_joins_the_active_unit_and_only_the_outermost_commits(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work() as outer:
        with db.unit_of_work() as inner:
            assert inner.session is outer.session
            assert not inner.is_outermost
            db.session.add(Item(name="inner"))
            db.session.flush()
        assert committed_names(observer) == []
    assert committed_names(observer) == ["inner"]


def test_joined_failure_caught_by_the_caller_dooms_the_outer_unit(
    db: Database, observer: sa.Engine
) -> None:
    with pytest.raises(UnexpectedRollback, match="NESTED") as raised:
        with db.unit_of_work():
            db.session.add(Item(name="outer"))
            try:
                with db.unit_of_work():
                    raise Boom("inner failed")
            except Boom:
                pass
    assert isinstance(raised.value.__cause__, Boom)
    assert committed_names(observer) == []
    assert checked_out(db) == 0


def test_joined_set_rollback_dooms_the_outer_unit(db: Database, observer: sa.Engine) -> None:
    with pytest.raises(UnexpectedRollback, match="set_rollback"):
        with db.unit_of_work():
            db.session.add(Item(name="outer"))
            with db.unit_of_work() as inner:
                inner.set_rollback()
    assert committed_names(observer) == []


def test_doomed_outer_unit_leaving_with_its_own_exception_reraises_that_exception(
    db: Database,
) -> None:
    with pytest.raises(Boom, match="outer"):
        with db.unit_of_work():
            try:
                with db.unit_of_work():
                    raise Boom("inner")
            except Boom:
                pass
            raise Boom("outer")


def test_outermost_set_rollback_rolls_back_quietly(db: Database, observer: sa.Engine) -> None:
    rolled_back: list[bool] = []
    with db.unit_of_work() as uow:
        uow.on_rollback(lambda: rolled_back.append(True))
        db.session.add(Item(name="discarded"))
        db.session.flush()
        uow.set_rollback()
    assert committed_names(observer) == []
    assert rolled_back == [True]


def test_nested_failure_rolls_back_to_the_savepoint_and_the_outer_unit_still_commits(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="outer"))
        try:
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.add(Item(name="inner"))
                db.session.flush()
                raise Boom
        except Boom:
            pass
        db.session.add(Item(name="after"))
    assert committed_names(observer) == ["after", "outer"]


def test_nested_success_is_committed_with_the_outer_unit(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        with db.unit_of_work(propagation=Propagation.NESTED) as nested:
            assert not nested.is_outermost
            db.session.add(Item(name="inner"))
        assert committed_names(observer) == []
    assert committed_names(observer) == ["inner"]


def test_nested_integrity_error_leaves_the_outer_unit_usable(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="taken"))
        db.session.flush()
        with pytest.raises(sa.exc.IntegrityError):
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.add(Item(name="taken"))
        db.session.add(Item(name="free"))
    assert committed_names(observer) == ["free", "taken"]


def test_nested_set_rollback_undoes_only_the_savepoint(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="outer"))
        with db.unit_of_work(propagation=Propagation.NESTED) as nested:
            db.session.add(Item(name="inner"))
            nested.set_rollback()
    assert committed_names(observer) == ["outer"]


def test_joined_failure_inside_a_savepoint_dooms_only_the_savepoint(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="outer"))
        with pytest.raises(UnexpectedRollback):
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.add(Item(name="inner"))
                try:
                    with db.unit_of_work():
                        raise Boom
                except Boom:
                    pass
    assert committed_names(observer) == ["outer"]


def test_nested_without_an_active_unit_starts_an_outermost_one(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work(propagation=Propagation.NESTED) as uow:
        assert uow.is_outermost
        db.session.add(Item(name="alone"))
    assert committed_names(observer) == ["alone"]


@pytest.mark.parametrize("backend_url", ["postgresql", "mariadb"], indirect=True)
def test_requires_new_commits_on_its_own_even_when_the_outer_unit_fails(
    db: Database, observer: sa.Engine
) -> None:
    with pytest.raises(Boom):
        with db.unit_of_work() as outer:
            db.session.add(Item(name="outer"))
            with db.unit_of_work(propagation=Propagation.REQUIRES_NEW) as audit:
                assert audit.is_outermost
                assert db.session is audit.session
                assert audit.session is not outer.session
                db.session.add(Item(name="audit"))
            assert db.session is outer.session
            raise Boom
    assert committed_names(observer) == ["audit"]


@pytest.mark.parametrize("backend_url", ["postgresql", "mariadb"], indirect=True)
def test_requires_new_failure_leaves_the_outer_unit_to_commit(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="outer"))
        with pytest.raises(Boom):
            with db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                db.session.add(Item(name="lost"))
                db.session.flush()
                raise Boom
    assert committed_names(observer) == ["outer"]
    assert checked_out(db) == 0


def test_mandatory_joins_the_active_unit(db: Database) -> None:
    with db.unit_of_work() as outer:
        with db.unit_of_work(propagation=Propagation.MANDATORY) as inner:
            assert inner.session is outer.session


def test_mandatory_without_an_active_unit_raises(db: Database) -> None:
    @db.transactional(propagation=Propagation.MANDATORY)
    def must_be_called_inside() -> None:
        raise AssertionError("never runs")

    with pytest.raises(NoActiveUnitOfWork, match="MANDATORY"):
        must_be_called_inside()
    assert db.stats.started == 0
