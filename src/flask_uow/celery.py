"""``UnitTask``: a Celery task base class whose body runs once per message, in a unit of work.

Only Celery workers (and apps that define Celery tasks) import this module; the core never
does. See docs/outbox.md.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import celery
import sqlalchemy as sa

from ._retry import is_transient
from .outbox._links import linked_database

if TYPE_CHECKING:
    from ._database import Database

__all__ = ["UnitTask"]


class _Duplicate(Exception):
    """Another worker recorded this message id first: roll back and skip."""


class UnitTask(celery.Task):  # type: ignore[misc]
    """Run the task body in a unit of work and record its message id in the inbox table.

    ``@celery_app.task(base=UnitTask)``: each run opens a unit of the Database linked by
    ``db.outbox.publish_with(celery_app)`` (or of ``database`` set on the class), INSERTs
    the task id into ``flask_uow_inbox`` in that same transaction, runs the body, and
    COMMITs. A message whose id is already in the inbox (a redelivery after a worker died
    or a relay published twice) is skipped: its effect happens once. The body's own
    ``db.session`` is the unit's session; ``db.enqueue`` in it chains tasks exactly once.

    A transient database error (deadlock, serialization failure, lost connection) rolls
    the unit back and retries the task through Celery's ``retry`` with exponential backoff
    and jitter, up to ``max_retries`` times. With Flask's ``celery_init_app`` pattern (a
    ``task_cls`` whose ``__call__`` pushes the app context), the unit runs inside that
    app context.
    """

    database: ClassVar[Database | None] = None
    """The Database to run in; None takes the one whose outbox publishes to this app."""
    retry_backoff_seconds: ClassVar[float] = 1.0
    retry_backoff_max_seconds: ClassVar[float] = 60.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outer = _app_task_call(self)
        if outer is None:
            return self.run_in_unit(args, kwargs)
        return outer(_RunInUnit(self), *args, **kwargs)

    def run_in_unit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the body once for this message id, in a unit: the inbox row commits with it."""
        db = self._database()
        message_id = getattr(self.request, "id", None)
        try:
            with db.unit_of_work():
                if message_id is not None and not _record(db, message_id, self.name):
                    return None
                return self.run(*args, **kwargs)
        except _Duplicate:
            return None
        except Exception as error:
            if not is_transient(error) or getattr(self.request, "called_directly", True):
                raise
            retries = int(getattr(self.request, "retries", 0) or 0)
            ceiling = min(self.retry_backoff_max_seconds, self.retry_backoff_seconds * 2**retries)
            raise self.retry(exc=error, countdown=random.uniform(0, ceiling)) from error

    def _database(self) -> Database:
        db = type(self).database or linked_database(self.app)
        if db is None:
            raise RuntimeError(
                f"The UnitTask {self.name!r} does not know which Database to run in. Call "
                "db.outbox.publish_with(celery_app) when the app starts (the worker too), or "
                "set 'database = db' on the task class."
            )
        return db


def _record(db: Database, message_id: str, task: str) -> bool:
    """INSERT the message id into the inbox; False when it was processed before."""
    inbox = db.outbox.tables.inbox
    session = db.session
    found = session.execute(sa.select(inbox.c.id).where(inbox.c.id == message_id)).first()
    if found is not None:
        return False
    try:
        session.execute(sa.insert(inbox).values(id=message_id, task=task, processed_at=time.time()))
    except sa.exc.IntegrityError as error:  # another worker's copy committed first
        raise _Duplicate(message_id) from error
    return True


class _RunInUnit:
    """The task as the app's own ``__call__`` sees it: ``run`` goes through the unit."""

    def __init__(self, task: UnitTask) -> None:
        self._task = task

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self._task.run_in_unit(args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


def _app_task_call(task: UnitTask) -> Callable[..., Any] | None:
    """The ``__call__`` of the app's own task class (Flask's pattern), if it has one."""
    app_task = getattr(task.app, "Task", None)
    if not isinstance(app_task, type) or issubclass(app_task, UnitTask):
        return None
    call = app_task.__call__
    if call is celery.Task.__call__:
        return None
    return call
