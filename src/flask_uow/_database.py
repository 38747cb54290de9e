"""The Database: engines, the ambient unit stack, and the entry points to units of work."""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from threading import get_ident
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import Session

from . import _flask
from ._decorate import transactional_wrapper
from ._engines import EngineVariants, create_engine, masked
from ._errors import NoActiveUnitOfWork, UnitOfWorkError
from ._propagation import Propagation
from ._replicas import Replicas, make_token
from ._session import UnitSession, holds_connection
from ._stats import Counters, UnitStats
from ._unit import UnitOfWork

if TYPE_CHECKING:
    from flask import Flask

P = ParamSpec("P")

R = TypeVar("R")

_SESSION_PARAMETERS = frozenset(inspect.signature(Session).parameters) - {"bind", "binds"}
_RESERVED_SESSION_OPTIONS = frozenset({"bind", "binds", "autobegin", "join_transaction_mode"})


@dataclass(frozen=True, slots=True)
class Isolation:
    """A connection that every outermost unit of one thread runs on (see ``flask_uow.testing``)."""

    connection: Connection
    thread: int


class Database:
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
        replicas: Sequence[str | URL] | Replicas | None = None,
    ) -> None:
        if replicas is not None and not isinstance(replicas, Replicas):
            replicas = Replicas(replicas, engine_options) if replicas else None
        self.replicas: Replicas | None = replicas
        """Read replicas for read-only outermost units (see docs/replicas.md), or None."""
        self.url: URL | None = sa.make_url(url) if url is not None else None
        """The URL used outside a Flask app context, or None when apps provide it."""
        self.engine_options: dict[str, Any] = dict(engine_options or {})
        """Keyword arguments for ``sqlalchemy.create_engine`` (apps add UOW_ENGINE_OPTIONS)."""
        self.session_options: dict[str, Any] = check_session_options(session_options or {})
        """Keyword arguments for each unit's Session; ``expire_on_commit`` defaults to False."""
        self.metadata = metadata
        """The MetaData that ``create_all()`` and ``drop_all()`` act on."""
        self._default: EngineVariants | None = None
        self._lock = threading.Lock()
        self._apps: WeakKeyDictionary[Flask, _flask.AppState] = WeakKeyDictionary()
        self._has_apps = False  # set once by init_app; cheaper to test than the dictionary
        self._last_app: tuple[weakref.ref[Flask], _flask.AppState] | None = None
        self._stack: ContextVar[tuple[UnitOfWork, ...]] = ContextVar(
            f"flask_uow_units_{id(self):x}", default=()
        )
        self._isolation: ContextVar[Isolation | None] = ContextVar(
            f"flask_uow_isolation_{id(self):x}", default=None
        )
        self._counters = Counters()

    def __repr__(self) -> str:
        where = masked(self.url) if self.url is not None else "no URL"
        apps = len(self._apps)
        return f"<Database {where}, {apps} Flask app{'s' if apps != 1 else ''}>"

    # -- engines -----------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The engine for the current Flask app, or for ``url`` outside an app context."""
        return self._variants().engine

    def _variants(self) -> EngineVariants:
        if self._has_apps:
            state = _flask.current_state(self, _flask.current_context())
            if state is not None:
                return state.variants()
        return self._default_variants()

    def _default_variants(self) -> EngineVariants:
        default = self._default
        if default is None:
            default = self._create_default()
        return default

    def _create_default(self) -> EngineVariants:
        if self.url is None:
            if self._apps:
                raise UnitOfWorkError(
                    "This Database takes its URL from a Flask app, and no app context is active. "
                    "Push one first: 'with app.app_context(): ...', or give Database(url) a URL "
                    "to use outside apps."
                )
            raise UnitOfWorkError(
                "This Database has no URL. Pass one (Database('sqlite:///app.db')) or call "
                "db.init_app(app) and work inside an app context."
            )
        with self._lock:
            if self._default is None:
                self._default = EngineVariants(create_engine(self.url, self.engine_options))
            return self._default

    def create_all(self) -> None:
        """Create every table of ``metadata`` that does not exist yet (in its own transaction)."""
        self._require_metadata("create_all").create_all(self.engine)

    def drop_all(self) -> None:
        """Drop every table of ``metadata`` that exists (in its own transaction)."""
        self._require_metadata("drop_all").drop_all(self.engine)

    def dispose(self) -> None:
        """Close every pooled connection of every engine this Database created.

        Units still running keep their connections until they end. Engines reconnect on
        next use, so this is safe after a fork or in test teardown.
        """
        engines = [self._default] if self._default is not None else []
        engines.extend(state.created for state in list(self._apps.values()) if state.created)
        for variants in engines:
            assert variants is not None
            variants.engine.dispose()
        if self.replicas is not None:
            self.replicas.dispose()

    def _require_metadata(self, what: str) -> sa.MetaData:
        if self.metadata is None:
            raise UnitOfWorkError(
                f"{what}() needs to know your tables: pass metadata=Base.metadata to Database()."
            )
        return self.metadata

    # -- Flask -------------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register this Database with a Flask app (see the Flask integration docs).

        Reads ``UOW_DATABASE_URL``, ``UOW_ENGINE_OPTIONS``, ``UOW_SESSION_OPTIONS`` and
        ``UOW_PER_REQUEST`` from ``app.config``, adds the ``flask uow`` commands and ``db``
        to ``flask shell``, and rolls back any unit still open when an app context ends.
        """
        _flask.register(self, app)

    # -- units of work -----------------------------------------------------------------------

    def unit_of_work(
        self,
        *,
        propagation: Propagation = Propagation.REQUIRED,
        read_only: bool = False,
        isolation_level: str | None = None,
        after: str | None = None,
    ) -> UnitOfWork:
        """A new unit of work, to be used once in a ``with`` statement.

        ``with db.unit_of_work() as uow:`` commits when the block ends normally, rolls back
        when it raises (any exception, re-raised unchanged), and always closes the session.
        ``propagation`` says what happens when a unit is already active (see
        ``Propagation``); ``read_only=True`` ends with ROLLBACK and refuses writes;
        ``isolation_level`` applies to the connection of an outermost unit. ``after`` is a
        token from ``causal_token()``: a read-only outermost unit then runs on a replica that
        has replayed the writes it stands for, or on the primary.
        """
        return UnitOfWork(
            self,
            propagation=propagation,
            read_only=read_only,
            isolation_level=isolation_level,
            after=after,
        )

    def causal_token(self) -> str:
        """An opaque string standing for the writes this thread or task has committed.

        Hand it to another process (a background job, a client) and open a unit there with
        ``unit_of_work(read_only=True, after=token)``: it sees those writes, whichever
        replica it runs on. Without replicas the token is valid and asks for nothing.
        """
        return self.replicas.token() if self.replicas is not None else make_token(None)

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
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Run each call of the decorated function in a unit of work.

        The call commits when the function returns (from any ``return``), and rolls back
        and re-raises when it raises. Options are those of ``unit_of_work()``, plus
        ``retries``: when an outermost unit fails with a transient error (deadlock,
        serialization failure, lock timeout, SQLite "database is locked", a connection lost
        before COMMIT), the function runs again in a fresh unit up to ``retries`` more times
        with jittered exponential backoff. Hooks of failed attempts never run. A call that
        joins an active unit never retries on its own: the outermost unit decides.

        Works on functions, methods and staticmethods, keeping name, docstring and type.
        """
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            return transactional_wrapper(
                self,
                function,
                propagation=propagation,
                read_only=read_only,
                isolation_level=isolation_level,
                retries=retries,
            )

        if func is not None:
            return decorate(func)
        return decorate

    @property
    def current(self) -> UnitOfWork | None:
        """The innermost active unit of work in this thread, or None outside any unit."""
        return self._active(allow_foreign=False)

    @property
    def session(self) -> UnitSession:
        """The session of the innermost active unit in this thread, for data access code.

        There is never an implicit session: outside any unit this raises
        ``NoActiveUnitOfWork``.
        """
        unit = self._active(allow_foreign=False)
        if unit is None:
            raise NoActiveUnitOfWork(
                "db.session was used outside a unit of work, so there is no transaction to run "
                "in. Open one around the calling code: decorate the service function with "
                "@db.transactional, or wrap the call in 'with db.unit_of_work():'."
            )
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
        unit = self._active(allow_foreign=False)
        if unit is None:
            raise NoActiveUnitOfWork(
                f"db.{what}() was called outside a unit of work, so there is no transaction "
                "whose end it could wait for. Call it from a @db.transactional function or "
                "inside 'with db.unit_of_work():'."
            )
        return unit

    @property
    def stats(self) -> UnitStats:
        """Counters of outermost units: started, committed, rolled back, active, retried."""
        return self._counters.snapshot()

    # -- the ambient stack (used by UnitOfWork) ---------------------------------------------

    def _active(self, *, allow_foreign: bool) -> UnitOfWork | None:
        stack = self._stack.get()
        if not stack:
            return None
        unit = stack[-1]
        if unit._thread != get_ident():
            if allow_foreign:
                return None
            raise UnitOfWorkError(
                "The active unit of work was opened in another thread (this thread's context "
                "was copied from it), and a Session must not be shared between threads. Open a "
                "new unit here with propagation=Propagation.REQUIRES_NEW, or start the thread "
                "without copying the context."
            )
        return unit

    def _pop(self, unit: UnitOfWork) -> None:
        stack = self._stack.get()
        if stack and stack[-1] is unit:
            self._stack.set(stack[:-1])
        elif unit in stack:
            self._stack.set(tuple(other for other in stack if other is not unit))

    def _begin_outermost(self, unit: UnitOfWork) -> None:
        isolation = self._isolation.get()
        context = _flask.current_context() if self._has_apps else None
        if context is not None:
            _flask.note_app_context(unit, context)
        if isolation is None:
            # Resolve the engine now, so that a missing URL fails at entry, not at first query.
            state = _flask.current_state(self, context)
            unit._engines = engines = state.variants() if state else self._default_variants()
            if engines.is_sqlite and unit.propagation is Propagation.REQUIRES_NEW:
                self._refuse_sqlite_self_deadlock(unit, engines)
            if self.replicas is not None and not unit.read_only:
                self.replicas.watch_primary(engines.engine)
        elif isolation.thread != get_ident():
            raise UnitOfWorkError(
                "flask_uow.testing.isolated() holds one connection for the thread that entered "
                "it; units in other threads cannot share it. Run threaded code under test "
                "without isolated(), and clean up its data explicitly."
            )
        self._counters.count_start()

    def _committed(self, unit: UnitOfWork) -> None:
        # After an outermost read-write unit committed: its causal position, if it wrote.
        replicas = self.replicas
        if replicas is not None and unit._engines is not None:
            replicas.note_commit(unit._engines.engine)

    def _refuse_sqlite_self_deadlock(self, unit: UnitOfWork, engines: EngineVariants) -> None:
        # SQLite has one writer at a time, and a writer commits only once no other
        # connection holds a read transaction open. A read-write unit opened underneath a
        # unit that already holds a connection, in the same thread, would wait for a lock
        # its own thread holds, then fail. (An in-memory database has one connection per
        # thread, which cannot hold two transactions at all.)
        if unit.read_only and not engines.is_memory:
            return
        me = get_ident()
        for other in self._stack.get():
            if (
                other._thread == me
                and other._engines is engines
                and holds_connection(other._session)
            ):
                raise UnitOfWorkError(
                    "On SQLite a REQUIRES_NEW unit that writes cannot run inside another unit of "
                    "the same thread that already holds a transaction open: it would wait for a "
                    "lock its own thread holds. Run the independent work after the outer unit "
                    "ends (an on_commit hook is a good place), open it with read_only=True if it "
                    "only reads, or use PostgreSQL or MariaDB."
                )

    def _new_session(self, unit: UnitOfWork) -> UnitSession:
        isolation = self._isolation.get()
        if isolation is not None:
            session = UnitSession(
                bind=isolation.connection,
                join_transaction_mode="create_savepoint",
                **self.session_options,
            )
        else:
            engines = unit._engines
            assert engines is not None
            bind = None
            if unit.read_only and self.replicas is not None:
                bind = self.replicas.engine_for_read(
                    unit.after, isolation_level=unit.isolation_level
                ).engine
            if bind is None:
                bind = engines.for_unit(
                    read_only=unit.read_only, isolation_level=unit.isolation_level
                )
            session = UnitSession(bind=bind, **self.session_options)
        session.flask_uow_active = True
        session.flask_uow_read_only = unit.read_only
        return session


def check_session_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate Session options, adding flask-uow's defaults."""
    reserved = _RESERVED_SESSION_OPTIONS.intersection(options)
    if reserved:
        raise ValueError(
            f"Session option(s) {sorted(reserved)} are managed by flask-uow: each unit binds "
            "its session and begins its transaction itself. Remove them from session_options."
        )
    unknown = set(options) - _SESSION_PARAMETERS
    if unknown:
        raise ValueError(
            f"Unknown Session option(s) {sorted(unknown)}; session_options takes the keyword "
            "arguments of sqlalchemy.orm.Session."
        )
    merged = {"expire_on_commit": False, "close_resets_only": False}
    merged.update(options)
    return merged
