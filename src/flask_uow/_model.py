"""``Model``: a declarative-base mixin that names tables from class names, as Flask-SQLAlchemy."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

_CAMEL_BOUNDARY = re.compile(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))")


class Model:
    """Mix into your ``DeclarativeBase`` to get ``__tablename__`` from the class name.

    ``class Base(Model, DeclarativeBase): pass`` makes a base whose mapped classes need no
    ``__tablename__``: ``UserAccount`` maps table ``user_account``, ``HTTPRequest``
    ``http_request``, following Flask-SQLAlchemy 3.1's rules. A name is generated only
    for a concrete class with a primary key of its own; ``__abstract__`` classes get none;
    a ``__tablename__`` you write, or a ``declared_attr``, wins; a subclass without a
    primary key column maps to its parent's table (single-table inheritance) and one with
    its own primary key gets a table of its own (joined-table inheritance).

    Each base class you make this way has its own ``MetaData``, so two applications (or a
    test suite) never share tables by accident. ``Model`` adds no ``query`` attribute and
    no session: queries go through ``db.session`` of the active unit of work.
    """

    __tablename__: Any
    __table__: Any
    metadata: sa.MetaData

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if _should_name(cls):
            cls.__tablename__ = snake_case(cls.__name__)
        super().__init_subclass__(**kwargs)
        # __table_cls__ returned None (single-table inheritance): use the parent's table.
        if (
            "__tablename__" not in cls.__dict__
            and "__table__" in cls.__dict__
            and cls.__dict__["__table__"] is None
        ):
            del cls.__table__

    @classmethod
    def __table_cls__(cls, *args: Any, **kwargs: Any) -> sa.Table | None:
        """Called by the declarative mapping to build the class's table.

        Returns None, and drops the generated name, for a subclass without a primary key
        column of its own: single-table inheritance.
        """
        name = args[0]
        schema = kwargs.get("schema")
        key = name if schema is None else f"{schema}.{name}"
        if key in cls.metadata.tables:
            return sa.Table(*args, **kwargs)
        for arg in args:
            if (isinstance(arg, sa.Column) and arg.primary_key) or isinstance(
                arg, sa.PrimaryKeyConstraint
            ):
                return sa.Table(*args, **kwargs)
        if not any("__table__" in base.__dict__ for base in cls.__mro__[1:-1]):
            # No parent has a table: let SQLAlchemy say that a primary key is missing.
            return sa.Table(*args, **kwargs)
        if "__tablename__" in cls.__dict__:
            del cls.__tablename__
        return None

    def __repr__(self) -> str:
        state = sa.inspect(self)
        if state.transient:
            where = f"transient {id(self):#x}"
        elif state.pending:
            where = f"pending {id(self):#x}"
        else:
            where = ", ".join(map(str, state.identity or ()))
        return f"<{type(self).__name__} {where}>"


def snake_case(name: str) -> str:
    """``CamelCase`` to ``snake_case`` as Flask-SQLAlchemy names tables: ``HTTPRequest`` ->
    ``http_request``, ``UserV2`` -> ``user_v2``."""
    return _CAMEL_BOUNDARY.sub(r"_\1", name).lower().lstrip("_")


def _should_name(cls: type) -> bool:
    """Whether a table name should be generated for ``cls`` (Flask-SQLAlchemy's rules)."""
    if cls.__dict__.get("__abstract__", False):
        return False
    if not issubclass(cls, orm.DeclarativeBase | orm.DeclarativeBaseNoMeta):
        return False
    if any(base in (orm.DeclarativeBase, orm.DeclarativeBaseNoMeta) for base in cls.__bases__):
        return False  # the declarative base itself
    for base in cls.__mro__:
        if "__tablename__" not in base.__dict__:
            continue
        if isinstance(base.__dict__["__tablename__"], orm.declared_attr):
            return False
        # A name set by this class, by an abstract class or by a plain mixin is used as is;
        # a name inherited from a mapped parent is the parent's, so this class gets its own.
        return not (
            base is cls
            or base.__dict__.get("__abstract__", False)
            or not issubclass(base, orm.DeclarativeBase | orm.DeclarativeBaseNoMeta)
        )
    return True
