"""Read replicas: where a read-only unit runs, and the commit positions that keep reads causal.

A ``Replicas`` object knows the replica engines and their health, and the causal position
of the current thread or task: the primary's WAL position after the last commit that
wrote. It never opens a transaction itself; the unit machinery asks it where to run
(``engine_for_read``) and tells it when a write committed (``note_commit``).
"""

from __future__ import annotations

import itertools
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, ExceptionContext
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from ._engines import EngineVariants, create_engine, masked

logger = logging.getLogger("flask_uow")

Position = int
"""A PostgreSQL WAL position (LSN) as an integer: bigger is later."""

UNKNOWN_POSITION: Position = 2**64 - 1
"""Recorded when a write committed but its position could not be read: read the primary."""

DEFAULT_MAX_LAG = 5.0
DEFAULT_MAX_WAIT = 0.25
DEFAULT_PROBE_INTERVAL = 0.1
DEFAULT_BACKOFF = 5.0
DEFAULT_CONNECT_TIMEOUT = 2

_TOKEN_PREFIX = "lsn:"
_WROTE = "flask_uow_wrote"
"""Key in a primary connection's ``info``: its current transaction sent a write."""

_READ_PREFIXES = ("SELECT", "SHOW", "VALUES", "TABLE", "EXPLAIN")

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
_POSITION_SQL = "SELECT pg_current_wal_insert_lsn()::text"


def parse_lsn(text: str) -> Position:
    """``'16/B374D848'`` -> an integer position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(position: Position) -> str:
    """An integer position -> ``'16/B374D848'``, as PostgreSQL spells it."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def make_token(position: Position | None) -> str:
    """The opaque causal token for ``position`` (None: no write to wait for)."""
    return _TOKEN_PREFIX + format_lsn(position or 0)


def parse_token(token: str | None) -> Position | None:
    """The position in a token from ``make_token``; None or ``''`` mean none."""
    if not token:
        return None
    if not token.startswith(_TOKEN_PREFIX):
        raise ValueError(
            f"{token!r} is not a causal token; pass the string that db.causal_token() returned."
        )
    try:
        position = parse_lsn(token[len(_TOKEN_PREFIX) :])
    except ValueError:
        raise ValueError(
            f"{token!r} is not a causal token; pass the string that db.causal_token() returned."
        ) from None
    return position or None


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """Counters of read-only outermost units routed by ``Replicas``."""

    reads_on_replicas: int
    """Units that ran on a replica."""
    fallbacks_to_primary: int
    """Units that ran on the primary because no replica was healthy, fresh and caught up."""
    waits: int
    """Units that waited for a replica to replay their causal position (either outcome)."""
    probes: int
    """Round trips spent asking replicas how far they have replayed."""
    marked_down: int
    """Times a replica was taken out after failing to connect or losing its connection."""


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


class ReadChoice(NamedTuple):
    """Where a read-only unit runs: a replica's engine, or None for the primary."""

    engine: sa.Engine | None
    replica: str | None
    """The replica's URL (password masked), or None on the primary."""


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
    )

    def __init__(self, url: URL, engine: sa.Engine) -> None:
        self.url = masked(url)
        self.variants = EngineVariants(engine)
        self.replayed: Position = 0
        self.lag: float | None = None  # None: never probed successfully
        self.probed_at = float("-inf")
        self.down_until = float("-inf")
        self.probe_lock = threading.Lock()

    def lag_now(self, now: float) -> float:
        """The lag measured at the last probe, grown by the time since if it was behind."""
        lag = self.lag
        if lag is None:
            return float("inf")
        return lag + (now - self.probed_at) if lag > 0 else 0.0

    def __repr__(self) -> str:
        return f"<Replica {self.url} replayed={format_lsn(self.replayed)} lag={self.lag}>"


class Replicas:
    """Replica engines, their health, and the causal positions that reads must have seen.

    ``engine_for_read()`` picks a replica for a read-only outermost unit without a round
    trip in the common case: replay positions and lag are cached per replica and probed
    again at most every ``probe_interval`` seconds. A replica that fails to connect, or
    whose connection is lost, is skipped for ``backoff`` seconds. A replica whose lag is
    over ``max_lag`` seconds is skipped. A unit with a causal position waits up to
    ``max_wait`` seconds for a replica that has replayed it, then runs on the primary.
    """

    def __init__(
        self,
        urls: Sequence[str | URL],
        engine_options: Mapping[str, Any] | None = None,
        *,
        max_lag: float = DEFAULT_MAX_LAG,
        max_wait: float = DEFAULT_MAX_WAIT,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        backoff: float = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_lag < 0 or max_wait < 0 or probe_interval < 0 or backoff < 0:
            raise ValueError("max_lag, max_wait, probe_interval and backoff must be 0 or more")
        self.max_lag = max_lag
        """Seconds a replica may be behind and still serve reads without a causal position."""
        self.max_wait = max_wait
        """Seconds a unit waits for a replica to replay its causal position."""
        self.probe_interval = probe_interval
        """Seconds a replica's measured position and lag are trusted before asking again."""
        self.backoff = backoff
        """Seconds a replica is left out after it failed to connect."""
        self._clock = clock
        self.replicas: tuple[Replica, ...] = tuple(
            self._make_replica(sa.make_url(url), engine_options or {}) for url in urls
        )
        self._turn = itertools.count()
        self._position: ContextVar[Position | None] = ContextVar(
            f"flask_uow_causal_{id(self):x}", default=None
        )
        self._pending: ContextVar[bool] = ContextVar(
            f"flask_uow_commit_wrote_{id(self):x}", default=False
        )
        self._lock = threading.Lock()
        self._reads = self._fallbacks = self._waits = self._probes = self._downs = 0

    def __repr__(self) -> str:
        return f"<Replicas {', '.join(r.url for r in self.replicas)}>"

    def _make_replica(self, url: URL, options: Mapping[str, Any]) -> Replica:
        if url.get_backend_name() != "postgresql":
            raise ValueError(
                f"Read replicas are supported on PostgreSQL only, not {masked(url)}; remove it "
                "from replicas / UOW_REPLICA_URLS."
            )
        options = dict(options)
        connect_args = dict(options.pop("connect_args", {}))
        connect_args.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        options["connect_args"] = connect_args
        engine = create_engine(url, options)
        replica = Replica(url, engine)
        event.listen(engine, "checkout", _refuse_dead_connection)
        event.listen(engine, "handle_error", self._error_listener(replica))
        return replica

    def _error_listener(self, replica: Replica) -> Callable[[ExceptionContext], None]:
        def on_error(context: ExceptionContext) -> None:
            if context.is_disconnect:
                self._mark_down(replica, context.original_exception)

        return on_error

    # -- routing -----------------------------------------------------------------------------

    def engine_for_read(
        self, after: Position | None = None, *, isolation_level: str | None = None
    ) -> ReadChoice:
        """Where a read-only outermost unit should run.

        ``after`` is a position the unit must see (an explicit token's); the current causal
        position is added. Returns a replica's read-only engine, whose pool has just handed
        out and taken back a live connection (so a replica that cannot be reached is never
        returned), or ``ReadChoice(None, None)``: run on the primary (always for
        SERIALIZABLE, which a hot standby refuses). Never raises for a
        replica's sake; costs no round trip unless a replica's cached status is older than
        ``probe_interval`` or the causal position is ahead of every cached one.
        """
        needed = self._position.get()
        if after is not None and (needed is None or after > needed):
            needed = after
        if needed == UNKNOWN_POSITION or isolation_level == "SERIALIZABLE":
            # A hot standby refuses SERIALIZABLE transactions.
            return self._fallback()
        now = self._clock()
        choice = self._pick(needed, now, refresh=False)
        if choice is None and needed is not None and self._any_up(now):
            choice = self._wait_for(needed, now)
        if choice is None:
            return self._fallback()
        with self._lock:
            self._reads += 1
        engine = choice.variants.for_unit(read_only=True, isolation_level=isolation_level)
        return ReadChoice(engine, choice.url)

    def _fallback(self) -> ReadChoice:
        with self._lock:
            self._fallbacks += 1
        return ReadChoice(None, None)

    def _any_up(self, now: float) -> bool:
        return any(replica.down_until <= now for replica in self.replicas)

    def _wait_for(self, needed: Position, started: float) -> Replica | None:
        # Ask again at once: the cache is usually just a little older than the write.
        choice = self._pick(needed, self._clock(), refresh=True)
        if choice is not None:
            return choice
        with self._lock:
            self._waits += 1
        deadline = started + self.max_wait
        pause = 0.002
        while True:
            left = deadline - self._clock()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
            choice = self._pick(needed, self._clock(), refresh=True)
            if choice is not None:
                return choice

    def _pick(self, needed: Position | None, now: float, *, refresh: bool) -> Replica | None:
        replicas = self.replicas
        count = len(replicas)
        start = next(self._turn)
        for offset in range(count):
            replica = replicas[(start + offset) % count]
            if replica.down_until > now:
                continue
            stale = now - replica.probed_at >= self.probe_interval
            if stale or (refresh and needed is not None and replica.replayed < needed):
                self._probe(replica, now, wait=refresh or replica.lag is None)
            if replica.down_until > now or replica.lag is None:
                continue
            if needed is not None and replica.replayed < needed:
                continue
            if replica.lag_now(now) > self.max_lag:
                continue
            if self._usable(replica):
                return replica
        return None

    def _usable(self, replica: Replica) -> bool:
        """Check a connection out and back in: a replica down since its last probe fails here."""
        try:
            # The pool alone (no Connection object): its checkout runs the dead-connection
            # check and connects if needed; errors come straight from the driver.
            replica.variants.engine.pool.connect().close()
        except Exception as error:
            self._mark_down(replica, error)
            return False
        return True

    # -- health and positions ------------------------------------------------------------------

    def _probe(self, replica: Replica, now: float, *, wait: bool) -> None:
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
                self._probes += 1
            try:
                with replica.variants.engine.connect() as connection:
                    row = connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                        sa.text(_PROBE_SQL)
                    ).one()
            except sa.exc.DBAPIError as error:
                self._mark_down(replica, error)
                return
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

    def _mark_down(self, replica: Replica, error: BaseException | None) -> None:
        now = self._clock()
        first = replica.down_until <= now
        replica.down_until = now + self.backoff
        replica.lag = None
        replica.probed_at = float("-inf")
        if first:
            with self._lock:
                self._downs += 1
            reason = str(error).strip().splitlines()[0] if error else "unknown error"
            logger.warning(
                "flask-uow: replica %s is unreachable (%s); reading from elsewhere for %.1f s",
                replica.url,
                reason,
                self.backoff,
            )

    # -- causal positions ------------------------------------------------------------------------

    def watch_primary(self, engine: sa.Engine) -> None:
        """Track, per connection of the primary ``engine``, whether a transaction wrote.

        Compiled INSERT/UPDATE/DELETE/DDL and any textual statement not starting with
        SELECT, SHOW, VALUES, TABLE or EXPLAIN count as writes. A COMMIT after a write
        leaves ``note_commit()`` something to do. A primary that is not PostgreSQL has no
        WAL position to wait for: it is not watched, and its writes leave no position.
        """
        if engine.dialect.name != "postgresql" or event.contains(engine, "commit", self._on_commit):
            return
        event.listen(engine, "begin", _on_begin)
        event.listen(engine, "before_cursor_execute", _on_execute)
        event.listen(engine, "commit", self._on_commit)

    def _on_commit(self, connection: Connection) -> None:
        if connection.info.pop(_WROTE, False):
            self._pending.set(True)

    def note_commit(self, engine: sa.Engine) -> Position | None:
        """After an outermost unit committed on the primary ``engine``: record its position.

        Costs one round trip (``pg_current_wal_insert_lsn()``, on a pooled connection in
        autocommit) when the committed transaction wrote, none otherwise. Never raises: if
        the position cannot be read, later reads in this causal scope go to the primary.
        """
        if not self._pending.get():
            return None
        self._pending.set(False)
        try:
            with engine.connect() as connection:
                text = connection.execution_options(isolation_level="AUTOCOMMIT").scalar(
                    sa.text(_POSITION_SQL)
                )
            position = parse_lsn(str(text))
        except Exception:
            logger.warning(
                "flask-uow: could not read the primary's WAL position after a commit; reads in "
                "this causal scope go to the primary",
                exc_info=True,
            )
            position = UNKNOWN_POSITION
        self.note_position(position)
        return position

    def note_position(self, position: Position | None) -> None:
        """Raise the current causal position to ``position`` (never lowers it).

        An unknown position (a commit whose position could not be read) is replaced by the
        next known one: a later commit on the same primary is further along the WAL.
        """
        if position is None:
            return
        current = self._position.get()
        if current is None or current == UNKNOWN_POSITION or position > current:
            self._position.set(position)

    def current_position(self) -> Position | None:
        """The causal position of this thread or task: reads must have replayed it."""
        return self._position.get()

    def token(self) -> str:
        """An opaque string for the current causal position (see ``parse_token``)."""
        position = self._position.get()
        return make_token(None if position == UNKNOWN_POSITION else position)

    @contextmanager
    def causal_scope(self, position: Position | None) -> Iterator[None]:
        """Within the block, the causal position starts at ``position`` (a new request's)."""
        reset = self._position.set(position)
        try:
            yield
        finally:
            self._position.reset(reset)

    def begin_scope(self, position: Position | None) -> object:
        """Start a causal scope at ``position``; pass the result to ``end_scope``."""
        return self._position.set(position)

    def end_scope(self, token: object) -> None:
        """End a scope started by ``begin_scope`` (in the same context)."""
        self._position.reset(token)  # type: ignore[arg-type]

    # -- reporting -----------------------------------------------------------------------------

    @property
    def stats(self) -> ReplicaStats:
        """A snapshot of the routing counters."""
        with self._lock:
            return ReplicaStats(
                self._reads, self._fallbacks, self._waits, self._probes, self._downs
            )

    def statuses(self) -> list[ReplicaStatus]:
        """Ask every replica now (one connection each) whether it is reachable and its lag."""
        found = []
        for replica in self.replicas:
            try:
                with replica.variants.engine.connect() as connection:
                    row = connection.execute(sa.text(_PROBE_SQL)).one()
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

    def dispose(self) -> None:
        """Close the pooled connections of every replica engine."""
        for replica in self.replicas:
            replica.variants.engine.dispose()


def _on_begin(connection: Connection) -> None:
    connection.info.pop(_WROTE, None)


def _on_execute(
    connection: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    info = connection.info
    if _WROTE in info:
        return
    if context is not None and not context.is_text:  # a compiled Core or ORM statement
        wrote = context.isinsert or context.isupdate or context.isdelete or context.isddl
    else:  # sa.text() or exec_driver_sql(): only the SQL says what it does
        wrote = not statement.lstrip()[:7].upper().startswith(_READ_PREFIXES)
    if wrote:
        info[_WROTE] = True


def _refuse_dead_connection(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    # An idle connection has nothing to read; if its socket is readable, the server sent a
    # termination notice or closed it. One poll() call, no round trip: the pool then
    # replaces the connection, or fails at checkout if the replica is down.
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return
    try:
        poller = select.poll()
        poller.register(fileno(), select.POLLIN)
        readable = bool(poller.poll(0))
    except Exception:
        readable = True
    if readable:
        raise sa.exc.DisconnectionError("the replica closed this pooled connection")
