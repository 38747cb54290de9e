"""Random trees of units against a plain-Python model of what must happen.

Each step enters a unit (any propagation, read-only or not), writes, reads, registers
hooks, asks for rollback, calls a decorated service with retries that fails transiently,
or ends the innermost unit normally or with an exception. The model predicts the rows
committed, the hooks run, the exceptions raised, what ``__exit__`` returns and the number
of connections checked out; every step compares it with the real database.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from flask_uow import (
    Database,
    NoActiveUnitOfWork,
    Propagation,
    ReadOnlyViolation,
    UnexpectedRollback,
    UnitOfWork,
    UnitOfWorkError,
)

from .conftest import checked_out, committed_names
from .models import Item

MAX_DEPTH = 5

_NAMES = itertools.count()
"""Row names are never reused, not even across examples: on MariaDB, inserting a key that a
deleted, not yet purged row had takes a gap lock, which a REQUIRES_NEW unit of the same
thread would then wait for."""


class Boom(Exception):
    """The application error the machine raises through units."""


def transient_error() -> sa.exc.OperationalError:
    """An error that ``is_transient`` classifies as worth a retry (SQLite's lock error)."""
    return sa.exc.OperationalError("INSERT ...", {}, Exception("database is locked"))


@dataclass(eq=False)
class Frame:
    """What the model knows of one transaction or savepoint."""

    read_only: bool
    parent: Frame | None = None
    names: list[str] = field(default_factory=list)
    commit_hooks: list[str] = field(default_factory=list)
    rollback_hooks: list[str] = field(default_factory=list)
    doomed: bool = False
    connected: bool = False


@dataclass(eq=False)
class ModelUnit:
    real: UnitOfWork
    kind: str  # "outermost", "savepoint", "joined" or "none" (runs with no transaction)
    frame: Frame | None  # the frame it owns, or the one it joined; None for "none"
    root: Frame | None
    rollback_requested: bool = False


class UnitTrees(RuleBasedStateMachine):
    db: Database
    observer: sa.Engine
    is_sqlite: bool
    is_wal: bool

    def __init__(self) -> None:
        super().__init__()
        with self.db.unit_of_work():
            self.db.session.execute(sa.delete(Item))
        self.stack: list[ModelUnit] = []
        self.committed: set[str] = set()
        self.expected_hooks: list[str] = []
        self.actual_hooks: list[str] = []
        self.counter = _NAMES

    def _active(self) -> ModelUnit | None:
        """The unit a new one would join: the innermost, unless it runs with no transaction."""
        if self.stack and self.stack[-1].kind != "none":
            return self.stack[-1]
        return None

    # -- entering ------------------------------------------------------------------------

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(propagation=st.sampled_from(Propagation), read_only=st.booleans())
    def enter(self, propagation: Propagation, read_only: bool) -> None:
        active = self._active()
        unit = self.db.unit_of_work(propagation=propagation, read_only=read_only)
        kind = self._kind_for(propagation, active)
        expected_error: type[BaseException] | None = None
        if propagation is Propagation.NEVER and active is not None:
            expected_error = UnitOfWorkError
        elif kind == "outermost" and propagation is Propagation.MANDATORY:
            expected_error = NoActiveUnitOfWork
        elif kind == "outermost" and self._sqlite_would_wait_for_itself(read_only):
            expected_error = UnitOfWorkError
        elif kind in ("savepoint", "joined") and active is not None:
            assert active.root is not None
            if active.root.read_only and not read_only:
                expected_error = ReadOnlyViolation
        if expected_error is not None:
            with pytest.raises(expected_error):
                unit.__enter__()
            return
        assert unit.__enter__() is unit
        if kind == "none":
            self.stack.append(ModelUnit(unit, "none", None, None))
        elif kind == "outermost":
            root = Frame(read_only=read_only)
            self.stack.append(ModelUnit(unit, "outermost", root, root))
        else:
            assert active is not None and active.frame is not None
            if kind == "savepoint":
                assert active.root is not None
                frame = Frame(read_only=active.root.read_only, parent=active.frame)
                self.stack.append(ModelUnit(unit, "savepoint", frame, active.root))
            else:
                self.stack.append(ModelUnit(unit, "joined", active.frame, active.root))

    @staticmethod
    def _kind_for(propagation: Propagation, active: ModelUnit | None) -> str:
        if propagation in (Propagation.NOT_SUPPORTED, Propagation.NEVER):
            return "none"
        if propagation is Propagation.SUPPORTS:
            return "joined" if active is not None else "none"
        if active is None or propagation is Propagation.REQUIRES_NEW:
            return "outermost"
        return "savepoint" if propagation is Propagation.NESTED else "joined"

    def _sqlite_would_wait_for_itself(self, read_only: bool) -> bool:
        # Decided from the modes alone: a writer never starts inside an outer writer of the
        # same thread; inside an outer reader only in WAL mode, where readers don't block it.
        if not self.is_sqlite or read_only:
            return False
        return any(
            unit.kind == "outermost"
            and unit.root is not None
            and (not unit.root.read_only or not self.is_wal)
            for unit in self.stack
        )

    # -- work inside the innermost unit --------------------------------------------------

    @precondition(lambda self: bool(self.stack))
    @rule()
    def write(self) -> None:
        top = self.stack[-1]
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                self.db.session.add(Item(name="never"))
            return
        assert top.root is not None and top.frame is not None
        name = f"row-{next(self.counter)}"
        item = Item(name=name)
        self.db.session.add(item)
        if top.root.read_only:
            with pytest.raises(ReadOnlyViolation):
                self.db.session.flush()
            self.db.session.expunge(item)
            return
        self.db.session.flush()
        top.frame.names.append(name)
        top.root.connected = True

    @precondition(lambda self: bool(self.stack))
    @rule()
    def read(self) -> None:
        top = self.stack[-1]
        statement = sa.select(sa.func.count()).select_from(Item)
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                self.db.session.execute(statement)
            return
        assert top.root is not None
        self.db.session.execute(statement)
        top.root.connected = True

    @precondition(lambda self: bool(self.stack))
    @rule(on_commit=st.booleans())
    def add_hook(self, on_commit: bool) -> None:
        top = self.stack[-1]
        label = f"hook-{next(self.counter)}"

        def hook() -> None:
            self.actual_hooks.append(label)

        register = top.real.on_commit if on_commit else top.real.on_rollback
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                register(hook)
            return
        assert top.frame is not None
        register(hook)
        (top.frame.commit_hooks if on_commit else top.frame.rollback_hooks).append(label)

    @precondition(lambda self: bool(self.stack))
    @rule()
    def set_rollback(self) -> None:
        top = self.stack[-1]
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                top.real.set_rollback()
            return
        top.real.set_rollback()
        top.rollback_requested = True

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(failures=st.integers(min_value=0, max_value=3))
    def call_with_retries(self, failures: int) -> None:
        """A @db.transactional(retries=2) service that fails transiently ``failures`` times."""
        active = self._active()
        name = f"row-{next(self.counter)}"
        attempts: list[int] = []

        @self.db.transactional(retries=2)
        def service() -> None:
            attempts.append(1)
            self.db.session.add(Item(name=f"{name}-{len(attempts)}"))
            self.db.session.flush()
            if len(attempts) <= failures:
                raise transient_error()

        if active is not None:
            assert active.root is not None and active.frame is not None
            if active.root.read_only:
                with pytest.raises(ReadOnlyViolation):
                    service()
                return
            # A joined call never retries: its failure dooms the transaction it joined.
            if failures:
                with pytest.raises(sa.exc.OperationalError):
                    service()
                active.frame.doomed = True
            else:
                service()
                active.frame.names.append(f"{name}-1")
            active.root.connected = True
            assert len(attempts) == 1
            return
        if self._sqlite_would_wait_for_itself(read_only=False):
            with pytest.raises(UnitOfWorkError):
                service()
            return
        if failures > 2:
            with pytest.raises(sa.exc.OperationalError):
                service()
            assert len(attempts) == 3
        else:
            service()
            assert len(attempts) == failures + 1
            self.committed.add(f"{name}-{failures + 1}")
        assert committed_names(self.observer) == sorted(self.committed)

    # -- ending the innermost unit -------------------------------------------------------

    @precondition(lambda self: bool(self.stack))
    @rule()
    def exit_normally(self) -> None:
        self._exit(raise_error=False)

    @precondition(lambda self: bool(self.stack))
    @rule()
    def exit_with_an_exception(self) -> None:
        self._exit(raise_error=True)

    def _exit(self, raise_error: bool) -> None:
        top = self.stack.pop()
        frame = top.frame
        failed = raise_error or top.rollback_requested
        expect_unexpected = False
        if top.kind == "joined":
            assert frame is not None
            if failed:
                frame.doomed = True
        elif top.kind != "none":
            assert frame is not None
            succeeded = not failed and not frame.doomed
            expect_unexpected = not raise_error and frame.doomed and not top.rollback_requested
            if top.kind == "savepoint":
                assert frame.parent is not None
                if succeeded:
                    frame.parent.names.extend(frame.names)
                    frame.parent.commit_hooks.extend(frame.commit_hooks)
                    frame.parent.rollback_hooks.extend(frame.rollback_hooks)
            elif succeeded:
                self.committed.update(frame.names)
                self.expected_hooks.extend(frame.commit_hooks)
            else:
                self.expected_hooks.extend(frame.rollback_hooks)

        if raise_error:
            error = Boom()
            # Returns None (falsy): the "with" statement re-raises the exception unchanged.
            assert cast(Any, top.real).__exit__(Boom, error, None) is None
        elif expect_unexpected:
            with pytest.raises(UnexpectedRollback):
                top.real.__exit__(None, None, None)
        else:
            assert cast(Any, top.real).__exit__(None, None, None) is None
        if top.kind == "outermost":
            assert committed_names(self.observer) == sorted(self.committed)

    # -- after every step ----------------------------------------------------------------

    @invariant()
    def hooks_ran_as_predicted(self) -> None:
        assert self.actual_hooks == self.expected_hooks

    @invariant()
    def connections_checked_out_are_those_of_open_transactions(self) -> None:
        expected = sum(
            1
            for unit in self.stack
            if unit.kind == "outermost" and unit.root is not None and unit.root.connected
        )
        assert checked_out(self.db) == expected

    @invariant()
    def the_innermost_unit_is_current(self) -> None:
        active = self._active()
        assert self.db.current is (active.real if active is not None else None)

    def teardown(self) -> None:
        while self.stack:
            self._exit(raise_error=True)
        assert checked_out(self.db) == 0
        assert self.db.stats.active == 0


def journal_mode(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()


def test_random_trees_of_units_match_the_model(
    db: Database, observer: sa.Engine, backend_name: str, request: pytest.FixtureRequest
) -> None:
    machine: Any = type(
        "UnitTreesOn" + backend_name.title(),
        (UnitTrees,),
        {
            "db": db,
            "observer": observer,
            "is_sqlite": backend_name == "sqlite",
            "is_wal": backend_name == "sqlite" and journal_mode(observer) == "wal",
        },
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=300 if backend_name == "sqlite" else 100,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
