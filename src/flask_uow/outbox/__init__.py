"""The transactional outbox: messages written in a unit's transaction, delivered after COMMIT.

See docs/outbox.md. ``db.outbox`` is this Database's ``Outbox``; ``db.enqueue`` its
shortcut. Nothing here imports Celery, click or Flask. Each name below is loaded on first
use: a Database adds the outbox tables to its metadata (``_tables``) without loading the
rest of the outbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._message import Message
    from ._outbox import Outbox
    from ._store import OutboxStatus

_EXPORTS = {"Message": "._message", "Outbox": "._outbox", "OutboxStatus": "._store"}

__all__ = ["Message", "Outbox", "OutboxStatus"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
