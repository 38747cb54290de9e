"""What units of work say when they refuse something or roll back: each message names the fix."""

from __future__ import annotations

from ._errors import (
    DoomReason,
    UnexpectedRollback,
)
from ._lifecycle import (
    KIND_SAVEPOINT,
    STATE_INVALIDATED,
)
from ._unit_fields import UnitFields


class UnitMessages(UnitFields):
    """The messages of ``UnitOfWork`` that depend on the unit (its state, kind and origin)."""

    __slots__ = ()

    def _not_active(self, consequence: str) -> str:
        if self._state is STATE_INVALIDATED:
            where = self._invalidated_by.opened_at
            return (
                f"This unit of work was invalidated, and {consequence}: the unit opened at "
                f"{where}, entered before it, ended first and rolled back. End units in the "
                "reverse order of entering them."
            )
        return (
            f"This unit of work is {self._state.value}, and {consequence}: use it inside its "
            "'with' block or decorated function, or open a new unit to run more queries."
        )

    def _no_transaction_message(self) -> str:
        return (
            f"Code running under propagation={self.propagation.name} has no unit of work, so "
            "there is no session to use. Open one for the work that needs the database "
            "(db.unit_of_work() or @db.transactional), or use another propagation."
        )

    def _unexpected_rollback(self) -> UnexpectedRollback:
        cause = self._tx.doomed_by
        where = "the savepoint" if self._kind is KIND_SAVEPOINT else "the transaction"
        if isinstance(cause, DoomReason):
            return UnexpectedRollback(
                f"{where.capitalize()} was rolled back, although this unit was leaving "
                f"normally: {cause}"
            )
        reason = cause if isinstance(cause, str) else f"a joined unit of work raised {cause!r}"
        error = UnexpectedRollback(
            f"{where.capitalize()} was rolled back because {reason}, although this unit was "
            "leaving normally. A failure inside a joined unit dooms the whole transaction, even "
            "when the caller catches it. Let the error propagate, or run the inner call with "
            "propagation=Propagation.NESTED so that its failure undoes only its own savepoint."
        )
        if isinstance(cause, BaseException):
            error.__cause__ = cause
        return error

    def _aborted(self) -> UnexpectedRollback:
        where = "savepoint" if self._kind is KIND_SAVEPOINT else "transaction"
        return UnexpectedRollback(
            f"The {where} was rolled back although this unit was leaving normally: a flush or "
            "a statement inside it failed and the error was caught, which leaves a "
            f"{where} that can no longer commit (PostgreSQL aborts it; SQLAlchemy needs a "
            "rollback). Run the statement that may fail in its own savepoint, "
            "'with db.unit_of_work(propagation=Propagation.NESTED):', and catch the error "
            "outside that block; or let the error propagate."
        )


OTHER_TASK = (
    "The active unit of work belongs to another asyncio task (this task was created inside "
    "it, with create_task, gather or a TaskGroup, and inherited its context), and tasks "
    "never share a session: they would interleave statements on one connection. Open a "
    "unit in this task with propagation=Propagation.REQUIRES_NEW (or @db.transactional("
    "propagation=Propagation.REQUIRES_NEW) on the coroutine the task runs), or await the "
    "work in the task that owns the unit instead of starting a task for it."
)

OTHER_THREAD_ENDS = (
    "This unit of work was entered in another thread, and only that thread can end it: "
    "its Session and connection belong there. It is still active; end it where it was "
    "entered (a 'with' block or @db.transactional does that on every path). Code running "
    "in another thread, or in a context copied from that thread, opens its own unit with "
    "propagation=Propagation.REQUIRES_NEW."
)

SYNC_IN_ASYNC = (
    "A synchronous unit of work (a 'with' block or a @db.transactional def) cannot run "
    "inside an async unit on the event loop's thread: it would block the loop and could not "
    "share the unit's AsyncSession. Make the service async ('async with db.unit_of_work()' "
    "or @db.transactional on an 'async def'), or run it in a worker thread with "
    "asyncio.to_thread and propagation=Propagation.REQUIRES_NEW."
)

ASYNC_IN_SYNC = (
    "An async unit of work cannot join the synchronous unit active in this thread: its "
    "Session is not an AsyncSession. Open the async unit with "
    "propagation=Propagation.REQUIRES_NEW, or run the async code after the sync unit ends."
)
