"""Random trees of units against a plain-Python model of what must happen.

Each step enters a unit (any propagation, read-only or not), writes, reads, registers
hooks, asks for rollback, or ends the innermost unit normally or with an exception. The
model predicts the rows committed, the hooks run, the exceptions raised and the number of
connections checked out; every step compares it with the real database.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

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
    kind: str  # "outermost", "savepoint" or "joined"
    frame: Frame  # the frame it owns, or the one it joined
    root: Frame
    rollback_requested: bool = False


class UnitTrees(RuleBasedStateMachine):
    db: Database
    observer: sa.Engine
    is_sqlite: bool

    def __init__(self) -> None:
        super().__init__()
        with self.db.unit_of_work():
            self.db.session.execute(sa.delete(Item))
        self.stack: list[ModelUnit] = []
        self.committed: set[str] = set()
        self.expected_hooks: list[str] = []
        self.actual_hooks: list[str] = []
        self.counter = _NAMES

    # -- entering ------------------------------------------------------------------------

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(propagation=st.sampled_from(Propagation), read_only=st.booleans())
    def enter(self, propagation: Propagation, read_only: bool) -> None:
        active = self.stack[-1] if self.stack else None
        unit = self.db.unit_of_work(propagation=propagation, read_only=read_only)
        expected_error: type[BaseException] | None = None
        if active is None or propagation is Propagation.REQUIRES_NEW:
            if propagation is Propagation.MANDATORY:
                expected_error = NoActiveUnitOfWork
            elif self._sqlite_would_wait_for_itself(propagation, read_only):
                expected_error = UnitOfWorkError
        elif active.root.read_only and not read_only:
            expected_error = ReadOnlyViolation
        if expected_error is not None:
            with pytest.raises(expected_error):
                unit.__enter__()
            return
        unit.__enter__()
        if active is None or propagation is Propagation.REQUIRES_NEW:
            root = Frame(read_only=read_only)
            self.stack.append(ModelUnit(unit, "outermost", root, root))
        elif propagation is Propagation.NESTED:
            frame = Frame(read_only=active.root.read_only, parent=active.frame)
            self.stack.append(ModelUnit(unit, "savepoint", frame, active.root))
        else:
            self.stack.append(ModelUnit(unit, "joined", active.frame, active.root))

    def _sqlite_would_wait_for_itself(self, propagation: Propagation, read_only: bool) -> bool:
        if not self.is_sqlite or propagation is not Propagation.REQUIRES_NEW or read_only:
            return False
        return any(unit.kind == "outermost" and unit.root.connected for unit in self.stack)

    # -- work inside the innermost unit --------------------------------------------------

    @precondition(lambda self: bool(self.stack))
    @rule()
    def write(self) -> None:
        top = self.stack[-1]
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
        self.db.session.execute(sa.select(sa.func.count()).select_from(Item))
        self.stack[-1].root.connected = True

    @precondition(lambda self: bool(self.stack))
    @rule(on_commit=st.booleans())
    def add_hook(self, on_commit: bool) -> None:
        top = self.stack[-1]
        label = f"hook-{next(self.counter)}"

        def hook() -> None:
            self.actual_hooks.append(label)

        if on_commit:
            top.real.on_commit(hook)
            top.frame.commit_hooks.append(label)
        else:
            top.real.on_rollback(hook)
            top.frame.rollback_hooks.append(label)

    @precondition(lambda self: bool(self.stack))
    @rule()
    def set_rollback(self) -> None:
        top = self.stack[-1]
        top.real.set_rollback()
        top.rollback_requested = True

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
            if failed:
                frame.doomed = True
        else:
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
            top.real.__exit__(Boom, error, None)  # returns normally: "with" re-raises
        elif expect_unexpected:
            with pytest.raises(UnexpectedRollback):
                top.real.__exit__(None, None, None)
        else:
            top.real.__exit__(None, None, None)
        if top.kind == "outermost":
            assert committed_names(self.observer) == sorted(self.committed)

    # -- after every step ----------------------------------------------------------------

    @invariant()
    def hooks_ran_as_predicted(self) -> None:
        assert self.actual_hooks == self.expected_hooks

    @invariant()
    def connections_checked_out_are_those_of_open_transactions(self) -> None:
        expected = sum(
            1 for unit in self.stack if unit.kind == "outermost" and unit.root.connected
        )
        assert checked_out(self.db) == expected

    @invariant()
    def the_innermost_unit_is_current(self) -> None:
        assert self.db.current is (self.stack[-1].real if self.stack else None)

    def teardown(self) -> None:
        while self.stack:
            self._exit(raise_error=True)
        assert checked_out(self.db) == 0
        assert self.db.stats.active == 0


def test_random_trees_of_units_match_the_model(
    db: Database, observer: sa.Engine, backend_name: str, request: pytest.FixtureRequest
) -> None:
    machine: Any = type(
        "UnitTreesOn" + backend_name.title(),
        (UnitTrees,),
        {"db": db, "observer": observer, "is_sqlite": backend_name == "sqlite"},
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
