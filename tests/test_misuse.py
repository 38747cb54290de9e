"""Misuse fails loudly and at once: a unit's session in another thread, a unit ended twice,
session options flask-uow cannot honour."""

from __future__ import annotations

import contextvars
import threading
from typing import Any, cast

import pytest
import sqlalchemy as sa

from flask_uow import Database, SessionProxy, UnitOfWorkError

from .conftest import checked_out, committed_names
from .models import Item


def _in_another_thread(action: Any) -> BaseException | None:
    """Run ``action`` in a new thread and return what it raised, or None."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return raised[0] if raised else None


@pytest.mark.parametrize("used_here_first", [False, True], ids=["untouched", "in-use"])
def test_a_units_session_used_from_another_thread_raises_and_the_unit_carries_on(
    db: Database, observer: sa.Engine, used_here_first: bool
) -> None:
    with db.unit_of_work() as uow:
        if used_here_first:
            uow.session.add(Item(name="before"))
            uow.session.flush()

        error = _in_another_thread(lambda: uow.session)

        uow.session.add(Item(name="after"))

    assert isinstance(error, UnitOfWorkError)
    assert "another thread" in str(error)
    assert committed_names(observer) == (["after", "before"] if used_here_first else ["after"])
    assert checked_out(db) == 0


@pytest.mark.parametrize("how", ["exit", "exit with an error", "abandon"])
def test_another_thread_cannot_end_a_unit_and_its_owner_still_commits_it(
    db: Database, observer: sa.Engine, how: str
) -> None:
    hooks: list[str] = []
    ends = {
        "exit": lambda unit: unit.__exit__(None, None, None),
        "exit with an error": lambda unit: unit.__exit__(ValueError, ValueError("x"), None),
        "abandon": lambda unit: unit.abandon(),
    }
    with db.unit_of_work() as uow:
        uow.session.add(Item(name="kept"))
        uow.session.flush()
        uow.on_commit(lambda: hooks.append("commit"))
        uow.on_rollback(lambda: hooks.append("rollback"))

        error = _in_another_thread(lambda: ends[how](uow))

        assert uow.state.value == "active"
        uow.session.add(Item(name="after"))

    assert isinstance(error, UnitOfWorkError)
    assert "entered in another thread" in str(error) and str(uow.opened_at) in str(error)
    assert hooks == ["commit"]
    assert committed_names(observer) == ["after", "kept"]
    assert checked_out(db) == 0


def test_a_copied_context_in_another_thread_cannot_end_the_unit_it_sees(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work() as uow:
        uow.session.add(Item(name="kept"))
        copied = contextvars.copy_context()

        error = _in_another_thread(lambda: copied.run(uow.__exit__, None, None, None))

    assert isinstance(error, UnitOfWorkError)
    assert committed_names(observer) == ["kept"]
    assert checked_out(db) == 0


def test_exiting_a_unit_twice_raises_and_changes_nothing_more(
    db: Database, observer: sa.Engine
) -> None:
    hooks: list[str] = []
    with db.unit_of_work() as uow:
        uow.session.add(Item(name="once"))
        uow.on_commit(lambda: hooks.append("commit"))
        uow.on_rollback(lambda: hooks.append("rollback"))
    stats = db.stats

    with pytest.raises(UnitOfWorkError, match="ended"):
        uow.__exit__(None, None, None)
    with pytest.raises(UnitOfWorkError, match="ended"):
        uow.__exit__(RuntimeError, RuntimeError("late"), None)

    assert hooks == ["commit"]
    assert db.stats == stats
    assert committed_names(observer) == ["once"]
    assert checked_out(db) == 0


def test_exiting_a_unit_that_was_never_entered_raises(db: Database) -> None:
    unit = db.unit_of_work()

    with pytest.raises(UnitOfWorkError):
        unit.__exit__(None, None, None)

    assert db.current is None
    assert db.stats.started == 0


@pytest.mark.parametrize("option", ["bind", "binds", "autobegin", "join_transaction_mode"])
def test_session_options_that_flask_uow_manages_are_refused_by_name(option: str) -> None:
    engine = sa.create_engine("sqlite://")
    values = {
        "bind": engine,
        "binds": {Item: engine},
        "autobegin": False,
        "join_transaction_mode": "create_savepoint",
    }

    with pytest.raises(ValueError, match=f"'{option}'") as raised:
        Database("sqlite://", session_options={option: values[option]})

    assert "session_options" in str(raised.value)
    engine.dispose()


@pytest.mark.parametrize("option", ["autoflsh", "expire_on_comit", "bind_to"])
def test_unknown_session_options_are_refused_by_name(option: str) -> None:
    with pytest.raises(ValueError, match=f"'{option}'") as raised:
        Database("sqlite://", session_options={option: False})

    assert "Session" in str(raised.value)


@pytest.mark.parametrize(("autoflush", "seen"), [(True, 1), (False, 0)])
def test_session_options_reach_every_units_session(
    backend_url: str, autoflush: bool, seen: int
) -> None:
    db = Database(backend_url, session_options={"autoflush": autoflush})
    Item.metadata.create_all(db.engine)
    try:
        with db.unit_of_work():
            assert db.session.autoflush is autoflush
            db.session.add(Item(name="pending"))
            count = db.session.scalar(sa.select(sa.func.count()).select_from(Item))
            db.session.flush()
        assert count == seen  # with autoflush off, the query ran before the INSERT
    finally:
        Item.metadata.drop_all(db.engine)
        db.dispose()


# -- the db.session proxy ----------------------------------------------------------------------


@pytest.mark.parametrize("call", ["remove", "registry.clear"])
def test_removing_the_session_proxy_is_refused_and_says_it_is_not_needed(
    db: Database, call: str
) -> None:
    target: Any = db.session
    for name in call.split("."):
        target = getattr(target, name)
    with db.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="not needed") as raised:
            target()
        assert db.session.execute(sa.select(1)).scalar() == 1  # the unit's session is intact
    assert "each unit of work closes its own session" in str(raised.value)


def test_configuring_the_session_proxy_is_refused_and_names_where_options_go(
    db: Database,
) -> None:
    proxy = cast(SessionProxy, db.session)
    with pytest.raises(UnitOfWorkError, match="UOW_SESSION_OPTIONS"):
        proxy.configure(autoflush=False)


def test_the_session_proxy_cannot_be_pointed_at_another_session(db: Database) -> None:
    other = db.session_class(bind=db.engine)
    proxy = cast(SessionProxy, db.session)
    with pytest.raises(UnitOfWorkError, match="cannot be set"):
        proxy.registry.set(other)
    other.close()


def test_calling_a_stored_session_proxy_gives_the_units_session_and_takes_no_new_options(
    db: Database,
) -> None:
    proxy = cast(SessionProxy, db.session)  # stored outside any unit, as factory_boy does
    with db.unit_of_work() as uow:
        assert proxy() is uow.session
        with pytest.raises(sa.exc.InvalidRequestError, match="no new arguments"):
            proxy(autoflush=False)


def test_the_session_proxy_repr_works_with_no_unit_active(db: Database) -> None:
    assert repr(db.session) == "<SessionProxy: the current unit of work's session>"


@pytest.mark.parametrize("propagation", ["NESTED", 1, None])
def test_a_propagation_that_is_not_a_member_is_refused_by_name(
    db: Database, propagation: Any
) -> None:
    with pytest.raises(TypeError, match="flask_uow.Propagation member") as raised:
        db.unit_of_work(propagation=propagation)
    assert repr(propagation) in str(raised.value)
