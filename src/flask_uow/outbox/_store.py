"""The SQL of delivery: claim, mark published, reschedule, park, count, clean up.

Each function runs in the short transaction of the connection it is given; none is ever
open while a broker is being talked to.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ._message import Message
from ._tables import OutboxTables


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A row a relay leased: its message and how many times delivery was tried."""

    seq: int
    message: Message
    attempts: int


@dataclasses.dataclass(frozen=True)
class OutboxStatus:
    """What ``flask uow outbox status`` shows."""

    pending: int
    """Committed messages not published yet (parked ones excluded)."""
    leased: int
    """Pending messages a relay or the immediate lane is publishing right now."""
    oldest_pending_age: float | None
    """Seconds since the oldest pending message was committed, or None."""
    parked: int
    """Messages taken out of delivery after too many failures (``retry`` puts one back)."""
    published_kept: int
    """Published messages kept for ``was_committed`` until the retention ends."""


def message_of(row: Any) -> Message:
    return Message(
        id=row.id,
        task=row.task,
        args=list(row.args),
        kwargs=dict(row.kwargs),
        key=row.key,
        queue=row.queue,
        countdown=row.countdown,
        headers=dict(row.headers or {}),
        enqueued_at=float(row.created_at),
    )


def claim(
    connection: sa.Connection,
    tables: OutboxTables,
    *,
    limit: int,
    lease: float,
    tasks: Sequence[str] | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` deliverable rows (of ``tasks`` only, if given), in one short
    transaction.

    Deliverable: committed, not published, not parked, due, not leased (or its lease ran
    out: its publisher died), and first of its key among unpublished rows. Rows another
    relay's claim has locked are skipped; rows it has leased are left out by the lease.
    """
    outbox = tables.outbox
    earlier = outbox.alias("earlier")
    now = time.time()
    head_of_key = sa.or_(
        outbox.c.key.is_(None),
        ~sa.exists(
            sa.select(earlier.c.seq).where(
                earlier.c.key == outbox.c.key,
                earlier.c.key_seq < outbox.c.key_seq,
                earlier.c.published_at.is_(None),
            )
        ),
    )
    due = sa.and_(
        outbox.c.published_at.is_(None),
        outbox.c.parked.is_(False),
        outbox.c.available_at <= now,
        sa.or_(outbox.c.leased_until.is_(None), outbox.c.leased_until < now),
        head_of_key,
    )
    if tasks is not None:
        due = sa.and_(due, outbox.c.task.in_(tasks))
    lease_values = {"leased_until": now + lease, "attempts": outbox.c.attempts + 1}
    dialect = connection.dialect.name
    if dialect in ("mysql", "mariadb"):  # no UPDATE ... RETURNING: lock, then lease
        query = sa.select(outbox).where(due).order_by(outbox.c.seq).limit(limit)
        rows = connection.execute(query.with_for_update(skip_locked=True, of=outbox)).all()
        if rows:
            connection.execute(
                sa.update(outbox)
                .where(outbox.c.seq.in_([row.seq for row in rows]))
                .values(lease_values)
            )
        return [Claimed(row.seq, message_of(row), row.attempts + 1) for row in rows]
    # One statement: PostgreSQL locks the chosen rows, skipping those another claim holds;
    # SQLite runs it under its single write lock.
    chosen = sa.select(outbox.c.seq).where(due).order_by(outbox.c.seq).limit(limit).correlate(None)
    if dialect == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    statement = (
        sa.update(outbox)
        .where(outbox.c.seq.in_(chosen.scalar_subquery()))
        .values(lease_values)
        .returning(*outbox.c)
    )
    rows = sorted(connection.execute(statement).all(), key=lambda row: row.seq)
    return [Claimed(row.seq, message_of(row), row.attempts) for row in rows]


def mark_published(
    connection: sa.Connection, tables: OutboxTables, ids: Sequence[str], *, keep: bool
) -> None:
    """Record that the broker confirmed these messages: UPDATE (kept) or DELETE."""
    if not ids:
        return
    outbox = tables.outbox
    where = outbox.c.id.in_(list(ids))
    if keep:
        connection.execute(
            sa.update(outbox).where(where).values(published_at=time.time(), leased_until=None)
        )
    else:
        connection.execute(sa.delete(outbox).where(where))


def reschedule(
    connection: sa.Connection,
    tables: OutboxTables,
    message_id: str,
    error: BaseException,
    *,
    attempts: int,
    max_attempts: int,
    base_delay: float,
    max_delay: float,
) -> bool:
    """Free a failed message for a later try, with exponential backoff and full jitter.

    Parks it instead once it has been tried ``max_attempts`` times; returns whether it was
    parked. A parked message holds back the later messages of its key only.
    """
    outbox = tables.outbox
    parked = attempts >= max_attempts
    delay = random.uniform(0, min(max_delay, base_delay * 2 ** (attempts - 1)))
    connection.execute(
        sa.update(outbox)
        .where(outbox.c.id == message_id)
        .values(
            leased_until=None,
            available_at=time.time() + delay,
            parked=parked,
            last_error=f"{type(error).__name__}: {error}"[:1000],
        )
    )
    return parked


def count_pending(connection: sa.Connection, tables: OutboxTables) -> int:
    outbox = tables.outbox
    query = sa.select(sa.func.count()).where(
        outbox.c.published_at.is_(None), outbox.c.parked.is_(False)
    )
    return int(connection.execute(query).scalar_one())


def status(connection: sa.Connection, tables: OutboxTables) -> OutboxStatus:
    outbox = tables.outbox
    now = time.time()
    unpublished = outbox.c.published_at.is_(None)
    waiting = unpublished & outbox.c.parked.is_(False)
    row = connection.execute(
        sa.select(
            _count_where(waiting),
            _count_where(waiting & (outbox.c.leased_until >= now)),
            sa.func.min(sa.case((waiting, outbox.c.created_at))),
            _count_where(unpublished & outbox.c.parked.is_(True)),
            _count_where(outbox.c.published_at.is_not(None)),
        )
    ).one()
    pending, leased, oldest, parked, kept = row
    return OutboxStatus(
        pending=int(pending),
        leased=int(leased),
        oldest_pending_age=None if oldest is None else max(0.0, now - float(oldest)),
        parked=int(parked),
        published_kept=int(kept),
    )


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    """COUNT(*) FILTER (WHERE ...), spelled so that MariaDB understands it too."""
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def unpark(connection: sa.Connection, tables: OutboxTables, message_id: str) -> bool:
    """Put a parked (or waiting) message back in line now, its attempts reset."""
    outbox = tables.outbox
    result = connection.execute(
        sa.update(outbox)
        .where(outbox.c.id == message_id, outbox.c.published_at.is_(None))
        .values(parked=False, attempts=0, available_at=time.time(), leased_until=None)
    )
    return bool(result.rowcount)


def delete_published(
    connection: sa.Connection, tables: OutboxTables, *, older_than: float, limit: int
) -> int:
    """DELETE up to ``limit`` rows published more than ``older_than`` seconds ago."""
    outbox = tables.outbox
    cutoff = time.time() - older_than
    old = outbox.c.published_at < cutoff
    if connection.dialect.name in ("mysql", "mariadb"):
        statement = sa.delete(outbox).where(old).with_dialect_options(mysql_limit=limit)
    else:
        oldest = sa.select(outbox.c.seq).where(old).order_by(outbox.c.seq).limit(limit)
        statement = sa.delete(outbox).where(outbox.c.seq.in_(oldest.scalar_subquery()))
    return int(connection.execute(statement).rowcount)


def delete_parked(connection: sa.Connection, tables: OutboxTables) -> int:
    outbox = tables.outbox
    statement = sa.delete(outbox).where(outbox.c.parked.is_(True), outbox.c.published_at.is_(None))
    return int(connection.execute(statement).rowcount)


def exists(connection: sa.Connection, tables: OutboxTables, message_id: str) -> bool:
    outbox = tables.outbox
    found = connection.execute(sa.select(outbox.c.seq).where(outbox.c.id == message_id)).first()
    return found is not None
