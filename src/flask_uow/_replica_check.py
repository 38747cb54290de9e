"""What ``flask uow check`` adds about replicas and poolers: one line per finding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from ._pgbouncer import pooler_report

if TYPE_CHECKING:
    from ._database import Database


def check_lines(db: Database) -> list[str]:
    """Lines for ``flask uow check``: a pooler in front of the primary, then each replica.

    Each replica is asked now (one connection each): ``replica: URL reachable, lag 0.0 s,
    replayed 0/3000060`` or ``replica: URL UNREACHABLE: reason``. Never raises for a
    replica's sake; the primary's own reachability is checked before this runs.
    """
    lines: list[str] = []
    try:
        report = pooler_report(db.engine)
    except sa.exc.DBAPIError:
        report = None
    if report is not None:
        lines.extend(report.lines())
    replicas = db.replicas
    if replicas is None:
        return lines
    for status in replicas.statuses():
        if not status.reachable:
            lines.append(f"replica: {status.url} UNREACHABLE: {status.error}")
        elif status.error:
            lines.append(f"replica: {status.url} reachable but {status.error}")
        else:
            lines.append(
                f"replica: {status.url} reachable, lag {status.lag_seconds:.1f} s, "
                f"replayed {status.replayed}"
            )
    return lines
