"""The life of a unit of work: its states, the moves between them, its kinds and outcomes.

Sync and async units share these. ``_unit.py`` holds the public API, ``_unit_entering.py``
decides a unit's kind, ``_transaction.py`` holds what the units of one transaction share,
``_ending.py`` decides how a unit ends and ``_unit_ending.py`` carries that out.
"""

from __future__ import annotations

import enum


class UnitState(enum.Enum):
    """Where a unit is in its life. The moves allowed are in ``TRANSITIONS``."""

    NEW = "new"
    """Created, not entered yet."""
    ACTIVE = "active"
    """Entered: its session (or its transaction's) may be used."""
    INVALIDATED = "invalidated"
    """A unit entered before it ended first; it is no longer usable and raises when ended."""
    ENDED = "ended"
    """Left; as if it had never been entered, in every context."""

    # Members are singletons compared by identity, so identity is their hash too: Enum's own
    # hashes the name in Python code, a call on every lookup in ``TRANSITIONS``.
    __hash__ = object.__hash__


TRANSITIONS: dict[UnitState, frozenset[UnitState]] = {
    UnitState.NEW: frozenset({UnitState.ACTIVE}),
    UnitState.ACTIVE: frozenset({UnitState.ENDED, UnitState.INVALIDATED}),
    UnitState.INVALIDATED: frozenset({UnitState.ENDED}),
    UnitState.ENDED: frozenset(),
}
"""The whole life of a unit: NEW -> ACTIVE -> ENDED, or ACTIVE -> INVALIDATED -> ENDED.

Every change of a unit's state goes through ``UnitFields._move_to``, which checks it here."""


class UnitKind(enum.Enum):
    """What entering a unit turned out to do, decided by its propagation and the active unit."""

    OUTERMOST = "outermost"
    """Owns a session and its transaction: commits or rolls back at the end."""

    SAVEPOINT = "savepoint"
    """Owns a SAVEPOINT in the active unit's transaction: releases or rolls back to it."""

    JOINED = "joined"
    """Shares the active unit's transaction: a failure dooms it, success changes nothing."""

    NONE = "none"
    """Runs with no transaction at all (SUPPORTS with nothing to join, NOT_SUPPORTED, NEVER)."""


class Outcome(enum.Enum):
    """How a unit ended, decided once when it ends."""

    COMMITTED = "committed"
    """An outermost read-write unit whose COMMIT succeeded (or that had nothing to send)."""
    READ_ONLY = "read_only"
    """An outermost read-only unit that ended normally: ROLLBACK, with nothing to write."""
    ROLLED_BACK = "rolled_back"
    """Ended with ROLLBACK (or, joined, dooming its transaction) because of an error,
    ``set_rollback()``, an out-of-order exit or a safety net."""
    DOOMED = "doomed"
    """Was leaving normally, but its transaction could not commit: ``UnexpectedRollback``."""
    OUTCOME_UNKNOWN = "outcome_unknown"
    """The connection was lost while COMMIT was on its way: ``CommitOutcomeUnknown``."""
    RELEASED = "released"
    """A savepoint released: its work is now part of the enclosing transaction."""
    JOINED = "joined"
    """A joined unit left normally: the transaction it joined decides."""
    NO_TRANSACTION = "no_transaction"
    """A unit that ran with no transaction ended."""

    # Identity hashing, as UnitState's: the counters look each outcome up once per unit.
    __hash__ = object.__hash__


# Python 3.11's EnumType defines __getattr__, which turns every ``UnitState.ACTIVE`` into a
# slow attribute lookup (about 70 ns; Python 3.12 dropped it). A unit compares its state
# and kind several times on the way in and out, so the code that drives units reads these
# module constants instead.
STATE_NEW = UnitState.NEW
STATE_ACTIVE = UnitState.ACTIVE
STATE_INVALIDATED = UnitState.INVALIDATED
STATE_ENDED = UnitState.ENDED
KIND_OUTERMOST = UnitKind.OUTERMOST
KIND_SAVEPOINT = UnitKind.SAVEPOINT
KIND_JOINED = UnitKind.JOINED
KIND_NONE = UnitKind.NONE
OUTCOME_COMMITTED = Outcome.COMMITTED
OUTCOME_READ_ONLY = Outcome.READ_ONLY
OUTCOME_ROLLED_BACK = Outcome.ROLLED_BACK
OUTCOME_DOOMED = Outcome.DOOMED
OUTCOME_UNKNOWN = Outcome.OUTCOME_UNKNOWN
OUTCOME_RELEASED = Outcome.RELEASED
OUTCOME_JOINED = Outcome.JOINED
OUTCOME_NO_TRANSACTION = Outcome.NO_TRANSACTION
