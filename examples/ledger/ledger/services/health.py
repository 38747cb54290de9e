"""Is the database there? Used by ``GET /health``."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from ..adapter import DBAdapter
from ..database import db

logger = logging.getLogger(__name__)
adapter = DBAdapter()


@db.transactional(read_only=True)
def _ping() -> None:
    adapter.ping()


def database_is_reachable() -> bool:
    """True if a read-only unit of work could run ``SELECT 1``; logs the reason if not."""
    try:
        _ping()
    except SQLAlchemyError as exc:
        logger.warning("database health check failed: %s", type(exc).__name__)
        return False
    return True
