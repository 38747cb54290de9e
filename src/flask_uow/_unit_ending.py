"""Ending a unit of work: carrying out what ``decide_ending`` decides, in one place."""

from __future__ import annotations

from threading import get_ident
from types import TracebackType
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ._ending import (
    FAILED_INTERRUPTED,
    FAILED_LOST,
    FAILED_REFUSED,
    HOOKS_COMMIT,
    HOOKS_HANDED_OVER,
    HOOKS_HELD,
    HOOKS_ROLLBACK,
    HOOKS_UNKNOWN,
    JOINED_ENDINGS,
    NONE_ENDINGS,
    OUTERMOST_ENDINGS,
    RAISE_ABORTED,
    RAISE_DOOMED,
    RAISE_FAILURE,
    RAISE_INTERRUPTION,
    RAISE_UNKNOWN,
    SAVEPOINT_ENDINGS,
    SEND_CLOSE,
    SEND_COMMIT,
    SEND_DOOM,
    SEND_RELEASE,
    SEND_ROLLBACK,
    SEND_ROLLBACK_TO,
    decide_ending,
)
from ._errors import (
    CommitOutcomeUnknown,
    UnitOfWorkError,
)
from ._hooks import run_hooks
from ._lifecycle import (
    KIND_JOINED,
    KIND_OUTERMOST,
    KIND_SAVEPOINT,
    OUTCOME_ROLLED_BACK,
    OUTCOME_UNKNOWN,
    STATE_ACTIVE,
    STATE_ENDED,
    STATE_INVALIDATED,
    Outcome,
)
from ._retry import ended_before_commit
from ._session import (
    UnitSession,
    failed_in_commit,
    transaction_aborted,
)
from ._unit_messages import OTHER_THREAD_ENDS, UnitMessages

if TYPE_CHECKING:
    from ._unit import UnitOfWork


class UnitEnding(UnitMessages):
    """The ending half of ``UnitOfWork``: sends COMMIT or ROLLBACK, runs hooks, leaves the stack."""

    __slots__ = ()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        state = self._state
        if state is not STATE_ACTIVE:
            if state is STATE_INVALIDATED:
                error = UnitOfWorkError(self._not_active("it cannot commit anything"))
                self._move_to(STATE_ENDED)
                raise error
            raise UnitOfWorkError(f"This unit of work is {state.value}; it cannot end again.")
        if self._tx.thread != get_ident():
            raise UnitOfWorkError(f"{OTHER_THREAD_ENDS} (opened at {self.opened_at})")
        stack = self._runtime.units.get()
        if stack and stack[-1] is not self:
            above = self._units_above()
            if above:
                self._end_out_of_order(exc, above)
        # Units inside a transaction run under its timeouts, and report them as such.
        timeouts = self._tx.timeouts
        if timeouts is None:
            self._end(exc)
            return
        try:
            self._end(exc)
        except Exception as error:
            timeout = timeouts.error_for(error, self.opened_at)
            if timeout is None:
                raise
            raise timeout from error
        if exc is not None:
            timeout = timeouts.error_for(exc, self.opened_at)
            if timeout is not None:
                raise timeout from exc

    def _end_out_of_order(
        self, exc: BaseException | None, above: list[UnitOfWork]
    ) -> None:
        """Invalidate the units entered after this one, end this one as failed (ROLLBACK, its
        on_rollback hooks) and raise UnitOfWorkError saying units must end in reverse order."""
        for unit in reversed(above):
            unit._invalidate(self)  # type: ignore[arg-type]
        opened = "; ".join(str(unit.opened_at) for unit in above)
        error = UnitOfWorkError(
            f"The unit of work opened at {self.opened_at} ended while units of work entered "
            f"after it were still active (opened at {opened}). Those were invalidated and this "
            "unit's work was rolled back. End units in the reverse order of entering them: a "
            "unit held open across a 'yield' must end before the code around the generator "
            "ends its own unit (exhaust or close the generator first)."
        )
        self._end(error)
        raise error from exc

    def _invalidate(self, ended_first: UnitOfWork) -> None:
        """Make this unit unusable because ``ended_first`` ended before it: an outermost one
        sends ROLLBACK, closes and runs its on_rollback hooks; it raises when ended later."""
        self._invalidated_by = ended_first
        self._move_to(STATE_INVALIDATED)
        self._outcome = OUTCOME_ROLLED_BACK
        runtime = self._runtime
        record = self._tx
        if self._kind is KIND_OUTERMOST:
            record.roll_back_and_close()
            next(runtime.counters.rolled_back)
        for observer in runtime.observers:
            observer.unit_ended(self)  # type: ignore[arg-type]
        if self._kind is KIND_OUTERMOST:
            run_hooks(record.rollback_hooks, "on_rollback")

    def _end(self, exc: BaseException | None) -> None:
        """End this unit as ``decide_ending`` says: the one place every unit ends.

        Sends COMMIT, ROLLBACK (a read-only unit: closes its session), RELEASE or ROLLBACK TO
        SAVEPOINT, or dooms the joined transaction; records the outcome; runs the on_commit,
        on_rollback or on_outcome_unknown hooks (or holds them for a retry, or hands a
        savepoint's to its enclosing unit); raises what the ending says. When COMMIT, RELEASE
        or a read-only unit's last flush fails, that failure is one more fact: decided again.
        """
        kind = self._kind
        record = self._tx  # a joined unit's is the record of the unit it joined
        session = record.session
        # The facts, as the bits FAILED, ROLLBACK_REQUESTED, DOOMED, READ_ONLY, SESSION_OPENED
        # (1, 2, 4, 8, 16) of _ending.
        facts = self.read_only << 3
        if exc is not None:
            facts |= 1
        if self._rollback_requested:
            facts |= 2
        if record.doomed_by is not None:
            facts |= 4
        if session is not None:
            facts |= 16
        if kind is KIND_OUTERMOST:
            ending = OUTERMOST_ENDINGS[facts]
        elif kind is KIND_JOINED:
            ending = JOINED_ENDINGS[facts]
        elif kind is KIND_SAVEPOINT:
            ending = SAVEPOINT_ENDINGS[facts]
        else:
            ending = NONE_ENDINGS[facts]
        if ending.quiet:  # nothing to send, nothing of its own to raise
            self._record_end(ending.outcome)
            if ending.hooks is HOOKS_COMMIT and record.commit_hooks:
                run_hooks(record.commit_hooks, "on_commit")
            return
        send = ending.send
        failure: BaseException | None = None
        if send is SEND_COMMIT:
            assert session is not None
            engines = record.engines
            server_check = engines is None or engines.aborts_on_error
            if transaction_aborted(session, server_check=server_check):
                ending = decide_ending(
                    kind, failed=False, rollback_requested=False, doomed=False, aborted=True
                )
            else:
                try:
                    # COMMIT, with before_commit listeners and the last flush; a flush that
                    # fails in it sets the flag again (see UnitSession.flush). Written out
                    # here, not called: every unit's path counts its Python calls.
                    session.flask_uow_flushing = False
                    sa.orm.Session.commit(session)
                except BaseException as error:
                    failure = error
                    how = self._commit_failure(session, error)
                    ending = decide_ending(
                        kind,
                        failed=False,
                        rollback_requested=False,
                        doomed=False,
                        commit_failure=how,
                        retry_pending=how is FAILED_REFUSED and self.will_retry(error),
                    )
        elif send is SEND_CLOSE:
            assert session is not None
            try:
                session.flush()  # pending changes fail here with ReadOnlyViolation, not dropped
            except BaseException as error:
                failure = error
                ending = decide_ending(
                    kind,
                    failed=False,
                    rollback_requested=False,
                    doomed=False,
                    read_only=True,
                    commit_failure=FAILED_REFUSED,
                )
        elif send is SEND_RELEASE:
            savepoint = record.savepoint
            assert savepoint is not None and session is not None
            engines = record.engines
            server_check = engines is None or engines.aborts_on_error
            if not savepoint.is_active or transaction_aborted(session, server_check=server_check):
                ending = decide_ending(
                    kind, failed=False, rollback_requested=False, doomed=False, aborted=True
                )
            else:
                try:
                    savepoint.commit()
                except BaseException as error:
                    failure = error
                    ending = decide_ending(
                        kind,
                        failed=False,
                        rollback_requested=False,
                        doomed=False,
                        commit_failure=FAILED_REFUSED,
                    )
        elif exc is not None and ending.hooks is HOOKS_ROLLBACK and self.will_retry(exc):
            ending = decide_ending(
                kind,
                failed=True,
                rollback_requested=bool(facts & 2),
                doomed=bool(facts & 4),
                session_opened=session is not None,
                retry_pending=True,
            )

        # -- carry the ending out ---------------------------------------------------------
        send = ending.send
        interrupted: BaseException | None = None
        try:
            if send is SEND_COMMIT or send is SEND_CLOSE:
                record.close_session()
            elif send is SEND_ROLLBACK:
                record.roll_back_and_close()
            elif send is SEND_ROLLBACK_TO:
                record.roll_back_savepoint()
        except BaseException as error:
            # A cancellation or KeyboardInterrupt while ROLLBACK (TO) or the close was on its
            # way (asyncio.run() shutting down cancels the task ending the unit): the outcome
            # stands (COMMIT was not sent, or answered), so the unit still ends with it and
            # runs its hooks; then the interruption goes on.
            interrupted = error
        if send is SEND_DOOM:
            record.doom(
                exc
                if exc is not None
                else f"{DOOMED_BY_SET_ROLLBACK} ({self.opened_at or 'opened at an unknown place'})"
            )
        raises = ending.raises
        raised: BaseException | None = None
        if raises is RAISE_DOOMED:
            raised = self._unexpected_rollback()
        elif raises is RAISE_ABORTED:
            raised = self._aborted()
        elif raises is RAISE_UNKNOWN:
            assert session is not None  # Session.close() keeps its info
            message_ids = tuple(session.info.get(OUTBOX_IDS, ()))
            raised = CommitOutcomeUnknown(COMMIT_OUTCOME_UNKNOWN, message_ids=message_ids)
            raised.__cause__ = failure
        outcome = ending.outcome
        if failure is None:
            self._record_end(outcome)
        else:
            self._record_end_failed(outcome, failure)
        replicas = record.replicas
        if replicas is not None and kind is KIND_OUTERMOST:
            engine = record.engines.engine  # type: ignore[union-attr]  # replicas come with them
            if send is SEND_COMMIT:
                replicas.note_commit(engine)  # the causal position, if it wrote
            elif outcome is OUTCOME_UNKNOWN:
                replicas.note_outcome_unknown(engine)  # reads go to the primary
        hooks = ending.hooks
        if hooks is HOOKS_COMMIT:
            if record.commit_hooks:
                run_hooks(record.commit_hooks, "on_commit")
        elif hooks is HOOKS_ROLLBACK:
            run_hooks(record.rollback_hooks, "on_rollback")
        elif hooks is HOOKS_UNKNOWN:
            run_hooks(record.unknown_hooks, "on_outcome_unknown")
        elif hooks is HOOKS_HELD:
            self._extras_made().rollback_hooks_held = True
        elif hooks is HOOKS_HANDED_OVER:
            if record.commit_hooks or record.rollback_hooks or record.unknown_hooks:
                record.hand_hooks_to_enclosing()
        if interrupted is not None:
            raise interrupted
        if raised is not None:
            raise raised
        if raises is RAISE_FAILURE or raises is RAISE_INTERRUPTION:
            assert failure is not None
            raise failure

    def _commit_failure(self, session: UnitSession, error: BaseException) -> str:
        """How COMMIT failed: refused (rolled back), lost (unknown) or interrupted (unknown)."""
        if not failed_in_commit(session, error):
            return FAILED_REFUSED  # a flush or a before_commit listener: COMMIT was never sent
        self._extras_made().failed_during_commit = True
        if not isinstance(error, sa.exc.DBAPIError):
            return FAILED_INTERRUPTED
        if error.connection_invalidated and not ended_before_commit(error):
            return FAILED_LOST
        return FAILED_REFUSED

    def _record_end_failed(self, outcome: Outcome, failure: BaseException) -> None:
        """``_record_end`` while ``failure`` (COMMIT's, RELEASE's or a flush's) is the exception
        being handled, as it is for an error leaving the ``with`` block: observers
        (OpenTelemetry) read what ended the unit from ``sys.exception()``. Sends nothing."""
        traceback = failure.__traceback__
        try:
            raise failure
        except BaseException:
            self._record_end(outcome)
        finally:
            failure.__traceback__ = traceback  # as it was: the caller raises it again

    def _record_end(self, outcome: Outcome) -> None:
        """Record the outcome and the ENDED state, leave the ambient stack, count and tell
        observers: once per unit. Sends nothing and runs no hooks."""
        self._outcome = outcome
        kind = self._kind
        if self._tx.doomed_by is not None and (kind is KIND_OUTERMOST or kind is KIND_SAVEPOINT):
            self._tx.keep_doom_reason_only()  # it owns its record
        self._move_to(STATE_ENDED)
        runtime = self._runtime
        # Leave the ambient stack: restore what this unit's entry replaced (with the units
        # entered after it, if they were invalidated).
        units = runtime.units
        stack = units.get()
        if self in stack:
            try:
                units.reset(self._token)
            except (ValueError, RuntimeError):
                # Entered in another context (a copy): this one only forgets it.
                units.set(stack[: stack.index(self)])
        # Elsewhere (a context copied while it was active) it stays listed, ended: ignored.
        if kind is KIND_OUTERMOST:
            next(runtime.counters.ended[outcome])
        if runtime.observers:
            for observer in runtime.observers:
                observer.unit_ended(self)  # type: ignore[arg-type]

    def _units_above(self) -> list[UnitOfWork]:
        """Units entered after this one in this context that are still active."""
        stack = self._runtime.units.get()
        if self not in stack:
            return []
        return [unit for unit in stack[stack.index(self) + 1 :] if unit._state is STATE_ACTIVE]


OUTBOX_IDS = "flask_uow_outbox_ids"
"""The key of ``session.info`` where the outbox lists the ids of the messages it enqueued."""

DOOMED_BY_SET_ROLLBACK = "set_rollback() was called in a joined unit"

COMMIT_OUTCOME_UNKNOWN = (
    "The connection to the database was lost while COMMIT was on its way, so nobody knows "
    "whether the transaction committed. It is not retried. Check whether the work is there "
    "before doing it again, or make it idempotent (an idempotency key); on_outcome_unknown "
    "hooks ran, and neither on_commit nor on_rollback hooks did."
)
