"""Units of work for SQLAlchemy sessions in Flask apps and plain Python.

A unit of work commits on success, rolls back on any error, always closes its session,
and hands data access code the current session through ``db.session``.
"""

from ._database import Database
from ._errors import NoActiveUnitOfWork, ReadOnlyViolation, UnexpectedRollback, UnitOfWorkError
from ._flask import UnitOfWorkWarning
from ._model import Model
from ._propagation import Propagation
from ._stats import UnitStats
from ._unit import UnitOfWork
from .pagination import KeysetPage, Pagination

__all__ = [
    "Database",
    "KeysetPage",
    "Model",
    "NoActiveUnitOfWork",
    "Pagination",
    "Propagation",
    "ReadOnlyViolation",
    "UnexpectedRollback",
    "UnitOfWork",
    "UnitOfWorkError",
    "UnitOfWorkWarning",
    "UnitStats",
]
