"""``Query``: Flask-SQLAlchemy 3.1's methods on SQLAlchemy's legacy ``Query``, for ports.

Opt in where a ported app still uses the legacy API: ``query = QueryProperty(db)`` on the
declarative base for ``Model.query``, ``relationship(lazy="dynamic", query_class=Query)``,
or ``Database(session_options={"query_cls": Query})`` for ``db.session.query(...)``. Every
method runs its SQL in the session the query was made with: the active unit's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from ._frameworks import not_found
from ._query import offset_page
from ._session import SessionProxy
from .pagination import Pagination

if TYPE_CHECKING:
    from ._database import Database

T = TypeVar("T")
M = TypeVar("M")


class Query(orm.Query[T]):
    """SQLAlchemy's legacy ``Query`` with ``get_or_404``, ``first_or_404``, ``one_or_404``
    and ``paginate``, taking the arguments of Flask-SQLAlchemy 3.1's ``Query``."""

    def get_or_404(self, ident: Any, description: str | None = None) -> T:
        """``session.get()`` of the query's entity, or a 404 ``NotFound`` when there is none."""
        entity: Any = self.column_descriptions[0]["entity"]
        value = self.session.get(entity, ident)
        if value is None:
            not_found(description)
        return value  # type: ignore[no-any-return]

    def first_or_404(self, description: str | None = None) -> T:
        """``first()``, or a 404 ``NotFound`` when there is no row."""
        value = self.first()
        if value is None:
            not_found(description)
        return value

    def one_or_404(self, description: str | None = None) -> T:
        """``one()``, or a 404 ``NotFound`` when there is no row or more than one."""
        try:
            return self.one()
        except (sa_exc.NoResultFound, sa_exc.MultipleResultsFound):
            not_found(description)

    def paginate(
        self,
        *,
        page: int | None = None,
        per_page: int | None = None,
        max_per_page: int | None = None,
        error_out: bool = True,
        count: bool = True,
    ) -> Pagination[T]:
        """One page of this query by OFFSET and LIMIT, as ``db.paginate()`` pages a select.

        ``page`` and ``per_page`` default to the request's query arguments, else 1 and 20;
        with ``error_out`` a wrong page raises a 404. ``count=False`` skips the COUNT query.
        """
        def read(limit: int, offset: int) -> list[T]:
            return self.limit(limit).offset(offset).all()

        return offset_page(
            read, self.order_by(None).count, page, per_page, max_per_page, error_out, count
        )


class QueryProperty:
    """``Model.query`` for a ported app: ``query = QueryProperty(db)`` on the base class.

    Each use makes a ``Query`` (or ``query_cls``) of the class in the session of the unit
    active at that moment, as Flask-SQLAlchemy's ``Model.query`` does in the app context's
    session. Outside a unit it raises ``NoActiveUnitOfWork``: there is no session to use.
    """

    def __init__(self, db: Database, query_cls: type[Query[Any]] = Query) -> None:
        self.db = db
        self.query_cls = query_cls

    def __get__(self, instance: object, owner: type[M]) -> Query[M]:
        session = self.db.session
        if isinstance(session, SessionProxy):
            session = session()  # the current unit's session, or NoActiveUnitOfWork
        return self.query_cls(owner, session=session)

