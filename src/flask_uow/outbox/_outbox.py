"""``db.outbox``: enqueue messages in a unit's transaction, and deliver them after COMMIT."""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._errors import NoActiveUnitOfWork, ReadOnlyViolation, UnitOfWorkError
from .._lifecycle import UnitKind
from . import _store
from ._background import BackgroundPublisher
from ._buffer import IDS_KEY, Writer, hold, take_committed
from ._inprocess import InProcessDelivery
from ._local import LocalTarget
from ._marker import Marker
from ._message import Message, checked_arguments, task_name
from ._scopes import current_app
from ._store import OutboxStatus
from ._tables import OutboxTables
from ._targets import CeleryTarget, Target, as_target

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .._database import Database
    from .._unit import UnitOfWork
    from .otel import Telemetry

logger = logging.getLogger("flask_uow.outbox")

_HOOKED_KEY = "flask_uow_outbox_hooked"


class Outbox:
    """The transactional outbox of one Database (``db.outbox``).

    ``enqueue`` writes a message in the active unit's own transaction: it is delivered if,
    and only if, that transaction commits. Delivery goes through the target given to
    ``publish_with`` (a Celery app or a callable): right after COMMIT by the committing
    process (the immediate lane) and by relays (``relay_once``, ``run_relay``) for whatever
    the immediate lane could not publish. A message may be published more than once (a
    crash between the broker's confirmation and marking the row): consumers deduplicate by
    message id (``flask_uow.celery.UnitTask`` does).
    """

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 10,
        keep_published_seconds: float = 3600.0,
        batch_size: int = 200,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
    ) -> None:
        self.db = db
        metadata = db.metadata if db.metadata is not None else sa.MetaData()
        self.tables = OutboxTables(metadata)
        """The outbox, key and inbox tables, on the Database's MetaData."""
        self.lease_seconds = lease_seconds
        """How long a relay (or the immediate lane) owns a row it publishes; after that, a
        relay takes it over (its publisher is presumed dead)."""
        self.max_attempts = max_attempts
        """Deliveries tried before a message is parked (``retry(id)`` puts it back)."""
        self.keep_published_seconds = keep_published_seconds
        """How long published rows are kept (``was_committed`` answers from them); 0
        deletes each row as soon as the broker confirmed it."""
        self.batch_size = batch_size
        """Rows a relay claims per short transaction."""
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.immediate = False
        """Whether committing processes publish their own messages right after COMMIT."""
        self._target: Target | None = None
        self._default = LocalTarget(db)
        """The in-process default: with no target set, the task objects given to ``enqueue``
        run here (see ``deliver_here``); bare task names wait for a target."""
        self._recorders: list[Callable[[list[Message]], object]] = []
        self._in_process = InProcessDelivery(self)
        self._marker = Marker(self._mark_published, name=f"flask-uow-outbox-marker {db!r}")
        self._background = BackgroundPublisher(
            self._deliver_committed, name=f"flask-uow-outbox-publisher {db!r}"
        )
        self.telemetry: Telemetry | None = None
        """Spans and metrics, once ``flask_uow.outbox.otel.instrument(db)`` was called."""
        self._writer = Writer(self.tables, self._lease_for)

    def __repr__(self) -> str:
        return f"<Outbox of {self.db!r}, target {self._target!r}>"

    # -- producing ---------------------------------------------------------------------------

    def enqueue(
        self,
        task: object,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        key: str | None = None,
        countdown: float | None = None,
        queue: str | None = None,
    ) -> str:
        """Add a message to the active unit's transaction; return its id (a UUID string).

        No SQL is sent now: the transaction's messages are written with one multi-row
        INSERT when it COMMITs (plus one upsert per distinct ``key``, which locks that key
        until COMMIT, so writers of one key commit one at a time and their messages are
        published in commit order). A SAVEPOINT that rolls back drops the messages enqueued
        in it; a transaction that rolls back drops them all.

        ``task`` is a Celery task or its name; ``args`` and ``kwargs`` must be JSON.
        ``countdown`` delays the task by that many seconds (Celery's ``countdown``);
        ``queue`` routes it. Raises ``NoActiveUnitOfWork`` outside a unit and
        ``ReadOnlyViolation`` in a read-only one.
        """
        name = task_name(task)
        arguments, keywords = checked_arguments(args, kwargs)
        if not isinstance(task, str):
            local = self._target
            if local is None:
                self._default.learn(name, task)
            elif isinstance(local, LocalTarget):
                local.learn(name, task)
        unit = self._writable_unit()
        session = _sync_session(unit)
        telemetry = self.telemetry
        if telemetry is None:
            headers = _trace_headers()
        else:
            with telemetry.enqueue_span(name, key):
                headers = _trace_headers()
        now = time.time()
        message = Message(
            id=str(uuid.uuid4()),
            task=name,
            args=arguments,
            kwargs=keywords,
            key=key,
            queue=queue,
            countdown=countdown,
            headers=headers,
            enqueued_at=now,
        )
        hold(session, message, now, self._writer)
        if not session.info.get(_HOOKED_KEY):
            session.info[_HOOKED_KEY] = True
            unit.root.on_commit(functools.partial(self._after_commit, session))
        return message.id

    def _writable_unit(self) -> UnitOfWork:
        unit = self.db.current
        if unit is None or unit.kind is UnitKind.NONE:
            raise NoActiveUnitOfWork(
                "db.enqueue() was called outside a unit of work, so there is no transaction "
                "to write the message in. Call it from a @db.transactional function or inside "
                "'with db.unit_of_work():'."
            )
        if unit.read_only or unit.root.read_only:
            raise ReadOnlyViolation(
                "db.enqueue() was called in a read-only unit of work, which never commits: "
                "the message would never be sent. Enqueue it from a read-write unit."
            )
        return unit

    # -- delivering --------------------------------------------------------------------------

    def publish_with(self, target: object, *, immediate: bool = True) -> None:
        """Deliver messages to ``target``: a Celery app, or a callable taking a list of
        ``Message`` (replacing any target set before).

        With a Celery app each message goes out with ``send_task``, the message id as the
        task id and the trace context in its headers, and counts as published once the
        broker confirmed it. With ``immediate`` the committing process publishes its unit's
        messages right after COMMIT (keyed messages always go through a relay, which keeps
        their order); relays publish the rest.
        """
        self._target = as_target(target)
        self.immediate = immediate
        self._in_process.relaying = False
        linked = getattr(target, "conf", None)
        if linked is not None:
            from . import _links

            _links.link(target, self.db)

    def publish_locally(
        self,
        tasks: Mapping[str, Callable[..., Any]] | None = None,
        *,
        relay_thread: bool = True,
        idle_seconds: float = 1.0,
    ) -> None:
        """Deliver by running each task in this process after its unit commits: no broker.

        Messages still go through the outbox table, so a task whose process died after
        COMMIT runs later. ``tasks`` maps names to functions (task objects given to
        ``enqueue`` are found by themselves). After COMMIT the unit's messages go to a
        daemon thread, which runs them in the app context of the unit that committed them:
        the unit's caller does not wait for them. With ``relay_thread``, that thread also
        relays what is left (failures, a crash) every ``idle_seconds``, in the app context
        of each app registered with the Database.
        """
        self._target = LocalTarget(self.db, tasks)
        self.immediate = True
        self._in_process.idle_seconds = idle_seconds
        self._in_process.relaying = relay_thread
        if relay_thread:
            self._in_process.start()

    def restore_target(self, target: Target | None, immediate: bool) -> None:
        """Put back a target read from ``target`` (for helpers that swap it for a while)."""
        self._target = target
        self.immediate = immediate

    @property
    def target(self) -> Target | None:
        """Where messages are published, or None before ``publish_with`` (the in-process
        default then runs the task objects given to ``enqueue``)."""
        return self._target

    def _lease_for(self, message: Message) -> float | None:
        if message.key is not None:
            return None
        if self._target is None:
            known = message.task in self._default.tasks
            return self.lease_seconds if known or self._recorders else None
        return self.lease_seconds if self.immediate else None

    def _current_target(self) -> Target | None:
        """The target set, else the in-process default once it knows a task."""
        target = self._target
        if target is None and self._default.tasks:
            return self._default
        return target

    def _after_commit(self, session: Session) -> None:
        """The immediate lane: publish what the unit committed (after its session closed)."""
        messages = take_committed(session)
        for recorder in self._recorders:
            recorder(messages)
        target = self._target
        if target is None:  # the in-process default runs the tasks it knows
            known = self._default.tasks
            leased = [m for m in messages if m.key is None and m.task in known]
            if not self._in_process.relaying and known:
                self._start_default(known)
        elif self.immediate:
            leased = [message for message in messages if message.key is None]
        else:
            return
        if not leased:
            return
        bind = session.get_bind()
        engine = bind if isinstance(bind, sa.Engine) else None  # a Connection: isolated()
        if engine is not None and isinstance(target, CeleryTarget):
            self._background.submit(leased, engine)  # the caller does not wait for RabbitMQ
            return
        if engine is not None and (target is None or isinstance(target, LocalTarget)):
            self._in_process.submit(leased, current_app(self.db))  # nor for the tasks
            return
        try:
            self._deliver([(message, 1) for message in leased], mark_later=engine)
        except Exception:
            logger.warning(
                "flask-uow outbox: publishing %d committed message(s) right after COMMIT "
                "failed; a relay will publish them once their lease ends",
                len(leased),
                exc_info=True,
            )

    def _start_default(self, known: Mapping[str, object]) -> None:
        logger.info(
            "flask-uow outbox: no target was set (db.outbox.publish_with), so the tasks "
            "given to enqueue (%s) run in this process, and a thread relays leftovers; bare "
            "task names wait for a target",
            ", ".join(sorted(known)),
        )
        self._in_process.relaying = True
        self._in_process.start()

    def deliver_here(self, messages: list[Message]) -> None:
        """Run committed ``messages`` now with the in-process target and mark them (in this
        thread: the in-process lane's thread calls it, in the app context of their unit)."""
        self._deliver([(message, 1) for message in messages], lane="immediate")

    def relay_once(self) -> int:
        """Publish one batch of committed, unpublished messages; return how many went out.

        Claims up to ``batch_size`` rows in one short transaction (PostgreSQL and MariaDB
        skip rows other relays are claiming), publishes them with no transaction open, then
        marks them in another short transaction. Failed messages are retried later with
        exponential backoff and jitter, and parked after ``max_attempts``.
        """
        target = self._require_target()
        only = None if target is not self._default else sorted(self._default.tasks)
        with self.transaction() as connection:
            claimed = _store.claim(
                connection, self.tables, limit=self.batch_size, lease=self.lease_seconds, tasks=only
            )
        if not claimed:
            return 0
        return self._deliver([(row.message, row.attempts) for row in claimed])

    def _deliver(
        self,
        batch: list[tuple[Message, int]],
        *,
        mark_later: sa.Engine | None = None,
        lane: str | None = None,
    ) -> int:
        """Publish, then mark what the target confirmed (later, in a batch, with
        ``mark_later``) and reschedule or park what failed."""
        target = self._require_target()
        messages = [message for message, _ in batch]
        telemetry = self.telemetry
        if telemetry is None:
            failures = target(messages)
        else:
            if lane is None:
                lane = "immediate" if mark_later is not None else "relay"
            with telemetry.batch_span(lane, messages) as span:
                failures = target(messages)
                span.set_attribute("flask_uow.outbox.failures", len(failures))
        failed = {message.id: error for message, error in failures}
        if telemetry is not None:
            parked = sum(1 for message, attempts in batch
                         if message.id in failed and attempts >= self.max_attempts)  # fmt: skip
            telemetry.record(
                [message for message in messages if message.id not in failed], len(failed), parked
            )
        published = [message.id for message in messages if message.id not in failed]
        if mark_later is not None and published:
            self._marker.add(mark_later, published)
            if not failed:
                return len(published)
            published = []
        with self.transaction() as connection:
            self._mark_published(connection, published)
            for message, attempts in batch:
                error = failed.get(message.id)
                if error is None:
                    continue
                parked = _store.reschedule(
                    connection,
                    self.tables,
                    message.id,
                    error,
                    attempts=attempts,
                    max_attempts=self.max_attempts,
                    base_delay=self.retry_base_seconds,
                    max_delay=self.retry_max_seconds,
                )
                logger.warning(
                    "flask-uow outbox: publishing message %s (%s) failed (attempt %d): %s%s",
                    message.id,
                    message.task,
                    attempts,
                    error,
                    "; parked: 'flask uow outbox retry ID' puts it back" if parked else "",
                )
        return len(published)

    def _deliver_committed(self, messages: list[Message], engine: sa.Engine) -> None:
        self._deliver([(message, 1) for message in messages], mark_later=engine)

    def _mark_published(self, connection: sa.Connection, ids: list[str]) -> None:
        _store.mark_published(connection, self.tables, ids, keep=self.keep_published_seconds > 0)

    def flush(self, *, timeout: float | None = None) -> None:
        """Wait until the immediate lane has published what committed so far and marked it
        (the in-process lane too: its tasks ran, or failed).

        ``timeout`` bounds the wait for the in-process lane (tests waiting for a delivery):
        ``TimeoutError`` when its tasks are still running after that many seconds.
        """
        if not self._in_process.join(timeout):
            raise TimeoutError(
                f"The outbox's in-process tasks were still running after {timeout} s: one "
                "of them may be stuck (waiting for a lock its caller holds?)."
            )
        self._background.join()
        self._marker.flush()

    def close(self, *, timeout: float = 30.0) -> None:
        """Stop this outbox's threads and close its broker connection; ``db.dispose()`` calls it.

        What was handed over before is finished first: the immediate lane publishes what
        it holds and marks it, the in-process lane runs its tasks, each waited for at most
        ``timeout`` seconds. Nothing committed is lost: a message that is not delivered by
        then stays in the outbox table, pending, and a relay publishes it (once its lease
        ends). The threads start again on next use (the next unit that enqueues), and
        the broker connection reopens with the next publish, as engines reconnect; so
        this is safe after a fork and in test teardown.
        """
        if not self._in_process.stop(timeout):
            logger.warning(
                "flask-uow outbox: in-process tasks were still running %.0f s after "
                "close(); what they do not finish stays pending for a relay",
                timeout,
            )
        if not self._background.stop(timeout):
            logger.warning(
                "flask-uow outbox: still publishing %.0f s after close(); relays publish "
                "what it does not confirm once their lease ends",
                timeout,
            )
        self._marker.stop()
        close = getattr(self._target, "close", None)
        if close is not None:
            close()

    def _require_target(self) -> Target:
        target = self._current_target()
        if target is None:
            raise RuntimeError(
                "This outbox has nowhere to publish: call db.outbox.publish_with(celery_app) "
                "(or with a function taking a list of messages) first, or "
                "db.outbox.publish_locally() to run tasks in this process."
            )
        return target

    def run_relay(
        self,
        *,
        stop: Callable[[], bool] | None = None,
        idle_seconds: float = 0.5,
        clean_every: int = 20,
    ) -> int:
        """Relay until ``stop()`` is true (or SIGTERM/SIGINT arrive); return how many went out.

        The plain-Python entry point of ``flask uow relay``. Between empty batches it waits
        ``idle_seconds``. A signal ends the loop once the batch in flight is marked. Every
        ``clean_every`` batches it deletes rows published more than
        ``keep_published_seconds`` ago, a bounded batch at a time.
        """
        from ._loop import relay_loop

        return relay_loop(self, stop=stop, idle_seconds=idle_seconds, clean_every=clean_every)

    # -- looking --------------------------------------------------------------------------

    def pending(self) -> int:
        """How many committed messages are not published yet (parked ones excluded)."""
        self.flush()
        with self.transaction() as connection:
            return _store.count_pending(connection, self.tables)

    def status(self) -> OutboxStatus:
        """Backlog, leased, oldest pending age, parked and kept-published counts."""
        self.flush()
        with self.transaction() as connection:
            return _store.status(connection, self.tables)

    def was_committed(self, message_id: str) -> bool:
        """Whether the transaction that enqueued ``message_id`` committed, read from the database.

        After ``CommitOutcomeUnknown``, ask with one of ``error.message_ids``: its row exists
        exactly when that unit committed. Published rows stay ``keep_published_seconds``,
        so ask within that time.
        """
        with self.transaction() as connection:
            return _store.exists(connection, self.tables, message_id)

    def retry(self, message_id: str) -> bool:
        """Put a parked or waiting message back in line now; False if it is not pending."""
        with self.transaction() as connection:
            return _store.unpark(connection, self.tables, message_id)

    def purge(self) -> int:
        """Delete parked messages; return how many (they will never be published)."""
        with self.transaction() as connection:
            return _store.delete_parked(connection, self.tables)

    def clean(self, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` rows published more than ``keep_published_seconds`` ago."""
        with self.transaction() as connection:
            return _store.delete_published(
                connection, self.tables, older_than=self.keep_published_seconds, limit=limit
            )

    def ids_of(self, session: Session) -> list[str]:
        """The ids of the messages ``session``'s transaction holds (what COMMIT writes)."""
        ids: list[str] = session.info.get(IDS_KEY, [])
        return list(ids)

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A short transaction of its own, outside any unit (a SAVEPOINT under ``isolated()``).

        Under ``isolated()`` only the thread that entered it may run one, as for units: the
        test's connection cannot be shared with a relay thread.
        """
        isolation = self.db.runtime.isolation
        if isolation is not None:
            if isolation.thread != threading.get_ident():
                raise UnitOfWorkError(
                    "flask_uow.testing.isolated() holds one connection for the thread that "
                    "entered it, and an outbox transaction of another thread (a relay thread) "
                    "cannot share it. Relay from the test's thread (db.outbox.relay_once()), "
                    "or run threaded code under test without isolated()."
                )
            connection = isolation.connection
            with connection.begin_nested():
                yield connection
            return
        with self.db.engine.begin() as connection:
            yield connection

    def record(self, recorder: Callable[[list[Message]], object]) -> Callable[[], None]:
        """Call ``recorder`` with each committed transaction's messages; returns an undo."""
        self._recorders.append(recorder)
        return lambda: self._recorders.remove(recorder)


def _sync_session(unit: UnitOfWork) -> Session:
    session: Any = unit.session
    return getattr(session, "sync_session", session)  # type: ignore[no-any-return]


def _trace_headers() -> dict[str, str]:
    from ._trace import current_headers

    return current_headers()
