"""What ending a unit does, decided in one place: a pure function of the unit's facts.

``decide_ending`` says, for a unit of a given kind leaving in a given way, which SQL ends
it, which outcome it records, which hooks run and what is raised. The unit carries that
out (``_unit.py``); when COMMIT or RELEASE fails, the unit asks again with the failure as
one more fact. Every row is listed by ``tests/test_ending_table.py``, and the guide's table
"One unit, start to end" is checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._lifecycle import (
    KIND_JOINED,
    KIND_NONE,
    KIND_OUTERMOST,
    KIND_SAVEPOINT,
    OUTCOME_COMMITTED,
    OUTCOME_DOOMED,
    OUTCOME_JOINED,
    OUTCOME_NO_TRANSACTION,
    OUTCOME_READ_ONLY,
    OUTCOME_RELEASED,
    OUTCOME_ROLLED_BACK,
    OUTCOME_UNKNOWN,
    Outcome,
    UnitKind,
)

# -- what is sent ------------------------------------------------------------------------------
SEND_NOTHING = "nothing"
SEND_COMMIT = "COMMIT"
SEND_ROLLBACK = "ROLLBACK"
SEND_CLOSE = "close"
"""A read-only unit ends its transaction by closing its session (a ROLLBACK; psycopg COMMITs)."""
SEND_RELEASE = "RELEASE SAVEPOINT"
SEND_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT"
SEND_DOOM = "doom"
"""A joined unit sends nothing; it marks the transaction it joined to roll back."""

# -- which hooks run ---------------------------------------------------------------------------
HOOKS_NONE = "none"
HOOKS_COMMIT = "on_commit"
HOOKS_ROLLBACK = "on_rollback"
HOOKS_UNKNOWN = "on_outcome_unknown"
HOOKS_HELD = "held for the retry"
HOOKS_HANDED_OVER = "handed to the enclosing unit"
HOOKS_DISCARDED = "discarded"

# -- what is raised ----------------------------------------------------------------------------
RAISE_NOTHING = "nothing"
RAISE_EXCEPTION = "the exception"
RAISE_FAILURE = "the error of COMMIT or RELEASE"
RAISE_DOOMED = "UnexpectedRollback, doomed"
RAISE_ABORTED = "UnexpectedRollback, aborted"
RAISE_UNKNOWN = "CommitOutcomeUnknown"
RAISE_INTERRUPTION = "the interruption"

# -- how COMMIT (or RELEASE) failed ------------------------------------------------------------
FAILED_REFUSED = "refused"
"""It failed before COMMIT was sent (a flush), or the database answered it by rolling back
(a serialization failure, a deferred constraint, a session it had ended first)."""
FAILED_LOST = "lost"
"""The connection was lost once COMMIT was sent: nobody knows whether it committed."""
FAILED_INTERRUPTED = "interrupted"
"""A KeyboardInterrupt, a cancellation or another error struck once COMMIT was sent."""


@dataclass(frozen=True, slots=True)
class Ending:
    """What ending a unit does: the SQL it sends, the outcome, the hooks, what it raises."""

    send: str
    outcome: Outcome
    hooks: str
    raises: str
    quiet: bool = field(init=False, compare=False)
    """Sends nothing, runs no hook but on_commit, raises nothing of its own: the unit only
    records its outcome (the fast path of empty and joined units)."""

    def __post_init__(self) -> None:
        quiet = (
            self.send == SEND_NOTHING
            and self.hooks in (HOOKS_COMMIT, HOOKS_NONE)
            and self.raises in (RAISE_NOTHING, RAISE_EXCEPTION)
        )
        object.__setattr__(self, "quiet", quiet)


def decide_ending(
    kind: UnitKind | None,
    *,
    failed: bool,
    rollback_requested: bool,
    doomed: bool,
    read_only: bool = False,
    session_opened: bool = True,
    aborted: bool = False,
    commit_failure: str | None = None,
    retry_pending: bool = False,
) -> Ending:
    """How a unit of ``kind`` ends, from the facts of its end.

    ``failed``: its block raised. ``rollback_requested``: ``set_rollback()`` was called on
    it. ``doomed``: a joined unit failed in its transaction (a joined unit: in the one it
    joined). ``aborted``: its transaction (or savepoint) can no longer commit although no
    error reached it. ``commit_failure``: how its COMMIT (a savepoint's RELEASE) failed, or
    None before it was sent. ``retry_pending``: ``@db.transactional(retries=)`` will run it
    again, so its hooks wait. The outcome of a COMMIT row holds if COMMIT succeeds.
    """
    if kind is KIND_OUTERMOST:  # the most common kind, decided without a further call
        if failed or rollback_requested:
            if not failed:
                return (
                    OUTERMOST_ROLLBACK_REQUESTED if session_opened else OUTERMOST_ROLLBACK_UNTOUCHED
                )
            if retry_pending:
                return (
                    OUTERMOST_FAILED_RETRIED
                    if session_opened
                    else OUTERMOST_FAILED_UNTOUCHED_RETRIED
                )
            return OUTERMOST_FAILED if session_opened else OUTERMOST_FAILED_UNTOUCHED
        if doomed:
            return OUTERMOST_DOOMED if session_opened else OUTERMOST_DOOMED_UNTOUCHED
        if not session_opened:
            return OUTERMOST_EMPTY_READ_ONLY if read_only else OUTERMOST_EMPTY
        if read_only:
            return OUTERMOST_READ_ONLY if commit_failure is None else OUTERMOST_READ_ONLY_FAILED
        if aborted:
            return OUTERMOST_ABORTED
        if commit_failure is None:
            return OUTERMOST_COMMIT
        if commit_failure == FAILED_LOST:
            return OUTERMOST_COMMIT_LOST
        if commit_failure == FAILED_INTERRUPTED:
            return OUTERMOST_COMMIT_INTERRUPTED
        return OUTERMOST_COMMIT_REFUSED_RETRIED if retry_pending else OUTERMOST_COMMIT_REFUSED
    if kind is KIND_SAVEPOINT:
        return _savepoint(failed, rollback_requested, doomed, aborted, commit_failure)
    if kind is KIND_JOINED:
        if failed:
            return JOINED_FAILED
        if rollback_requested:
            return JOINED_ROLLBACK_REQUESTED
        return JOINED_DOOMED if doomed else JOINED_LEFT
    return NONE_FAILED if failed else NONE_LEFT


def _savepoint(
    failed: bool,
    rollback_requested: bool,
    doomed: bool,
    aborted: bool,
    commit_failure: str | None,
) -> Ending:
    if failed:
        return SAVEPOINT_FAILED
    if rollback_requested:
        return SAVEPOINT_ROLLBACK_REQUESTED
    if doomed:
        return SAVEPOINT_DOOMED
    if aborted:
        return SAVEPOINT_ABORTED
    return SAVEPOINT_RELEASED if commit_failure is None else SAVEPOINT_RELEASE_FAILED


_ = Ending
OUTERMOST_COMMIT = _(SEND_COMMIT, OUTCOME_COMMITTED, HOOKS_COMMIT, RAISE_NOTHING)
OUTERMOST_EMPTY = _(SEND_NOTHING, OUTCOME_COMMITTED, HOOKS_COMMIT, RAISE_NOTHING)
OUTERMOST_EMPTY_READ_ONLY = _(SEND_NOTHING, OUTCOME_READ_ONLY, HOOKS_COMMIT, RAISE_NOTHING)
OUTERMOST_READ_ONLY = _(SEND_CLOSE, OUTCOME_READ_ONLY, HOOKS_COMMIT, RAISE_NOTHING)
OUTERMOST_READ_ONLY_FAILED = _(SEND_ROLLBACK, OUTCOME_ROLLED_BACK, HOOKS_ROLLBACK, RAISE_FAILURE)
OUTERMOST_ABORTED = _(SEND_ROLLBACK, OUTCOME_DOOMED, HOOKS_ROLLBACK, RAISE_ABORTED)
OUTERMOST_DOOMED = _(SEND_ROLLBACK, OUTCOME_DOOMED, HOOKS_ROLLBACK, RAISE_DOOMED)
OUTERMOST_DOOMED_UNTOUCHED = _(SEND_NOTHING, OUTCOME_DOOMED, HOOKS_ROLLBACK, RAISE_DOOMED)
OUTERMOST_FAILED = _(SEND_ROLLBACK, OUTCOME_ROLLED_BACK, HOOKS_ROLLBACK, RAISE_EXCEPTION)
OUTERMOST_FAILED_RETRIED = _(SEND_ROLLBACK, OUTCOME_ROLLED_BACK, HOOKS_HELD, RAISE_EXCEPTION)
OUTERMOST_FAILED_UNTOUCHED = _(SEND_NOTHING, OUTCOME_ROLLED_BACK, HOOKS_ROLLBACK, RAISE_EXCEPTION)
OUTERMOST_FAILED_UNTOUCHED_RETRIED = _(
    SEND_NOTHING, OUTCOME_ROLLED_BACK, HOOKS_HELD, RAISE_EXCEPTION
)
OUTERMOST_ROLLBACK_REQUESTED = _(SEND_ROLLBACK, OUTCOME_ROLLED_BACK, HOOKS_ROLLBACK, RAISE_NOTHING)
OUTERMOST_ROLLBACK_UNTOUCHED = _(SEND_NOTHING, OUTCOME_ROLLED_BACK, HOOKS_ROLLBACK, RAISE_NOTHING)
OUTERMOST_COMMIT_REFUSED = _(SEND_ROLLBACK, OUTCOME_ROLLED_BACK, HOOKS_ROLLBACK, RAISE_FAILURE)
OUTERMOST_COMMIT_REFUSED_RETRIED = _(SEND_ROLLBACK, OUTCOME_ROLLED_BACK, HOOKS_HELD, RAISE_FAILURE)
OUTERMOST_COMMIT_LOST = _(SEND_ROLLBACK, OUTCOME_UNKNOWN, HOOKS_UNKNOWN, RAISE_UNKNOWN)
OUTERMOST_COMMIT_INTERRUPTED = _(SEND_ROLLBACK, OUTCOME_UNKNOWN, HOOKS_UNKNOWN, RAISE_INTERRUPTION)
SAVEPOINT_RELEASED = _(SEND_RELEASE, OUTCOME_RELEASED, HOOKS_HANDED_OVER, RAISE_NOTHING)
SAVEPOINT_RELEASE_FAILED = _(SEND_ROLLBACK_TO, OUTCOME_ROLLED_BACK, HOOKS_DISCARDED, RAISE_FAILURE)
SAVEPOINT_ABORTED = _(SEND_ROLLBACK_TO, OUTCOME_DOOMED, HOOKS_DISCARDED, RAISE_ABORTED)
SAVEPOINT_DOOMED = _(SEND_ROLLBACK_TO, OUTCOME_DOOMED, HOOKS_DISCARDED, RAISE_DOOMED)
SAVEPOINT_FAILED = _(SEND_ROLLBACK_TO, OUTCOME_ROLLED_BACK, HOOKS_DISCARDED, RAISE_EXCEPTION)
SAVEPOINT_ROLLBACK_REQUESTED = _(
    SEND_ROLLBACK_TO, OUTCOME_ROLLED_BACK, HOOKS_DISCARDED, RAISE_NOTHING
)
JOINED_LEFT = _(SEND_NOTHING, OUTCOME_JOINED, HOOKS_NONE, RAISE_NOTHING)
JOINED_DOOMED = _(SEND_NOTHING, OUTCOME_ROLLED_BACK, HOOKS_NONE, RAISE_NOTHING)
JOINED_FAILED = _(SEND_DOOM, OUTCOME_ROLLED_BACK, HOOKS_NONE, RAISE_EXCEPTION)
JOINED_ROLLBACK_REQUESTED = _(SEND_DOOM, OUTCOME_ROLLED_BACK, HOOKS_NONE, RAISE_NOTHING)
NONE_LEFT = _(SEND_NOTHING, OUTCOME_NO_TRANSACTION, HOOKS_NONE, RAISE_NOTHING)
NONE_FAILED = _(SEND_NOTHING, OUTCOME_NO_TRANSACTION, HOOKS_NONE, RAISE_EXCEPTION)
del _


def _table(kind: UnitKind) -> tuple[Ending, ...]:
    """``decide_ending`` for every first decision of a unit of ``kind``, by facts bitmask."""
    return tuple(
        decide_ending(
            kind,
            failed=bool(mask & FAILED),
            rollback_requested=bool(mask & ROLLBACK_REQUESTED),
            doomed=bool(mask & DOOMED),
            read_only=bool(mask & READ_ONLY),
            session_opened=bool(mask & SESSION_OPENED),
        )
        for mask in range(32)
    )


FAILED, ROLLBACK_REQUESTED, DOOMED, READ_ONLY, SESSION_OPENED = 1, 2, 4, 8, 16
"""The bits of the facts a unit knows when it starts to end (before COMMIT or RELEASE)."""

OUTERMOST_ENDINGS = _table(KIND_OUTERMOST)
SAVEPOINT_ENDINGS = _table(KIND_SAVEPOINT)
JOINED_ENDINGS = _table(KIND_JOINED)
NONE_ENDINGS = _table(KIND_NONE)
"""``decide_ending``'s answers, computed once: a unit ending looks its first decision up
here by kind and facts bitmask, which costs no call (the hot path of every unit)."""

