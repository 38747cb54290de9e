"""The fields of a unit of work, declared once for ``UnitOfWork`` and the modules of its halves,
and the one function that changes a unit's state."""

from __future__ import annotations

from contextvars import Token
from typing import TYPE_CHECKING

from ._errors import UnitOfWorkError
from ._lifecycle import TRANSITIONS

if TYPE_CHECKING:
    from ._lifecycle import Outcome, UnitKind, UnitState
    from ._propagation import Propagation
    from ._runtime import Runtime
    from ._timeouts import Timeouts
    from ._transaction import Transaction
    from ._unit import CallSite, Origin, UnitOfWork


class UnitExtras:
    """What only some units need, made when first needed: the timeouts and causal position
    asked for (entering reads them), the attempt and retries of ``@db.transactional(retries=)``
    and what its retry needs to know of how the unit ended."""

    __slots__ = (
        "timeouts",
        "after",
        "retries_left",
        "attempt",
        "failed_during_commit",
        "rollback_hooks_held",
    )

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        after: int | None = None,
        retries_left: int = 0,
        attempt: int = 1,
    ) -> None:
        self.timeouts = timeouts
        """The statement and lock timeouts asked for, before the engine's defaults fill in."""
        self.after = after
        """The causal position a read-only outermost unit must see (``after=token``)."""
        self.retries_left = retries_left
        """How many more times ``@db.transactional(retries=...)`` may run the unit again."""
        self.attempt = attempt
        """1 for a first run; 2 and more for the retries of ``@db.transactional(retries=)``."""
        self.failed_during_commit = False
        """The COMMIT statement itself failed (not a flush or a statement before it)."""
        self.rollback_hooks_held = False
        """The unit's on_rollback hooks did not run because a retry was to follow."""


class UnitFields:
    """What a unit knows; ``UnitOfWork.__init__`` documents and sets each field.

    What the units of one transaction share (session, hooks, doom) is not here: it is the
    ``Transaction`` record in ``_tx``, set when the unit is entered.
    """

    __slots__ = (
        "propagation",
        "read_only",
        "isolation_level",
        "_runtime",
        "_extras",
        "_state",
        "_kind",
        "_outcome",
        "_tx",
        "_rollback_requested",
        "_origin",
        "_site",
        "_scope",
        "_token",
        "_invalidated_by",
    )

    propagation: Propagation
    read_only: bool
    isolation_level: str | None
    _runtime: Runtime
    _extras: UnitExtras | None
    _state: UnitState
    _kind: UnitKind | None
    _outcome: Outcome | None
    _tx: Transaction
    """Set when the unit is entered (every kind has one); never read before."""
    _rollback_requested: bool
    _origin: Origin
    _site: CallSite | None
    _scope: object | None
    _token: Token[tuple[UnitOfWork, ...]]
    """Set when the unit is entered."""
    _invalidated_by: UnitOfWork
    """Set when the unit is invalidated."""

    def _extras_made(self) -> UnitExtras:
        """This unit's extras, made now if it had none."""
        extras = self._extras
        if extras is None:
            extras = self._extras = UnitExtras()
        return extras

    def _move_to(self, state: UnitState) -> None:
        """The one place a unit's state changes, along the moves ``TRANSITIONS`` allows."""
        if state not in TRANSITIONS[self._state]:
            raise UnitOfWorkError(
                f"A unit of work cannot go from {self._state.value} to {state.value}."
            )
        self._state = state

    if TYPE_CHECKING:  # defined by UnitOfWork, used by the modules of its halves

        @property
        def opened_at(self) -> str | None: ...

        @property
        def after(self) -> int | None: ...

        def will_retry(self, error: BaseException) -> bool: ...

