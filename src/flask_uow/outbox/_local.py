"""Running messages in this process: the eager mode of tests and the broker-less default."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._message import Message
from ._targets import Failures

if TYPE_CHECKING:
    from .._database import Database


class LocalTarget:
    """Runs each message's task in this process, in order, once its unit has committed.

    A task is found by name among ``tasks`` and among the task objects ``enqueue`` was
    given. A Celery task runs with ``apply`` and the message id as its task id (so a
    ``UnitTask`` records it in its inbox); a plain function is called in a unit of work of
    ``db`` (commits when it returns; no inbox, so it may run twice after a crash between
    its COMMIT and the outbox row's marking). A task that raises
    counts as a failed delivery: retried with backoff, parked after ``max_attempts``.
    """

    def __init__(self, db: Database, tasks: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.db = db
        self.tasks: dict[str, Callable[..., Any]] = dict(tasks or {})

    def learn(self, name: str, task: object) -> None:
        """Remember the task object ``enqueue`` got, to run it by name later."""
        if callable(task) and name not in self.tasks:
            self.tasks[name] = task

    def __call__(self, messages: list[Message]) -> Failures:
        failures: Failures = []
        for message in messages:
            task = self.tasks.get(message.task)
            try:
                if task is None:
                    raise LookupError(
                        f"No task named {message.task!r} is known in this process: pass the "
                        "task object to enqueue(), or list it in publish_locally(tasks={...})."
                    )
                apply = getattr(task, "apply", None)
                if apply is not None:
                    apply(args=message.args, kwargs=message.kwargs, task_id=message.id).get()
                else:
                    with self.db.unit_of_work():
                        task(*message.args, **message.kwargs)
            except Exception as error:
                failures.append((message, error))
        return failures

    def __repr__(self) -> str:
        return f"<run locally: {sorted(self.tasks)}>"
