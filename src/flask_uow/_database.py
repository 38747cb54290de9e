"""The Database: engines, and the entry points to units of work over them."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ._decorate import transactional_wrapper
from ._engines import EngineVariants, create_engine, masked
from ._errors import NoActiveUnitOfWork, UnitOfWorkError
from ._frameworks import init_app
from ._propagation import Propagation
from ._query import QueryHelpers
from ._replicas import Replicas, make_token, parse_token
from ._runtime import Runtime
from ._session import SessionProxy, UnitSession, check_session_commit, check_session_options
from ._stats import UnitStats
from ._timeouts import Seconds, Timeouts
from ._unit import UnitOfWork, current_unit, why_no_session

if TYPE_CHECKING:
    from flask import Flask
    from quart import Quart
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ._aio import AsyncUnitSession
    from .outbox import Outbox

P = ParamSpec("P")
R = TypeVar("R")


class Database(QueryHelpers):
    """Engines plus units of work over them: the one object a project shares.

    ``Database(url)`` works in any script or worker; ``Database()`` plus ``init_app(app)``
    takes the URL from each Flask app's config. Engines are created on first use.

    Open transactions with ``with db.unit_of_work():`` or ``@db.transactional``; data
    access code reads the current unit's session from ``db.session``.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine_options: Mapping[str, Any] | None = None,
        session_options: Mapping[str, Any] | None = None,
        metadata: sa.MetaData | None = None,
        sqlite_foreign_keys: bool = True,
        sqlite_wal: bool = True,
        replicas: Sequence[str | URL] | Replicas | None = None,
        statement_timeout: Seconds | None = None,
        lock_timeout: Seconds | None = None,
        warn_idle_ms: float | None = None,
        async_url: str | URL | None = None,
        session_commit: str = "raise",
    ) -> None:
        self.url: URL | None = sa.make_url(url) if url is not None else None
        """The URL used outside a Flask app context, or None when apps provide it."""
        self.async_url: URL | None = sa.make_url(async_url) if async_url is not None else None
        """The URL async units use; None derives it from ``url`` (see docs/async.md)."""
        self.engine_options: dict[str, Any] = dict(engine_options or {})
        """Keyword arguments for ``sqlalchemy.create_engine`` (apps add UOW_ENGINE_OPTIONS)."""
        self.metadata = metadata
        self.sqlite_foreign_keys = sqlite_foreign_keys
        """Whether SQLite enforces foreign keys (turn off only for legacy schemas)."""
        self.sqlite_wal = sqlite_wal
        """Whether a SQLite database file journals in WAL mode (see docs/sqlite.md)."""
        self.session_class: type[UnitSession] = type(
            "UnitSession", (UnitSession,), {"__module__": __name__}
        )
        """The Session subclass of this Database's units: listen to it for their events."""
        self._default: EngineVariants | None = None
        self._default_async: EngineVariants | None = None
        self._lock = threading.Lock()
        self._runtime = Runtime(
            f"flask_uow_units_{id(self):x}",
            self.session_class,
            check_session_options(session_options or {}),
            self._default_engines,
            self._default_async_engines,
        )
        self._proxy = SessionProxy(self.session_class, self._resolve_session)
        self.session_commit = session_commit
        if replicas is not None and not isinstance(replicas, Replicas):
            replicas = Replicas(replicas, self.engine_options) if replicas else None
        self._runtime.replicas = replicas
        self.set_timeouts(statement_timeout=statement_timeout, lock_timeout=lock_timeout)
        self.warn_idle_ms: float | None = None
        """Threshold of the idle-in-transaction warning in milliseconds, or None when off."""
        if warn_idle_ms is not None:
            self.warn_idle(warn_idle_ms)

    @property
    def metadata(self) -> sa.MetaData | None:
        """The MetaData that ``create_all()``, ``drop_all()`` and Alembic act on; setting it
        adds the outbox's tables to it (see docs/outbox.md), which costs no unit anything."""
        return self._metadata

    @metadata.setter
    def metadata(self, metadata: sa.MetaData | None) -> None:
        if metadata is not None:
            from .outbox._tables import OutboxTables  # loads the tables, not the outbox

            OutboxTables(metadata)
        self._metadata = metadata

    @property
    def replicas(self) -> Replicas | None:
        """The read replicas read-only outermost units use here (see docs/replicas.md).

        Inside a Flask app context, those of the app's ``UOW_REPLICA_URLS`` if it set any;
        otherwise ``own_replicas``.
        """
        integration = self._runtime.integration
        if integration is not None:
            replicas = integration.current_replicas()
            if replicas is not None:
                return replicas
        return self._runtime.replicas

    @property
    def own_replicas(self) -> Replicas | None:
        """The replicas given to ``Database(replicas=...)``, used outside apps that set any."""
        return self._runtime.replicas

    def causal_token(self) -> str:
        """An opaque string standing for the writes this thread or task has committed.

        Hand it to another process (a background job, a client) and open a unit there with
        ``unit_of_work(read_only=True, after=token)``: it sees those writes, whichever
        replica it runs on. Without replicas the token is valid and asks for nothing.
        """
        replicas = self.replicas
        return replicas.token() if replicas is not None else make_token(None)

    def set_timeouts(
        self, *, statement_timeout: Seconds | None = None, lock_timeout: Seconds | None = None
    ) -> None:
        """Set the timeouts of every outermost unit that does not set its own (see guide)."""
        self._runtime.default_timeouts = Timeouts.resolve(
            Timeouts.from_options(statement_timeout, lock_timeout), None
        )

    def warn_idle(self, threshold_ms: float | None) -> None:
        """Log a warning when a unit holds its connection idle longer than ``threshold_ms``.

        None turns the warning off. See ``flask_uow._idle`` and docs/observability.md.
        """
        from ._idle import configure_idle_warning

        configure_idle_warning(self._runtime, threshold_ms)
        self.warn_idle_ms = threshold_ms

    def __repr__(self) -> str:
        where = masked(self.url) if self.url is not None else "no URL"
        return f"<Database {where}>"

    @property
    def runtime(self) -> Runtime:
        """The state this Database's units share, for integrations (Flask, testing)."""
        return self._runtime

    @property
    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for each unit's Session; ``expire_on_commit`` defaults to False."""
        return self._runtime.session_options

    @session_options.setter
    def session_options(self, options: Mapping[str, Any]) -> None:
        self._runtime.session_options = check_session_options(options)

    @property
    def session_commit(self) -> str:
        """What ``session.commit()`` / ``rollback()`` do inside a unit: ``"raise"`` (the
        default) or ``"savepoint"`` (see ``UnitSession``); ``UOW_SESSION_COMMIT`` in Flask."""
        return self.session_class.flask_uow_session_commit

    @session_commit.setter
    def session_commit(self, mode: str) -> None:
        self.session_class.flask_uow_session_commit = check_session_commit(mode)

    # -- engines -----------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The engine for the current Flask app, or for ``url`` outside an app context."""
        return self._runtime.engines().engine

    def _default_engines(self) -> EngineVariants:
        default = self._default
        if default is None:
            default = self._create_default()
        return default

    def _create_default(self) -> EngineVariants:
        if self.url is None:
            if self._runtime.integration is not None:
                raise UnitOfWorkError(
                    "This Database takes its URL from the app it was registered with (init_app), "
                    "and no app context is active. Push one first: 'with app.app_context():' in "
                    "Flask, 'async with app.app_context():' in Quart; or give Database(url) a URL "
                    "to use outside apps."
                )
            raise UnitOfWorkError(
                "This Database has no URL. Pass one (Database('sqlite:///app.db')) or call "
                "db.init_app(app) and work inside an app context."
            )
        with self._lock:
            if self._default is None:
                engine = create_engine(
                    self.url,
                    self.engine_options,
                    sqlite_foreign_keys=self.sqlite_foreign_keys,
                    sqlite_wal=self.sqlite_wal,
                )
                self._default = EngineVariants(engine, replicas=self._runtime.replicas)
                self._runtime.default = self._default
            return self._default

    def _default_async_engines(self) -> EngineVariants:
        default = self._default_async
        if default is None:
            default = self._create_default_async()
        return default

    def _create_default_async(self) -> EngineVariants:
        from ._aio import AsyncEngineVariants, async_url

        url = self.async_url
        if url is None:
            if self.url is None:
                self._create_default()  # raises the error that says where URLs come from
                raise AssertionError("unreachable")
            url = async_url(self.url)
        with self._lock:
            if self._default_async is None:
                engine = create_engine(
                    url,
                    self.engine_options,
                    sqlite_foreign_keys=self.sqlite_foreign_keys,
                    sqlite_wal=self.sqlite_wal,
                    asynchronous=True,
                )
                self._default_async = AsyncEngineVariants(engine)
            return self._default_async

    @property
    def async_engine(self) -> AsyncEngine:
        """The AsyncEngine async units use (created on first use from ``async_url`` or ``url``)."""
        from ._aio import AsyncEngineVariants

        engines = self._runtime.async_engines()
        assert isinstance(engines, AsyncEngineVariants)
        return engines.async_engine

    async def dispose_async(self) -> None:
        """Close every pooled connection of every engine, async ones included.

        ``dispose()`` closes the sync engines only: closing an async driver's connection
        takes the event loop. Call this one at the end of an async program (or test); it
        waits for the outbox's threads (see ``dispose()``) in a worker thread.
        """
        from ._aio import AsyncEngineVariants

        if "_outbox" in self.__dict__:  # created: disposing never creates the outbox
            await asyncio.to_thread(self.__dict__["_outbox"].close)
        self.dispose()
        engines = [self._default_async] if self._default_async is not None else []
        integration = self._runtime.integration
        created = getattr(integration, "created_async_engines", None)
        if created is not None:
            engines.extend(created())
        for variants in engines:
            assert isinstance(variants, AsyncEngineVariants)
            await variants.async_engine.dispose()

    def create_all(self) -> None:
        """Create every table of ``metadata`` that does not exist yet (in its own transaction).

        Refused while a unit of this thread is open: see ``drop_all()``.
        """
        self._refuse_inside_unit("create_all")
        self._require_metadata("create_all").create_all(self.engine)

    def drop_all(self) -> None:
        """Drop every table of ``metadata`` that exists (in its own transaction).

        Refused while a unit of this thread is open: the DDL runs on another connection
        and would wait for that unit's locks (forever on PostgreSQL), or fail on SQLite.
        """
        self._refuse_inside_unit("drop_all")
        self._require_metadata("drop_all").drop_all(self.engine)

    def _refuse_inside_unit(self, what: str) -> None:
        unit = self.current
        if unit is not None:
            raise UnitOfWorkError(
                f"db.{what}() was called while the unit of work opened at {unit.opened_at} "
                "is still open in this thread. The DDL runs in a transaction of its own on "
                "another connection and would wait for that unit's locks, forever on "
                "PostgreSQL. End the unit first: in a unittest TestCase, end the unit that "
                "setUp opened before tearDown drops the tables (or use "
                "flask_uow.testing.isolated(db), which rolls back each test)."
            )

    def dispose(self) -> None:
        """Close every pooled connection of every engine this Database created, and end the
        outbox's threads (``Outbox.close()``) once what they were handed is delivered.

        Units still running keep their connections until they end. Nothing committed is
        lost: what the outbox does not deliver in time (30 s per lane) stays in its table
        for a relay. Engines reconnect and the outbox's threads start again on next use, so
        this is safe after a fork or in test teardown.
        """
        if "_outbox" in self.__dict__:  # created: disposing never creates the outbox
            self.__dict__["_outbox"].close()
        engines = [self._default] if self._default is not None else []
        integration = self._runtime.integration
        if integration is not None:
            engines.extend(integration.created_engines())
        for variants in engines:
            assert variants is not None
            variants.engine.dispose()
        if integration is not None:
            integration.dispose()
        if self._runtime.replicas is not None:
            self._runtime.replicas.dispose()

    def _require_metadata(self, what: str) -> sa.MetaData:
        if self.metadata is None:
            raise UnitOfWorkError(
                f"{what}() needs to know your tables: pass metadata=Base.metadata to Database()."
            )
        return self.metadata

    # -- web apps -------------------------------------------------------------------------------

    def init_app(self, app: Flask | Quart) -> None:
        """Register this Database with a Flask or Quart app (see the Flask integration docs).

        Reads the ``UOW_*`` keys from ``app.config``, adds the ``flask uow`` commands and
        ``db`` to ``flask shell``, and rolls back any unit still open when an app context
        ends. With ``UOW_PER_REQUEST``, each request runs in one unit of work.

        The app goes to the framework layer that serves it, found through the one seam
        between the core and web frameworks (``flask_uow._frameworks``).
        """
        init_app(self, app)

    # -- units of work -----------------------------------------------------------------------

    def unit_of_work(
        self,
        *,
        propagation: Propagation = Propagation.REQUIRED,
        read_only: bool = False,
        isolation_level: str | None = None,
        after: str | None = None,
        statement_timeout: Seconds | None = None,
        lock_timeout: Seconds | None = None,
    ) -> UnitOfWork:
        """A new unit of work, to be used once in a ``with`` statement.

        ``with db.unit_of_work() as uow:`` commits when the block ends normally, rolls back
        when it raises (any exception, re-raised unchanged), and always closes the session.
        ``propagation`` says what happens when a unit is already active (see
        ``Propagation``); ``read_only=True`` ends with ROLLBACK and refuses writes;
        ``isolation_level`` applies to the transaction of an outermost unit, and so do
        ``statement_timeout`` and ``lock_timeout`` (seconds or a ``timedelta``; None takes
        the Database's default, 0 turns it off): when one expires the transaction rolls back
        and ``UnitTimeout`` is raised. Units that join a transaction keep its timeouts.
        ``after`` is a token from ``causal_token()``: a read-only outermost unit then runs on
        a replica that has replayed the writes it stands for, or on the primary.
        """
        caller = sys._getframe(1)
        if statement_timeout is None and lock_timeout is None and after is None:
            return UnitOfWork(
                self._runtime,
                propagation=propagation,
                read_only=read_only,
                isolation_level=isolation_level,
                site=(caller.f_code, caller.f_lasti),
            )
        unit = UnitOfWork(
            self._runtime,
            propagation=propagation,
            read_only=read_only,
            isolation_level=isolation_level,
            site=(caller.f_code, caller.f_lasti),
            statement_timeout=statement_timeout,
            lock_timeout=lock_timeout,
        )
        if after is not None:
            unit.after = parse_token(after)
        return unit

    @overload
    def transactional(
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def transactional(self, func: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def transactional(
        self,
        /,
        *,
        propagation: Propagation = ...,
        read_only: bool = ...,
        isolation_level: str | None = ...,
        retries: int = ...,
        statement_timeout: Seconds | None = ...,
        lock_timeout: Seconds | None = ...,
        retry_lock_timeouts: bool = ...,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def transactional(
        self,
        func: Callable[P, R] | None = None,
        /,
        *,
        propagation: Propagation = Propagation.REQUIRED,
        read_only: bool = False,
        isolation_level: str | None = None,
        retries: int = 0,
        statement_timeout: Seconds | None = None,
        lock_timeout: Seconds | None = None,
        retry_lock_timeouts: bool = False,
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Run each call of the decorated function in a unit of work.

        The call commits when the function returns (from any ``return``), and rolls back
        and re-raises when it raises. Options are those of ``unit_of_work()``, plus
        ``retries``: when an outermost unit fails with a transient error (deadlock,
        serialization failure, lock timeout, SQLite "database is locked", a connection lost
        before COMMIT), the function runs again in a fresh unit up to ``retries`` more times
        with jittered exponential backoff. Hooks of failed attempts never run. A call that
        joins an active unit never retries on its own: the outermost unit decides. A
        ``UnitTimeout`` from this unit's own ``lock_timeout`` is retried only with
        ``retry_lock_timeouts=True``; a statement timeout never is.

        Works on functions, methods and staticmethods, keeping name, docstring and type.
        On an ``async def`` each call runs in an async unit (``async with``): its session
        is an ``AsyncSession``, retries wait with ``asyncio.sleep``.
        """
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            return transactional_wrapper(
                self._runtime,
                function,
                propagation=propagation,
                read_only=read_only,
                isolation_level=isolation_level,
                retries=retries,
                statement_timeout=statement_timeout,
                lock_timeout=lock_timeout,
                retry_lock_timeouts=retry_lock_timeouts,
            )

        if func is not None:
            return decorate(func)
        return decorate

    @property
    def current(self) -> UnitOfWork | None:
        """The innermost active unit of work of this thread, or None outside any unit.

        In a context copied from another thread, that thread's unit is not this thread's:
        ``current`` is None there.
        """
        return current_unit(self._runtime)

    @property
    def session(self) -> UnitSession:
        """The session of the innermost active unit in this thread, for data access code.

        Inside a unit this is that unit's Session. Outside any unit it is a
        ``SessionProxy`` that can be stored (``sqlalchemy_session = db.session``) and
        resolves to the current unit's session each time it is used; used with no unit
        active it raises ``NoActiveUnitOfWork``. There is never an implicit session.
        """
        unit = current_unit(self._runtime)
        if unit is not None:
            return unit.session
        return cast(UnitSession, self._proxy)

    @property
    def async_session(self) -> AsyncUnitSession:
        """The AsyncSession of the innermost async unit of this task: ``db.session`` typed
        for async code. Raises ``NoActiveUnitOfWork`` outside an async unit."""
        unit = current_unit(self._runtime)
        if unit is None:
            raise NoActiveUnitOfWork(why_no_session(self._runtime))
        return unit.async_session

    def _resolve_session(self) -> UnitSession:
        unit = current_unit(self._runtime)
        if unit is None:
            raise NoActiveUnitOfWork(why_no_session(self._runtime))
        return unit.session

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Register ``callback`` on the active unit: it runs once after the transaction COMMITs.

        A shortcut for ``db.current.on_commit(callback)`` that raises ``NoActiveUnitOfWork``
        outside any unit. See ``UnitOfWork.on_commit``.
        """
        self._require_current("on_commit").on_commit(callback)

    def on_rollback(self, callback: Callable[[], object]) -> None:
        """Register ``callback`` on the active unit: it runs once after the transaction ROLLs BACK.

        A shortcut for ``db.current.on_rollback(callback)`` that raises ``NoActiveUnitOfWork``
        outside any unit.
        """
        self._require_current("on_rollback").on_rollback(callback)

    def _require_current(self, what: str) -> UnitOfWork:
        unit = current_unit(self._runtime)
        if unit is None:
            raise NoActiveUnitOfWork(
                f"db.{what}() was called outside a unit of work, so there is no transaction "
                "whose end it could wait for. Call it from a @db.transactional function or "
                "inside 'with db.unit_of_work():'."
            )
        return unit

    @property
    def outbox(self) -> Outbox:
        """This Database's transactional outbox, created on first use (see docs/outbox.md).

        Its tables are in ``metadata`` from the start: ``create_all()`` and Alembic see them.
        """
        outbox: Outbox | None = self.__dict__.get("_outbox")
        if outbox is None:
            with self._lock:
                outbox = self.__dict__.get("_outbox")
                if outbox is None:
                    from .outbox import Outbox

                    outbox = self.__dict__["_outbox"] = Outbox(self)
        return outbox

    def enqueue(self, task: object, /, *args: Any, **kwargs: Any) -> str:
        """Enqueue ``task(*args, **kwargs)`` in the active unit's transaction; return its id.

        Shortcut for ``db.outbox.enqueue(task, args=args, kwargs=kwargs)``: sent after the
        unit commits, never if it rolls back. See ``Outbox.enqueue``.
        """
        return self.outbox.enqueue(task, args=args, kwargs=kwargs)

    @property
    def stats(self) -> UnitStats:
        """Counters of outermost units: started, committed, read-only, rolled back, retried.

        With replicas, also how many read-only units ran on a replica, fell back to the
        primary, or waited for a replica to catch up.
        """
        stats = self._runtime.counters.snapshot()
        replicas = self.replicas
        if replicas is None:
            return stats
        routed = replicas.stats
        return dataclasses.replace(
            stats,
            replica_reads=routed.reads_on_replicas,
            primary_fallbacks=routed.fallbacks_to_primary,
            replica_waits=routed.waits,
        )
