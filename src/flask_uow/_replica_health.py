"""The health of read replicas: how far each has replayed, how far behind it is, when it is down.

``ReplicaHealth`` probes a replica (one round trip, one thread at a time), takes a replica
out for ``backoff`` seconds when it cannot be reached, and counts both; ``Replicas``
(``_replicas``) decides from what it measured where a read-only unit runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ._engines import EngineVariants, masked
from ._positions import Position, format_lsn, parse_lsn
from ._replica_connections import ask

logger = logging.getLogger("flask_uow")

SLOW_PROBE_SECONDS = 0.25
"""A probe unanswered for this long makes other units skip the replica until it ends."""

_PROBE_SQL = (
    "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text, "
    "EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, "
    "pg_is_in_recovery(), "
    # status is NULL for roles without pg_read_all_stats: then a receiver running will do
    "EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status IS NULL OR status = 'streaming')"
)
"""How far a replica has replayed, and its lag. A replica that replayed all it received is
0 s behind only while it streams: one cut off from the primary is as far behind as its
last replayed transaction is old (an overestimate when the primary has been idle)."""


def _measured_lag(
    received: str | None, replayed: str | None, seconds: Any, streaming: Any
) -> float:
    if streaming and (received is None or replayed == received):
        return 0.0
    return max(float(seconds), 0.0) if seconds is not None else float("inf")


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What one replica answered when asked just now (for ``flask uow check``)."""

    url: str
    """The URL, password masked."""
    reachable: bool
    error: str | None
    replayed: str | None
    """The last replayed WAL position, as PostgreSQL spells it."""
    lag_seconds: float | None
    """How far behind the primary the replica is, 0.0 when it has replayed all it received."""


class Replica:
    """One replica: its engines, health and last known replay position."""

    __slots__ = (
        "url",
        "variants",
        "replayed",
        "lag",
        "probed_at",
        "down_until",
        "probe_lock",
        "probing_since",
    )

    def __init__(self, url: URL, engine: sa.Engine) -> None:
        self.url = masked(url)
        self.variants = EngineVariants(engine)
        self.replayed: Position = 0
        self.lag: float | None = None  # None: never probed successfully
        self.probed_at = float("-inf")
        self.down_until = float("-inf")
        self.probe_lock = threading.Lock()
        self.probing_since: float | None = None

    def lag_now(self, now: float) -> float:
        """The lag measured at the last probe, grown by the time since if it was behind."""
        lag = self.lag
        if lag is None:
            return float("inf")
        return lag + (now - self.probed_at) if lag > 0 else 0.0

    def __repr__(self) -> str:
        return f"<Replica {self.url} replayed={format_lsn(self.replayed)} lag={self.lag}>"


class ReplicaHealth:
    """Probes replicas, marks them down when they cannot be reached, and counts both."""

    __slots__ = ("probe_interval", "backoff", "probes", "downs", "_clock", "_lock")

    def __init__(
        self,
        *,
        probe_interval: float,
        backoff: float,
        clock: Callable[[], float],
        lock: threading.Lock,
    ) -> None:
        self.probe_interval = probe_interval
        """Seconds a replica's measured position and lag are trusted before asking again."""
        self.backoff = backoff
        """Seconds a replica is left out after it failed to connect."""
        self.probes = 0
        """Round trips spent asking replicas how far they have replayed."""
        self.downs = 0
        """Times a replica was taken out after failing to connect or losing its connection."""
        self._clock = clock
        self._lock = lock  # the owner's, which guards its own counters too

    def probe(self, replica: Replica, *, wait: bool) -> None:
        """Ask ``replica`` how far it has replayed; one thread at a time, others use the cache.

        With ``wait``, a thread that finds a probe under way waits for it and uses its answer.
        """
        if not replica.probe_lock.acquire(blocking=False):
            if wait:
                with replica.probe_lock:
                    pass
            return
        try:
            if not wait and self._clock() - replica.probed_at < self.probe_interval:
                return  # another thread probed while this one was deciding to
            with self._lock:
                self.probes += 1
            replica.probing_since = self._clock()
            try:
                row = ask(replica.variants.engine, _PROBE_SQL)
            except sa.exc.DBAPIError as error:
                self.mark_down(replica, error)
                return
            finally:
                replica.probing_since = None
            replayed, received, seconds, in_recovery, streaming = row
            replica.probed_at = self._clock()
            if not in_recovery:
                replica.lag = None  # promoted or not a standby: never read from it as one
                replica.down_until = replica.probed_at + self.backoff
                logger.warning("flask-uow: replica %s is not in recovery; skipping it", replica.url)
                return
            replica.replayed = parse_lsn(replayed) if replayed else 0
            replica.lag = _measured_lag(received, replayed, seconds, streaming)
        finally:
            replica.probe_lock.release()

    def mark_down(self, replica: Replica, error: BaseException | None) -> None:
        """Leave ``replica`` out for ``backoff`` seconds; log and count it the first time."""
        now = self._clock()
        first = replica.down_until <= now
        replica.down_until = now + self.backoff
        replica.lag = None
        replica.probed_at = float("-inf")
        if first:
            with self._lock:
                self.downs += 1
            reason = str(error).strip().splitlines()[0] if error else "unknown error"
            logger.warning(
                "flask-uow: replica %s is unreachable (%s); reading from elsewhere for %.1f s",
                replica.url,
                reason,
                self.backoff,
            )


def replica_statuses(replicas: Iterable[Replica]) -> list[ReplicaStatus]:
    """Ask every replica now (one connection each) whether it is reachable and its lag."""
    found = []
    for replica in replicas:
        try:
            row = ask(replica.variants.engine, _PROBE_SQL)
        except sa.exc.DBAPIError as error:
            message = str(error.orig or error).strip().splitlines()[0]
            found.append(ReplicaStatus(replica.url, False, message, None, None))
            continue
        replayed, received, seconds, in_recovery, streaming = row
        if not in_recovery:
            found.append(
                ReplicaStatus(replica.url, True, "not a standby (not in recovery)", None, None)
            )
            continue
        lag = _measured_lag(received, replayed, seconds, streaming)
        found.append(ReplicaStatus(replica.url, True, None, replayed, lag))
    return found
