"""Observers registered on a Database are told of every unit's entry, end and retry."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_uow import Database, Outcome, UnitOfWork

from .models import Item


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def unit_entered(self, unit: UnitOfWork) -> None:
        self.events.append(("entered", unit.propagation.name, unit.kind))

    def unit_ended(self, unit: UnitOfWork) -> None:
        self.events.append(("ended", unit.propagation.name, unit.outcome))

    def unit_retrying(self, unit: UnitOfWork, error: BaseException, attempt: int) -> None:
        self.events.append(("retrying", type(error).__name__, attempt))


def test_an_observer_sees_each_unit_enter_and_end_with_its_outcome(db: Database) -> None:
    recorder = Recorder()
    db.runtime.observe(recorder)
    with db.unit_of_work():
        with db.unit_of_work():
            db.session.add(Item(name="observed"))
    db.runtime.unobserve(recorder)
    with db.unit_of_work():
        pass
    kinds = [(event, outcome) for event, _, outcome in recorder.events]
    assert [event for event, _ in kinds] == ["entered", "entered", "ended", "ended"]
    assert kinds[2][1] is Outcome.JOINED
    assert kinds[3][1] is Outcome.COMMITTED


def test_an_observer_is_told_of_each_retry_with_the_next_attempt_number(db: Database) -> None:
    recorder = Recorder()
    db.runtime.observe(recorder)
    attempts: list[int] = []

    @db.transactional(retries=1)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))

    flaky()
    db.runtime.unobserve(recorder)
    assert ("retrying", "OperationalError", 2) in recorder.events
    ended = [outcome for event, _, outcome in recorder.events if event == "ended"]
    assert ended == [Outcome.ROLLED_BACK, Outcome.COMMITTED]


def test_an_invalidated_unit_is_reported_as_ended_and_rolled_back(db: Database) -> None:
    recorder = Recorder()
    db.runtime.observe(recorder)
    outer, inner = db.unit_of_work(), db.unit_of_work()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(Exception, match="entered after it"):
        outer.__exit__(None, None, None)
    db.runtime.unobserve(recorder)
    ended = [outcome for event, _, outcome in recorder.events if event == "ended"]
    assert ended == [Outcome.ROLLED_BACK, Outcome.ROLLED_BACK]
