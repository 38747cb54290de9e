"""Test helpers for the outbox: list what units committed, run tasks eagerly."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._local import LocalTarget
from ._message import Message

if TYPE_CHECKING:
    from .._database import Database

__all__ = ["committed_messages", "eager_tasks"]


@contextmanager
def committed_messages(db: Database) -> Iterator[list[Message]]:
    """A list that fills with the messages of each unit that commits inside the block.

    A unit that rolls back, or a SAVEPOINT that does, adds nothing. Works under
    ``flask_uow.testing.isolated()``, where a unit's COMMIT releases a savepoint: what
    the list shows is what production would have committed.
    """
    messages: list[Message] = []
    stop = db.outbox.record(messages.extend)
    try:
        yield messages
    finally:
        stop()


@contextmanager
def eager_tasks(
    db: Database, tasks: Mapping[str, Callable[..., Any]] | None = None
) -> Iterator[None]:
    """Run each committed message's task in process right after its unit ends.

    Inside the block the outbox publishes with a ``LocalTarget`` (the tasks given to
    ``enqueue``, plus ``tasks`` by name); the previous target comes back at exit.
    """
    outbox = db.outbox
    previous, immediate = outbox.target, outbox.immediate
    outbox.publish_with(LocalTarget(db, tasks))
    try:
        yield
    finally:
        outbox.restore_target(previous, immediate)
