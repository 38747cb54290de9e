"""How a new unit of work relates to the one already active."""

from __future__ import annotations

import enum


class Propagation(enum.Enum):
    """What entering a unit of work does when another unit is already active in this thread."""

    REQUIRED = "required"
    """Join the active unit (same session, same transaction), or start a new one."""

    NESTED = "nested"
    """Inside an active unit, open a SAVEPOINT that can fail alone; otherwise like REQUIRED."""

    REQUIRES_NEW = "requires_new"
    """Always start a new session on its own connection, committed or rolled back on its own."""

    MANDATORY = "mandatory"
    """Join the active unit, or raise ``NoActiveUnitOfWork`` when there is none."""

    SUPPORTS = "supports"
    """Join the active unit if there is one; otherwise run with no unit (``db.session`` raises)."""

    NOT_SUPPORTED = "not_supported"
    """Suspend the active unit for the duration: the code inside runs with no unit at all."""

    NEVER = "never"
    """Run with no unit, and raise ``UnitOfWorkError`` if a unit is active."""


# Module constants for the hot path: see the note at the end of _lifecycle.py.
PROPAGATION_REQUIRED = Propagation.REQUIRED
PROPAGATION_NESTED = Propagation.NESTED
PROPAGATION_REQUIRES_NEW = Propagation.REQUIRES_NEW
PROPAGATION_MANDATORY = Propagation.MANDATORY
PROPAGATION_SUPPORTS = Propagation.SUPPORTS
PROPAGATION_NOT_SUPPORTED = Propagation.NOT_SUPPORTED
PROPAGATION_NEVER = Propagation.NEVER
