"""Errors a port from Flask-SQLAlchemy runs into name the real fix."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_uow import Database, Propagation, ReadOnlyViolation, UnitOfWorkError

from .conftest import checked_out, committed_names
from .models import Item


def test_a_pending_object_that_fails_as_a_savepoint_opens_says_to_add_it_inside(
    db: Database, observer: sa.Engine
) -> None:
    with pytest.raises(UnitOfWorkError, match="Make and add those objects inside the NESTED"):
        with db.unit_of_work():
            db.session.add(Item(name="ada"))
            db.session.flush()
            db.session.add(Item(name="ada"))  # made before the block: pending
            try:
                with db.unit_of_work(propagation=Propagation.NESTED):
                    db.session.add(Item(name="grace"))
            except sa.exc.IntegrityError:  # what the port expected: never reached
                pytest.fail("the failure is not the savepoint's to catch")
    assert committed_names(observer) == []
    assert checked_out(db) == 0


def test_a_nested_unit_with_nothing_pending_opens_its_savepoint_as_before(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="ada"))
        with pytest.raises(sa.exc.IntegrityError):
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.add(Item(name="ada"))
                db.session.flush()
    assert committed_names(observer) == ["ada"]


@pytest.mark.parametrize("what", ["create_all", "drop_all"])
def test_create_all_and_drop_all_refuse_while_a_unit_of_the_thread_is_open(
    db: Database, what: str
) -> None:
    # A unittest TestCase whose setUp opened a unit that tearDown has not ended yet:
    # PostgreSQL's DROP TABLE would wait for that unit's transaction forever.
    unit = db.unit_of_work()
    unit.__enter__()
    db.session.add(Item(name="ada"))
    db.session.flush()
    with pytest.raises(UnitOfWorkError, match="End the unit first"):
        getattr(db, what)()
    unit.__exit__(None, None, None)
    db.drop_all()  # once the unit ended
    db.create_all()


def test_a_read_only_violation_pending_before_a_savepoint_is_raised_unchanged(
    db: Database,
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="ada"))
    with pytest.raises(ReadOnlyViolation), db.unit_of_work(read_only=True):
        item = db.session.scalars(sa.select(Item)).one()
        item.name = "changed"
        with db.unit_of_work(propagation=Propagation.NESTED, read_only=True):
            pass
