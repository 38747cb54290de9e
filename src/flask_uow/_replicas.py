"""Read replicas: where a read-only unit runs, and the commit positions that keep reads causal.

A ``Replicas`` object knows the replica engines (``_replica_health`` probes them and
marks them down), and the causal position of the current thread or task: the primary's
WAL position after the last commit that wrote. It never opens a transaction itself; the
unit machinery asks it where to run (``engine_for_read``) and tells it when a write
committed (``note_commit``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, ExceptionContext

from ._deadlines import DEADLINES
from ._engines import (
    BEFORE_READ_ONLY_END_OPTION,
    READ_ONLY_OPTION,
    ReadChoice,
    create_engine,
    masked,
)
from ._errors import UnitOfWorkError
from ._positions import UNKNOWN_POSITION as UNKNOWN_POSITION
from ._positions import Position, forget_write, note_write, read_position, took_write
from ._positions import format_lsn as format_lsn
from ._positions import make_token as make_token
from ._positions import parse_lsn as parse_lsn
from ._positions import parse_token as parse_token
from ._replica_connections import (
    ANSWER_WITHIN_OPTION,
    disarm_checked_in,
    disarm_statement,
    refuse_dead_connection,
    replayed_on,
)
from ._replica_health import SLOW_PROBE_SECONDS as SLOW_PROBE_SECONDS
from ._replica_health import Replica as Replica
from ._replica_health import ReplicaHealth, replica_statuses
from ._replica_health import ReplicaStatus as ReplicaStatus

logger = logging.getLogger("flask_uow")

DEFAULT_MAX_LAG = 5.0
DEFAULT_MAX_WAIT = 0.25
DEFAULT_PROBE_INTERVAL = 0.1
DEFAULT_BACKOFF = 5.0
DEFAULT_CONNECT_TIMEOUT = 2
DEFAULT_ANSWER_TIMEOUT = 10.0
_SEEN = "flask_uow_replayed_seen"
"""Key in a replica connection's ``info``: a position its server is known to have replayed."""


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


class Replicas:
    """Replica engines, their health, and the causal positions that reads must have seen.

    ``engine_for_read()`` picks a replica for a read-only outermost unit without a round
    trip in the common case: replay positions and lag are cached per replica and probed
    again at most every ``probe_interval`` seconds. A replica that fails to connect, or
    whose connection is lost, is skipped for ``backoff`` seconds. A replica whose lag is
    over ``max_lag`` seconds is skipped. A unit with a causal position waits up to
    ``max_wait`` seconds for a replica that has replayed it, then runs on the primary.

    A replica that stops answering (connected, silent) is cut off from this side: a probe
    unanswered after ``PROBE_ANSWER_SECONDS`` marks it down (units then run elsewhere),
    and a statement, COMMIT or ROLLBACK on it unanswered after ``answer_timeout`` seconds
    fails as a lost connection (None: wait as long as the server takes).
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
        answer_timeout: float | None = DEFAULT_ANSWER_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_lag < 0 or max_wait < 0 or probe_interval < 0 or backoff < 0:
            raise ValueError("max_lag, max_wait, probe_interval and backoff must be 0 or more")
        if answer_timeout is not None and answer_timeout <= 0:
            raise ValueError("answer_timeout must be a positive number of seconds, or None")
        self.answer_timeout = answer_timeout
        """Seconds a replica may take to answer one statement before the connection is cut."""
        self.max_lag = max_lag
        """Seconds a replica may be behind and still serve reads without a causal position."""
        self.max_wait = max_wait
        """Seconds a unit waits for a replica to replay its causal position."""
        self._clock = clock
        self._lock = threading.Lock()
        self._health = ReplicaHealth(
            probe_interval=probe_interval, backoff=backoff, clock=clock, lock=self._lock
        )
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
        self._primary: sa.Engine | None = None
        self._reads = self._fallbacks = self._waits = 0

    @property
    def probe_interval(self) -> float:
        """Seconds a replica's measured position and lag are trusted before asking again."""
        return self._health.probe_interval

    @probe_interval.setter
    def probe_interval(self, seconds: float) -> None:
        self._health.probe_interval = seconds

    @property
    def backoff(self) -> float:
        """Seconds a replica is left out after it failed to connect."""
        return self._health.backoff

    @backoff.setter
    def backoff(self, seconds: float) -> None:
        self._health.backoff = seconds

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
        event.listen(engine, "checkout", refuse_dead_connection)
        event.listen(engine, "handle_error", self._error_listener(replica))
        event.listen(engine, "begin", _seen_on_begin(replica))
        event.listen(engine, "before_cursor_execute", self._before_statement)
        event.listen(engine, "after_cursor_execute", disarm_statement)
        if self.answer_timeout is not None:  # the driver's own COMMIT and ROLLBACK
            event.listen(engine, "commit", self._arm_ending)
            event.listen(engine, "rollback", self._arm_ending)
            # A read-only unit's COMMIT on psycopg goes out before the rollback event.
            engine.update_execution_options(**{BEFORE_READ_ONLY_END_OPTION: self._arm_ending})
        event.listen(engine, "checkin", disarm_checked_in)
        return replica

    def _error_listener(self, replica: Replica) -> Callable[[ExceptionContext], None]:
        def on_error(context: ExceptionContext) -> None:
            connection = context.connection
            if connection is not None and not connection.invalidated:
                DEADLINES.disarm(connection.connection.dbapi_connection)
            if context.is_disconnect:
                self._health.mark_down(replica, context.original_exception)

        return on_error

    def _before_statement(
        self,
        connection: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """Arm the statement's answer deadline; in a unit, first catch up with its scope."""
        options = connection.get_execution_options()
        seconds = options.get(ANSWER_WITHIN_OPTION, self.answer_timeout)
        driver_connection = connection.connection.dbapi_connection
        if seconds is not None:
            DEADLINES.arm(driver_connection, seconds)
        if not options.get(READ_ONLY_OPTION):
            return  # a probe, not a unit's statement
        needed = self._position.get()
        if needed is not None and needed > connection.info.get(_SEEN, 0):
            self._catch_up(connection, needed)

    def _catch_up(self, connection: Connection, needed: Position) -> None:
        """Wait until this replica connection's server has replayed ``needed``.

        A unit in this scope committed a write (``REQUIRES_NEW``) while this read-only unit
        runs on the replica: its next statement must see it. Asks the server on this
        connection every few ms, up to ``max_wait``; raises if it has not replayed by then.
        """
        if needed == UNKNOWN_POSITION:
            primary = self._primary
            try:
                assert primary is not None
                needed = read_position(primary)
            except Exception:
                needed = UNKNOWN_POSITION
        deadline = self._clock() + self.max_wait
        pause = 0.002
        while needed != UNKNOWN_POSITION:
            text = replayed_on(connection)
            replayed = parse_lsn(text) if text else 0
            if replayed >= needed:
                connection.info[_SEEN] = replayed
                return
            left = deadline - self._clock()
            if left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        raise UnitOfWorkError(
            "This read-only unit of work runs on a read replica, and a unit inside it "
            "committed a write that the replica has not replayed within max_wait "
            f"({self.max_wait:g} s); its next statement would not see that write. Open the "
            "outer unit with read_only=False (it then runs on the primary), commit the write "
            "after the read-only unit ends, or raise max_wait."
        )

    def _arm_ending(self, connection: Connection) -> None:
        # Disarmed when the connection goes back to the pool, right after.
        assert self.answer_timeout is not None
        if connection.invalidated:
            return  # lost already: the rollback sends nothing
        DEADLINES.arm(connection.connection.dbapi_connection, self.answer_timeout)

    # -- routing -----------------------------------------------------------------------------

    def engine_for_read(
        self, after: Position | None = None, *, isolation_level: str | None = None
    ) -> ReadChoice:
        """Where a read-only outermost unit should run.

        ``after`` is a position the unit must see (an explicit token's); the current causal
        position is added. Returns a replica's read-only engine, or ``ReadChoice(None, None)``:
        run on the primary (always for SERIALIZABLE, which a hot standby refuses). The unit
        checks its connection out at once; a replica that went down since its last probe
        fails there, before any SQL, and the unit reports it (``replica_failed()``) and asks
        again. Never raises for a replica's sake; costs no round trip unless a replica's
        cached status is older than ``probe_interval`` or the causal position is ahead of
        every cached one.
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

    def replica_failed(self, choice: ReadChoice, error: BaseException) -> None:
        """The unit ``choice`` was made for could not check out a connection of its replica
        (it went down since its last probe): leave the replica out for ``backoff`` seconds.
        The unit asks ``engine_for_read()`` again, and runs elsewhere."""
        engine = choice.engine
        for replica in self.replicas:
            if engine is not None and engine.pool is replica.variants.engine.pool:
                self._health.mark_down(replica, error)
                with self._lock:
                    self._reads -= 1  # counted when it was chosen; it did not run there
                return

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
            probing_since = replica.probing_since
            if probing_since is not None and now - probing_since > SLOW_PROBE_SECONDS:
                continue  # its probe has had no answer for a while: do not queue behind it
            stale = now - replica.probed_at >= self._health.probe_interval
            if stale or (refresh and needed is not None and replica.replayed < needed):
                self._health.probe(replica, wait=refresh or replica.lag is None)
            if replica.down_until > now or replica.lag is None:
                continue
            if needed is not None and replica.replayed < needed:
                continue
            if replica.lag_now(now) > self.max_lag:
                continue
            return replica
        return None

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
        self._primary = engine
        event.listen(engine, "begin", forget_write)
        event.listen(engine, "before_cursor_execute", note_write)
        event.listen(engine, "commit", self._on_commit)

    def _on_commit(self, connection: Connection) -> None:
        if took_write(connection):
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
            position = read_position(engine)
        except Exception:
            logger.warning(
                "flask-uow: could not read the primary's WAL position after a commit; reads in "
                "this causal scope go to the primary",
                exc_info=True,
            )
            position = UNKNOWN_POSITION
        self.note_position(position)
        return position

    def note_outcome_unknown(self, engine: sa.Engine) -> None:
        """After an outermost unit's COMMIT on the primary ``engine`` got no answer.

        The write may have landed at a position nobody read: if the transaction wrote, the
        causal position becomes unknown, so later reads of this scope run on the primary
        (and ``token()`` reads the primary's position now), the same as after a commit whose
        position could not be read. Sends nothing; never raises.
        """
        if not self._pending.get():
            return
        self._pending.set(False)
        self.note_position(UNKNOWN_POSITION)

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
        """An opaque string for the current causal position (see ``parse_token``).

        An unknown position (a commit whose position could not be read, or whose outcome is
        unknown) is read from the primary now, one round trip: whatever committed is at or
        before its current position, which becomes this scope's. If the primary cannot
        answer, the token still says "unknown", and a unit given it reads the primary.
        """
        position = self._position.get()
        if position == UNKNOWN_POSITION and self._primary is not None:
            try:
                position = read_position(self._primary)
            except Exception:
                return make_token(UNKNOWN_POSITION)
            self.note_position(position)
        return make_token(position)

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
            health = self._health
            return ReplicaStats(
                self._reads, self._fallbacks, self._waits, health.probes, health.downs
            )

    def statuses(self) -> list[ReplicaStatus]:
        """Ask every replica now (one connection each) whether it is reachable and its lag."""
        return replica_statuses(self.replicas)

    def dispose(self) -> None:
        """Close the pooled connections of every replica engine."""
        for replica in self.replicas:
            replica.variants.engine.dispose()


def _seen_on_begin(replica: Replica) -> Callable[[Connection], None]:
    def seen(connection: Connection) -> None:
        # The server has replayed at least what it reported last (never less later on).
        connection.info[_SEEN] = replica.replayed

    return seen
