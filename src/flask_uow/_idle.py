"""The idle-in-transaction warning: a unit held its connection while doing something else.

An HTTP call, a slow template or a ``sleep`` inside a unit keeps a connection checked out
and a transaction open (with its locks) on the server, doing nothing. When a unit's
connection stays idle longer than the threshold between two statements, or between its
last statement and its COMMIT or ROLLBACK, one warning is logged (logger ``flask_uow``)
when the unit ends, naming where the unit was opened and the line where the longest gap
ended: the code right after the slow work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._hooks import logger
from ._watch import UnitTrace, release_if_unused, watcher_for

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._unit import UnitOfWork


class IdleWarning:
    """A watcher consumer that logs one warning per unit that was idle too long."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def unit_entered(self, unit: UnitOfWork) -> None:
        pass

    def unit_retrying(self, unit: UnitOfWork, error: BaseException, attempt: int) -> None:
        pass

    def unit_ended(self, unit: UnitOfWork, trace: UnitTrace | None) -> None:
        if trace is None or not trace.idle_gaps:
            return
        longest, where = max(trace.idle_gaps, key=lambda gap: gap[0])
        more = len(trace.idle_gaps) - 1
        logger.warning(
            "flask-uow: the unit of work opened at %s held its connection idle in a "
            "transaction for %.0f ms (more than %.0f ms)%s, until %s. Its transaction stays "
            "open on the server meanwhile, holding its locks and a pooled connection. Move "
            "the slow work (an HTTP call, rendering, a sleep) out of the unit: before it, "
            "or into an on_commit hook.",
            unit.opened_at,
            longest * 1000,
            self.threshold * 1000,
            f", and {more} more time{'s' if more > 1 else ''}" if more else "",
            where or "an unknown place",
        )


def configure_idle_warning(runtime: Runtime, threshold_ms: float | None) -> None:
    """Warn about units idle longer than ``threshold_ms``; None turns the warning off."""
    if threshold_ms is not None and (threshold_ms <= 0 or threshold_ms != threshold_ms):
        raise ValueError(
            f"warn_idle_ms takes a positive number of milliseconds, or None to turn the "
            f"warning off; got {threshold_ms!r}."
        )
    watcher = watcher_for(runtime)
    for consumer in watcher.consumers:
        if isinstance(consumer, IdleWarning):
            watcher.remove(consumer)
    if threshold_ms is None:
        watcher.idle_threshold = None
        release_if_unused(runtime)
        return
    watcher.idle_threshold = threshold_ms / 1000
    watcher.add(IdleWarning(threshold_ms / 1000))
