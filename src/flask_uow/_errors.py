"""Exceptions raised by flask-uow."""

from __future__ import annotations


class UnitOfWorkError(RuntimeError):
    """A unit of work was used in a way that cannot keep the transaction correct.

    The message always says what to change.
    """


class NoActiveUnitOfWork(UnitOfWorkError):
    """Code asked for the current session (or a MANDATORY unit) outside any unit of work."""


class UnexpectedRollback(UnitOfWorkError):
    """The transaction was rolled back although the outermost unit was leaving normally.

    A joined unit failed or called ``set_rollback()``, which dooms the transaction it joined.
    The rollback already happened; this error only makes sure it is never silent.
    """


class ReadOnlyViolation(UnitOfWorkError):
    """A read-only unit tried to write, or a read-write unit tried to join a read-only one."""
