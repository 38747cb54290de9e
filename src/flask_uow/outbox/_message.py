"""A message of the outbox: what a unit asked to run after it commits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Message:
    """One message, as a publisher receives it.

    ``id`` is the UUID ``enqueue`` returned (the Celery task id too); ``task`` the task's
    name; ``args`` and ``kwargs`` its JSON arguments; ``key`` orders the messages that share
    it (None: no order); ``queue`` and ``countdown`` are passed on to Celery; ``headers``
    carries the trace context of the unit that enqueued it.
    """

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    key: str | None = None
    queue: str | None = None
    countdown: float | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    enqueued_at: float = 0.0
    """``time.time()`` at ``enqueue`` (at COMMIT for messages a relay read back)."""


def task_name(task: object) -> str:
    """The name of ``task``: a Celery task's ``name``, a function's ``module.qualname``
    (the name Celery gives it), or the string itself."""
    if isinstance(task, str):
        if not task:
            raise ValueError("enqueue() got an empty task name; pass a task or its full name.")
        return task
    name = getattr(task, "name", None)
    if isinstance(name, str) and name:
        return name
    if callable(task) and hasattr(task, "__qualname__"):  # Celery's default name for it
        return f"{task.__module__}.{task.__qualname__}"
    raise TypeError(
        f"enqueue() takes a Celery task, a function or a task name, and got {task!r}. "
        "Decorate the function with @celery_app.task, or pass its registered name."
    )


def checked_arguments(
    args: Sequence[Any], kwargs: Mapping[str, Any] | None
) -> tuple[list[Any], dict[str, Any]]:
    """``args`` and ``kwargs`` as JSON types, refused at the call when they are not JSON."""
    arguments = (list(args), dict(kwargs or {}))
    try:
        json.dumps(arguments)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Outbox messages are stored as JSON, and these arguments are not: {error}. Pass "
            "ids, strings and numbers (the task loads what it needs), not ORM objects."
        ) from None
    return arguments
