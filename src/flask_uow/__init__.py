"""Units of work for SQLAlchemy sessions in Flask apps and plain Python.

A unit of work commits on success, rolls back on any error, always closes its session,
and hands data access code the current session through ``db.session``.

Importing this package imports nothing else: each name below is loaded on first use, so
``import flask_uow`` (and the pytest plugin) costs nothing until it is used, and the core
never imports Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:
    from ._aio import AsyncUnitSession
    from ._database import Database
    from ._errors import (
        CommitOutcomeUnknown,
        NoActiveUnitOfWork,
        ReadOnlyViolation,
        UnexpectedRollback,
        UnitOfWorkError,
        UnitOfWorkWarning,
        UnitTimeout,
    )
    from ._legacy_query import Query, QueryProperty
    from ._lifecycle import Outcome, UnitKind, UnitState
    from ._model import Model
    from ._propagation import Propagation
    from ._retry import is_transient
    from ._session import SessionProxy, UnitSession
    from ._stats import UnitStats
    from ._unit import AsyncUnit, UnitOfWork
    from ._version import __version__ as __version__
    from .pagination import KeysetPage, Pagination

_EXPORTS = {
    "AsyncUnit": "._unit",
    "AsyncUnitSession": "._aio",
    "CommitOutcomeUnknown": "._errors",
    "Database": "._database",
    "KeysetPage": ".pagination",
    "Model": "._model",
    "NoActiveUnitOfWork": "._errors",
    "Outcome": "._lifecycle",
    "Pagination": ".pagination",
    "Propagation": "._propagation",
    "Query": "._legacy_query",
    "QueryProperty": "._legacy_query",
    "ReadOnlyViolation": "._errors",
    "SessionProxy": "._session",
    "UnexpectedRollback": "._errors",
    "UnitKind": "._lifecycle",
    "UnitOfWork": "._unit",
    "UnitOfWorkError": "._errors",
    "UnitOfWorkWarning": "._errors",
    "UnitTimeout": "._errors",
    "UnitSession": "._session",
    "UnitState": "._lifecycle",
    "UnitStats": "._stats",
    "__version__": "._version",  # read from the package metadata on first use
    "is_transient": "._retry",
}

__all__ = [
    "AsyncUnit",
    "AsyncUnitSession",
    "CommitOutcomeUnknown",
    "Database",
    "KeysetPage",
    "Model",
    "NoActiveUnitOfWork",
    "Outcome",
    "Pagination",
    "Propagation",
    "Query",
    "QueryProperty",
    "ReadOnlyViolation",
    "SessionProxy",
    "UnexpectedRollback",
    "UnitKind",
    "UnitOfWork",
    "UnitOfWorkError",
    "UnitOfWorkWarning",
    "UnitTimeout",
    "UnitSession",
    "UnitState",
    "UnitStats",
    "is_transient",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
