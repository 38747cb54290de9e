"""SUPPORTS, NOT_SUPPORTED and NEVER: code that runs with no transaction, and says so."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_uow import (
    Database,
    NoActiveUnitOfWork,
    Outcome,
    Propagation,
    UnexpectedRollback,
    UnitKind,
    UnitOfWorkError,
)

from .conftest import checked_out, committed_names
from .models import Item


def test_supports_joins_the_active_unit_and_its_failure_dooms_it(
    db: Database, observer: sa.Engine
) -> None:
    @db.transactional(propagation=Propagation.SUPPORTS)
    def lookup_then_fail() -> None:
        assert db.current is not None and db.current.kind is UnitKind.JOINED
        db.session.add(Item(name="joined"))
        raise KeyError("no")

    with pytest.raises(UnexpectedRollback):
        with db.unit_of_work() as outer:
            db.session.add(Item(name="outer"))
            with pytest.raises(KeyError):
                lookup_then_fail()
    assert outer.outcome is Outcome.DOOMED
    assert committed_names(observer) == []


def test_supports_without_an_active_unit_runs_with_no_session(db: Database) -> None:
    @db.transactional(propagation=Propagation.SUPPORTS)
    def optional_lookup() -> str:
        with pytest.raises(NoActiveUnitOfWork, match="SUPPORTS"):
            db.session.execute(sa.select(Item))
        assert db.current is None
        return "ran"

    assert optional_lookup() == "ran"
    assert db.stats.started == 0
    assert checked_out(db) == 0


def test_not_supported_suspends_the_active_unit_for_the_duration(db: Database) -> None:
    with db.unit_of_work() as outer:
        db.session.add(Item(name="pending"))
        with db.unit_of_work(propagation=Propagation.NOT_SUPPORTED) as suspended:
            assert suspended.kind is UnitKind.NONE
            assert db.current is None
            with pytest.raises(NoActiveUnitOfWork, match="NOT_SUPPORTED"):
                db.session.add(Item(name="never"))
            with pytest.raises(NoActiveUnitOfWork):
                db.on_commit(lambda: None)
        assert db.current is outer
        assert db.session is outer.session
    assert suspended.outcome is Outcome.NO_TRANSACTION
    assert outer.outcome is Outcome.COMMITTED


@pytest.mark.parametrize("backend_url", ["postgresql", "mariadb"], indirect=True)
def test_a_unit_opened_under_not_supported_commits_on_its_own(
    db: Database, observer: sa.Engine
) -> None:
    with pytest.raises(KeyError):
        with db.unit_of_work():
            db.session.add(Item(name="outer"))
            with db.unit_of_work(propagation=Propagation.NOT_SUPPORTED):
                with db.unit_of_work() as independent:
                    assert independent.is_outermost
                    db.session.add(Item(name="independent"))
            raise KeyError("outer fails")
    assert committed_names(observer) == ["independent"]
    assert checked_out(db) == 0


def test_a_failure_under_not_supported_leaves_the_suspended_unit_able_to_commit(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="kept"))
        with pytest.raises(ConnectionError):
            with db.unit_of_work(propagation=Propagation.NOT_SUPPORTED):
                raise ConnectionError("the external service is down")
    assert committed_names(observer) == ["kept"]


def test_never_raises_inside_a_unit_and_names_where_it_was_opened(db: Database) -> None:
    @db.transactional(propagation=Propagation.NEVER)
    def call_payment_provider() -> None:
        raise AssertionError("never runs")

    with db.unit_of_work():
        with pytest.raises(UnitOfWorkError, match=f"NEVER.*{__file__}"):
            call_payment_provider()


def test_never_outside_any_unit_runs_with_no_transaction(db: Database) -> None:
    with db.unit_of_work(propagation=Propagation.NEVER) as unit:
        assert unit.kind is UnitKind.NONE
        with pytest.raises(NoActiveUnitOfWork, match="NEVER"):
            db.session.execute(sa.select(Item))
    assert unit.outcome is Outcome.NO_TRANSACTION
    assert db.stats.started == 0
