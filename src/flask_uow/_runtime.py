"""What the units of one Database share: the ambient stack, counters, sessions and engines.

``Database`` owns one ``Runtime``. Units, the decorator, ``testing`` and framework
integrations talk to it through the public names below, never to the Database's or a unit's
private state.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from threading import get_ident
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Connection

from ._stats import Counters

if TYPE_CHECKING:
    from ._aio import AsyncUnitSession
    from ._engines import EngineVariants
    from ._replicas import Replicas
    from ._session import UnitSession
    from ._timeouts import Timeouts
    from ._unit import UnitOfWork


@dataclass(frozen=True, slots=True)
class PinnedConnection:
    """The connection every outermost unit runs on while ``flask_uow.testing.isolated()`` is
    active, and the thread allowed to use it (units of other threads are refused)."""

    connection: Connection
    thread: int
    async_connection: Any = None
    """The AsyncConnection of ``isolated_async()`` (whose sync face is ``connection``): async
    units run on it, sync units are refused; None for ``isolated()``, the other way round."""


class Integration(Protocol):
    """What a framework integration (Flask) tells the units of a Database."""

    def current_engines(self) -> EngineVariants | None:
        """The engines of the current app, or None to use the Database's own URL."""

    def current_scope(self) -> object | None:
        """An object naming the scope a unit is opened in (a Flask app context), or None."""

    def created_engines(self) -> list[EngineVariants]:
        """Every engine set the integration created, for ``Database.dispose()``."""

    def current_replicas(self) -> Replicas | None:
        """The read replicas the current app configured, or None to use the Database's."""

    def dispose(self) -> None:
        """Close what the integration created beyond engines (replicas' pools)."""


class AsyncIntegration(Integration, Protocol):
    """An integration that also serves async units (optional: Runtime checks for it)."""

    def current_async_engines(self) -> EngineVariants | None:
        """The async engines of the current app, or None to use the Database's own."""


class UnitObserver(Protocol):
    """Told when units of a Database begin and end (tracing, metrics, debug panels).

    Observers run synchronously in the unit's thread; they must be cheap and must not raise.
    With no observer registered, units pay one falsy check per event.
    """

    def unit_entered(self, unit: UnitOfWork) -> None:
        """``unit`` was entered: its kind and propagation are known."""

    def unit_ended(self, unit: UnitOfWork) -> None:
        """``unit`` ended: its outcome is known; its hooks run right after."""

    def unit_retrying(self, unit: UnitOfWork, error: BaseException, attempt: int) -> None:
        """``unit`` failed with a transient ``error``; attempt number ``attempt`` comes next."""


class Runtime:
    """The shared state behind one Database's units of work."""

    __slots__ = (
        "units",
        "counters",
        "session_class",
        "session_options",
        "default_engines",
        "default",
        "integration",
        "scope",
        "isolation",
        "observers",
        "replicas",
        "default_timeouts",
        "default_async_engines",
        "_async_session_class",
    )

    def __init__(
        self,
        name: str,
        session_class: type[UnitSession],
        session_options: dict[str, Any],
        default_engines: Callable[[], EngineVariants],
        default_async_engines: Callable[[], EngineVariants] | None = None,
    ) -> None:
        self.units: ContextVar[tuple[UnitOfWork, ...]] = ContextVar(name, default=())
        """The units entered in this context, innermost last; ended ones are ignored."""
        self.counters = Counters()
        self.session_class = session_class
        """The Session subclass every unit of this Database creates."""
        self.session_options = session_options
        self.default_engines = default_engines
        """Creates the engines used when no integration provides any (``Database(url)``)."""
        self.default: EngineVariants | None = None
        """Those engines, once created."""
        self.integration: Integration | None = None
        """Set by a framework integration (``init_app``)."""
        self.scope: Callable[[], object | None] | None = None
        """The integration's ``current_scope``, called as each unit is entered, so that its
        safety net can end the units a scope leaked."""
        self.isolation: PinnedConnection | None = None
        """The connection of ``flask_uow.testing.isolated()``: every thread sees it (see
        ``pin()``)."""
        self.observers: tuple[UnitObserver, ...] = ()
        """Told of every unit's entry, end and retry; see ``observe()``."""
        self.replicas: Replicas | None = None
        """Read replicas for read-only outermost units (``Database(replicas=...)``)."""
        self.default_timeouts: Timeouts | None = None
        """Statement and lock timeouts of units that set none (``Database(lock_timeout=)``)."""
        self.default_async_engines = default_async_engines
        """Async engines used when no integration provides any (``Database(url)``)."""
        self._async_session_class: type[AsyncUnitSession] | None = None

    def async_session_class(self) -> type[AsyncUnitSession]:
        """The AsyncSession subclass of async units, whose sync sessions are ``session_class``."""
        found = self._async_session_class
        if found is None:
            from ._aio import async_session_class

            found = self._async_session_class = async_session_class(self.session_class)
        return found

    def observe(self, observer: UnitObserver) -> None:
        """Tell ``observer`` about every unit of this Database from now on."""
        self.observers = (*self.observers, observer)

    def unobserve(self, observer: UnitObserver) -> None:
        """Stop telling ``observer``."""
        self.observers = tuple(other for other in self.observers if other is not observer)

    def engines(self) -> EngineVariants:
        """The engines a new outermost unit runs on: the current app's, else the default."""
        integration = self.integration
        if integration is not None:
            engines = integration.current_engines()
            if engines is not None:
                return engines
        return self.default_engines()

    def async_engines(self) -> EngineVariants:
        """The async engines a new outermost async unit runs on (created on first use)."""
        integration = self.integration
        if integration is not None:
            current = getattr(integration, "current_async_engines", None)
            if current is not None:
                engines: EngineVariants | None = current()
                if engines is not None:
                    return engines
        if self.default_async_engines is None:
            raise RuntimeError("This Database serves no async units.")
        return self.default_async_engines()

    def pin(self, connection: Connection, async_connection: Any = None) -> None:
        """Run every outermost unit on ``connection`` (its SAVEPOINTs) until ``unpin()``;
        only this thread's units may: those of other threads are refused."""
        self.isolation = PinnedConnection(connection, get_ident(), async_connection)

    def unpin(self) -> None:
        """Units open their own connections again."""
        self.isolation = None

    def attach(self, integration: Integration) -> None:
        """Let ``integration`` provide engines and scopes to this Database's units."""
        if self.integration is not None and self.integration is not integration:
            raise RuntimeError("A Database takes one framework integration.")
        self.integration = integration
        self.scope = integration.current_scope
