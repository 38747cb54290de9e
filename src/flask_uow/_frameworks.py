"""The one seam between the core and web frameworks: the core imports no framework.

A framework layer is an object registered under the ``flask_uow.frameworks`` entry-point
group of an installed distribution; flask-uow registers ``flask`` and ``quart``, both in
``flask_uow._flask_layer``. An entry's name is the top-level package of the app classes it
serves. ``Database.init_app(app)`` hands ``app`` to the layer named after the first class
of ``type(app).__mro__`` whose package has one (so a subclass of ``Flask`` in your own
package is a Flask app); the query helpers ask the layers for the current request's query
arguments and for the framework's 404 error. Loading a layer imports no framework: a layer
imports its framework when it is handed an app, or when that framework is already imported.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ._errors import UnitOfWorkError

if TYPE_CHECKING:
    from ._database import Database

GROUP = "flask_uow.frameworks"
"""The entry-point group framework layers register under."""

EXTENSION_KEY = "flask-uow"
"""The key of ``app.extensions`` under which an app keeps the Database it was registered with."""


class FrameworkLayer(Protocol):
    """What the core asks of a framework layer."""

    def init_app(self, db: Database, app: Any) -> None:
        """Register ``db`` with ``app``: config, request units, safety nets, CLI."""

    def request_args(self) -> Mapping[str, str] | None:
        """The query arguments of the current request, or None outside one."""

    def not_found(self, description: str | None) -> Exception:
        """The exception the framework answers with a 404 Not Found."""


@functools.cache
def _entries() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=GROUP):
        found.setdefault(entry.name, entry)
    return found


@functools.cache
def _load(name: str) -> FrameworkLayer:
    layer: FrameworkLayer = _entries()[name].load()
    return layer


def framework_of(app: object) -> str | None:
    """The name of the framework layer that serves ``app`` ("flask", "quart"), or None."""
    entries = _entries()
    for cls in type(app).__mro__:
        name = cls.__module__.partition(".")[0]
        if name in entries:
            return name
    return None


def init_app(db: Database, app: object) -> None:
    """Hand ``app`` to the framework layer that serves it."""
    name = framework_of(app)
    if name is None:
        known = ", ".join(sorted(_entries())) or "none: is flask-uow installed (pip install)?"
        raise UnitOfWorkError(
            f"init_app() takes an app of a web framework flask-uow serves (a Flask or a "
            f"Quart app), got {type(app).__qualname__!r}. Framework layers found: {known}."
        )
    _load(name).init_app(db, app)


def request_args() -> Mapping[str, str] | None:
    """The current request's query arguments, from the first layer that knows a request."""
    for name in _entries():
        args = _load(name).request_args()
        if args is not None:
            return args
    return None


def not_found(description: str | None) -> NoReturn:
    """Raise the web framework's 404 Not Found (werkzeug's ``NotFound`` for Flask and Quart)."""
    for name in _entries():
        raise _load(name).not_found(description)
    raise UnitOfWorkError(
        "No web framework layer is installed to answer 404 Not Found; install flask-uow with "
        "its Flask dependency."
    )
