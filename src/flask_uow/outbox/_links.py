"""Which Database a Celery app publishes for: ``UnitTask`` runs its body in a unit of it."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._database import Database

_DATABASES: weakref.WeakKeyDictionary[object, Database] = weakref.WeakKeyDictionary()


def link(app: object, db: Database) -> None:
    """Remember that ``app`` (a Celery app) delivers ``db``'s outbox."""
    _DATABASES[app] = db


def linked_database(app: object) -> Database | None:
    """The Database whose outbox ``publish_with(app)`` was called with, or None."""
    return _DATABASES.get(app)
