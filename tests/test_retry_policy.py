"""How retries wait and what they retry: jittered, capped backoff; lock timeouts yes,
interrupts never."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from flask_uow import Database
from flask_uow._retry import backoff_seconds

from .conftest import checked_out, committed_names
from .models import Item


def _ceilings(monkeypatch: pytest.MonkeyPatch, attempts: range) -> list[float]:
    """The upper bound of each attempt's wait, read by making the jitter pick its maximum."""
    lower_bounds: set[float] = set()

    def highest(low: float, high: float) -> float:
        lower_bounds.add(low)
        return high

    monkeypatch.setattr(random, "uniform", highest)
    ceilings = [backoff_seconds(attempt) for attempt in attempts]
    assert lower_bounds == {0}, "full jitter: every wait may be as short as zero"
    return ceilings


def test_the_longest_wait_doubles_with_each_attempt_until_it_reaches_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ceilings = _ceilings(monkeypatch, range(1, 41))
    cap = max(ceilings)
    capped_from = ceilings.index(cap)

    assert 0 < ceilings[0] < cap <= 1.0
    assert 2 <= capped_from < 40, "the cap is reached after a few attempts, not at once"
    for before, after in zip(ceilings[:capped_from], ceilings[1:capped_from], strict=False):
        assert after == pytest.approx(2 * before)
    assert ceilings[capped_from - 1] < cap <= 2 * ceilings[capped_from - 1]
    assert set(ceilings[capped_from:]) == {cap}


@pytest.mark.parametrize("attempt", [100, 1_100, 10**6])
def test_the_cap_holds_for_any_number_of_attempts(
    monkeypatch: pytest.MonkeyPatch, attempt: int
) -> None:
    cap = max(_ceilings(monkeypatch, range(1, 41)))

    assert backoff_seconds(attempt) == cap


def test_waits_are_spread_over_the_whole_range_below_the_ceiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ceiling = _ceilings(monkeypatch, range(3, 4))[0]
    monkeypatch.setattr(random, "uniform", random.Random(20261127).uniform)

    waits = [backoff_seconds(3) for _ in range(1_000)]

    assert all(0 <= wait <= ceiling for wait in waits)
    assert len(set(waits)) == len(waits), "two retries must not wake up in lockstep"
    assert min(waits) < 0.05 * ceiling
    assert max(waits) > 0.95 * ceiling
    assert 0.4 * ceiling < sum(waits) / len(waits) < 0.6 * ceiling


def test_a_mariadb_lock_wait_timeout_is_retried_once_the_lock_is_free(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name != "mariadb":
        pytest.skip("error 1205, ER_LOCK_WAIT_TIMEOUT, is MariaDB's and MySQL's")
    with db.unit_of_work():
        db.session.add(Item(name="contended"))
    holder = observer.connect()
    holding = holder.begin()
    holder.execute(sa.update(Item).where(Item.name == "contended").values(name="contended"))
    error_codes: list[int] = []

    @db.transactional(retries=3)
    def rename() -> None:
        # Wait 1 s for the row lock instead of the server's default of 50 s.
        db.session.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
        if error_codes:
            holding.rollback()  # the other transaction ends between the attempts
        try:
            db.session.execute(
                sa.update(Item).where(Item.name == "contended").values(name="renamed")
            )
        except sa.exc.OperationalError as error:
            error_codes.append(error.orig.args[0])  # type: ignore[union-attr]
            raise

    try:
        rename()
    finally:
        holder.close()

    assert error_codes == [1205]
    assert db.stats.retried == 1
    assert committed_names(observer) == ["renamed"]
    assert checked_out(db) == 0


class Interrupted(BaseException):
    """Like KeyboardInterrupt: not an Exception, so ``except Exception`` does not catch it."""


@pytest.mark.parametrize(
    "interrupt",
    [Interrupted("stop"), KeyboardInterrupt(), SystemExit(2)],
    ids=lambda interrupt: type(interrupt).__name__,
)
def test_a_base_exception_through_a_retrying_function_rolls_back_and_is_not_retried(
    db: Database, observer: sa.Engine, interrupt: BaseException
) -> None:
    calls: list[str] = []
    hooks: list[str] = []

    @db.transactional(retries=3)
    def interrupted() -> None:
        calls.append("called")
        db.on_commit(lambda: hooks.append("commit"))
        db.on_rollback(lambda: hooks.append("rollback"))
        db.session.add(Item(name="lost"))
        db.session.flush()
        raise interrupt

    with pytest.raises(type(interrupt)) as raised:
        interrupted()

    assert raised.value is interrupt
    assert calls == ["called"]
    assert hooks == ["rollback"]
    assert (db.stats.retried, db.stats.rolled_back, db.stats.committed) == (0, 1, 0)
    assert db.current is None
    assert committed_names(observer) == []
    assert checked_out(db) == 0
