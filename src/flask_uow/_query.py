"""Query helpers on Database: get_or_404, first_or_404, one_or_404, paginate, paginate_keyset.

They run on the session of the unit of work that is active when they are called and never
open one: outside a unit they raise ``NoActiveUnitOfWork``. Nothing here imports a web
framework: a 404 is the framework's (werkzeug's ``NotFound`` for Flask and Quart), and
``page`` / ``per_page`` / ``after`` are read from the current request's query arguments;
both come from the framework layer through ``flask_uow._frameworks``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from ._errors import NoActiveUnitOfWork
from ._frameworks import not_found, request_args
from .pagination import KeysetPage, Pagination

if TYPE_CHECKING:
    from ._unit import UnitOfWork

E = TypeVar("E")

DEFAULT_PER_PAGE = 20


class QueryHelpers:
    """Flask-SQLAlchemy 3.1's query helpers, plus keyset pagination, for ``Database``.

    Each method runs in the active unit of work (``db.current``): it adds no transaction of
    its own, so what it loads belongs to the caller's unit and is committed or rolled back
    with it. Outside a unit each raises ``NoActiveUnitOfWork``.
    """

    if TYPE_CHECKING:

        @property
        def current(self) -> UnitOfWork | None: ...

    def _query_session(self, what: str) -> Session:
        unit = self.current
        if unit is None:
            raise NoActiveUnitOfWork(
                f"db.{what}() was called outside a unit of work, so there is no session to "
                "query with. Run it inside one: in a Flask app set UOW_PER_REQUEST = True, or "
                "decorate the view or service with @db.transactional(read_only=True), or wrap "
                "the call in 'with db.unit_of_work(read_only=True):'."
            )
        return unit.session

    def get_or_404(
        self,
        entity: type[E],
        ident: Any,
        *,
        description: str | None = None,
        **kwargs: Any,
    ) -> E:
        """``session.get(entity, ident, **kwargs)``, or a 404 ``NotFound`` when there is no row.

        Runs in the active unit of work; extra keyword arguments go to ``Session.get``.
        """
        value = self._query_session("get_or_404").get(entity, ident, **kwargs)
        if value is None:
            not_found(description)
        return value

    def first_or_404(self, statement: sa.Select[Any], *, description: str | None = None) -> Any:
        """The first column of the first row of ``statement``, or a 404 when that is None."""
        value = self._query_session("first_or_404").execute(statement).scalar()
        if value is None:
            not_found(description)
        return value

    def one_or_404(self, statement: sa.Select[Any], *, description: str | None = None) -> Any:
        """The only row's first column, or a 404 when there is no row or more than one."""
        session = self._query_session("one_or_404")
        try:
            return session.execute(statement).scalar_one()
        except (sa_exc.NoResultFound, sa_exc.MultipleResultsFound):
            not_found(description)

    def paginate(
        self,
        select: sa.Select[Any],
        *,
        page: int | None = None,
        per_page: int | None = None,
        max_per_page: int | None = None,
        error_out: bool = True,
        count: bool = True,
    ) -> Pagination[Any]:
        """One page of ``select`` by OFFSET and LIMIT, with the total from a COUNT query.

        As Flask-SQLAlchemy 3.1's ``db.paginate``: ``page`` and ``per_page`` default to the
        ``page`` and ``per_page`` query arguments during a request, else 1 and 20;
        ``max_per_page`` caps ``per_page`` (None: no cap, so set it when the client picks
        ``per_page``). With ``error_out`` (the default), a page or per_page that is not an
        integer or is below 1, or an empty page other than page 1, raises a 404
        ``NotFound``; without it they fall back to 1 and 20. Items are
        ``session.execute(select).unique().scalars()``: select entities, like
        ``select(User)``. ``count=False`` skips the COUNT query (``total`` is then None).
        Both queries run in the active unit of work.
        """
        self._query_session("paginate")  # outside a unit, say so before reading arguments

        def read(limit: int, offset: int) -> list[Any]:
            # The unit active now: next() and prev() may run in a later one, or in none.
            session = self._query_session("paginate")
            return list(session.execute(select.limit(limit).offset(offset)).unique().scalars())

        def total() -> int:
            return count_rows(self._query_session("paginate"), select)

        return offset_page(read, total, page, per_page, max_per_page, error_out, count)

    def paginate_keyset(
        self,
        select: sa.Select[Any],
        *,
        order_by: Sequence[Any],
        after: str | None = None,
        per_page: int | None = None,
        max_per_page: int | None = None,
        error_out: bool = True,
    ) -> KeysetPage[Any]:
        """The page of ``select`` that follows the cursor ``after``, sorted by ``order_by``.

        Keyset (cursor) pagination: instead of OFFSET, the query asks for rows whose
        ``order_by`` values come after those of the previous page's last row, so every page
        costs the same however deep it is, and rows inserted or deleted meanwhile never
        shift a page. ``order_by`` is a list of columns, each ascending or ``.desc()``;
        together they must identify a row, so end it with the primary key (a ValueError
        says so otherwise), and their values must never be NULL. Replaces any ORDER BY of
        ``select``.

        ``after`` is a ``next_cursor`` of an earlier page, or None for the first page; like
        ``per_page`` it defaults to the ``after`` / ``per_page`` query argument during a
        request (``after=""`` asks for the first page whatever the request says). A cursor
        made for another ``order_by``, or that is not a cursor at all, raises a 404
        ``NotFound`` with ``error_out`` (the default), or reads the first page without it.
        Items are the first column of each row, as in ``paginate()``. One query, in the
        active unit of work.
        """
        session = self._query_session("paginate_keyset")
        keys = keyset_keys(order_by)
        fingerprint = keyset_fingerprint(keys)
        per_page = per_page_argument(per_page, max_per_page, error_out)
        if after is None:
            args = request_args()
            after = args.get("after") if args is not None else None
        cursor = after or None
        values = decode_cursor(cursor, fingerprint, len(keys)) if cursor else None
        if cursor and values is None:
            if error_out:
                not_found("The page cursor is not valid for this list.")
            cursor = None
        statement = select.order_by(None).order_by(*(key.ordering for key in keys))
        if values is not None:
            statement = statement.where(keyset_after(keys, values))
        statement = statement.add_columns(*(key.expression for key in keys)).limit(per_page + 1)
        rows = session.execute(statement).unique().all()
        more = len(rows) > per_page
        rows = rows[:per_page]
        next_cursor = None
        if more:
            next_cursor = encode_cursor(fingerprint, tuple(rows[-1])[1:], keys)

        def fetch(following: str) -> KeysetPage[Any]:
            return self.paginate_keyset(
                select,
                order_by=order_by,
                after=following,
                per_page=per_page,
                max_per_page=max_per_page,
                error_out=False,
            )

        return KeysetPage(
            items=[row[0] for row in rows],
            per_page=per_page,
            cursor=cursor,
            next_cursor=next_cursor,
            fetch=fetch,
        )


def _int_argument(raw: str, default: int, error_out: bool) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        if error_out:
            not_found(None)
        return default


def offset_page(
    read: Callable[[int, int], list[E]],
    count_total: Callable[[], int],
    page: int | None,
    per_page: int | None,
    max_per_page: int | None,
    error_out: bool,
    count: bool,
) -> Pagination[E]:
    """One page by OFFSET and LIMIT: ``read(limit, offset)`` gives its items and
    ``count_total()`` the total (skipped when ``count`` is false), both in the caller's unit.

    Shared by ``db.paginate(select)`` and the legacy ``Query.paginate()``; the page's
    neighbours (``next()``, ``prev()``) are read the same way, without counting again.
    """
    page, per_page = page_arguments(page, per_page, max_per_page, error_out)
    items = read(per_page, (page - 1) * per_page)
    if not items and page != 1 and error_out:
        not_found(None)
    total = count_total() if count else None

    def fetch(other_page: int, other_error_out: bool) -> Pagination[E]:
        neighbour = offset_page(
            read, count_total, other_page, per_page, max_per_page, other_error_out, False
        )
        neighbour.total = total
        return neighbour

    return Pagination(
        items=items,
        total=total,
        page=page,
        per_page=per_page,
        max_per_page=max_per_page,
        fetch=fetch,
    )


def page_arguments(
    page: int | None, per_page: int | None, max_per_page: int | None, error_out: bool
) -> tuple[int, int]:
    """Page number and size: given, else from the request, else 1 and 20, then checked."""
    args = request_args()
    if page is None:
        page = _int_argument(args.get("page", "1"), 1, error_out) if args is not None else 1
    if page < 1:
        if error_out:
            not_found(None)
        page = 1
    return page, per_page_argument(per_page, max_per_page, error_out)


def per_page_argument(per_page: int | None, max_per_page: int | None, error_out: bool) -> int:
    """Page size: given, else the request's ``per_page``, else 20; capped and checked."""
    if per_page is None:
        args = request_args()
        per_page = DEFAULT_PER_PAGE
        if args is not None:
            per_page = _int_argument(
                args.get("per_page", str(DEFAULT_PER_PAGE)), DEFAULT_PER_PAGE, error_out
            )
    if max_per_page is not None:
        per_page = min(per_page, max_per_page)
    if per_page < 1:
        if error_out:
            not_found(None)
        per_page = DEFAULT_PER_PAGE
    return per_page


def count_rows(session: Session, select: sa.Select[Any]) -> int:
    """COUNT(*) over ``select`` as a subquery, without eager loads or ORDER BY."""
    subquery = select.options(lazyload("*")).order_by(None).subquery()
    total = session.execute(sa.select(sa.func.count()).select_from(subquery)).scalar()
    return int(total or 0)


# -- keyset pagination -------------------------------------------------------------------


@dataclass(frozen=True)
class KeysetKey:
    """One column of a keyset ordering and its direction."""

    expression: ColumnElement[Any]
    descending: bool

    @property
    def ordering(self) -> ColumnElement[Any]:
        return self.expression.desc() if self.descending else self.expression


def keyset_keys(order_by: Sequence[Any]) -> list[KeysetKey]:
    """Split ``order_by`` into columns and directions, refusing orders that are not total."""
    if isinstance(order_by, str | ColumnElement) or _is_clause(order_by) or not order_by:
        raise ValueError(
            "paginate_keyset() needs order_by as a list of columns that identify a row, "
            "ending with the primary key: order_by=[Post.created_at.desc(), Post.id.desc()]."
        )
    keys = []
    for item in order_by:
        expression = item.__clause_element__() if _is_clause(item) else item
        descending = False
        if isinstance(expression, UnaryExpression):
            if expression.modifier not in (operators.desc_op, operators.asc_op):
                raise ValueError(
                    f"paginate_keyset() cannot order by {expression}: NULLS FIRST / NULLS LAST "
                    "orderings are not supported. Keyset columns must be NOT NULL."
                )
            descending = expression.modifier is operators.desc_op
            expression = expression.element
        if not isinstance(expression, ColumnElement):
            raise ValueError(f"paginate_keyset() order_by items must be columns, got {item!r}.")
        keys.append(KeysetKey(expression, descending))
    if not _identifies_rows(keys):
        raise ValueError(
            "paginate_keyset() needs order_by columns that identify a row, or rows with equal "
            "values could be skipped or repeated between pages. End order_by with the primary "
            "key (or a unique column): order_by=[Post.created_at.desc(), Post.id.desc()]."
        )
    return keys


def _is_clause(item: object) -> bool:
    """True for ORM attributes (``Post.id``), which stand for a column without being one."""
    return not isinstance(item, ColumnElement) and hasattr(item, "__clause_element__")


def _identifies_rows(keys: Sequence[KeysetKey]) -> bool:
    columns = {
        column
        for key in keys
        for column in key.expression.proxy_set
        if isinstance(column, sa.Column)
    }
    for column in columns:
        if column.unique:
            return True
        table = column.table
        if isinstance(table, sa.Table):
            primary = set(table.primary_key.columns)
            if primary and primary <= columns:
                return True
            for constraint in table.constraints:
                if isinstance(constraint, sa.UniqueConstraint):
                    if set(constraint.columns) <= columns:
                        return True
    return False


def keyset_fingerprint(keys: Sequence[KeysetKey]) -> str:
    """A short digest of the ordering, so that a cursor only fits the list it came from."""
    text = "|".join(f"{key.expression}:{'d' if key.descending else 'a'}" for key in keys)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def keyset_after(keys: Sequence[KeysetKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """WHERE clause for the rows that sort after ``values``."""
    bound = [
        sa.literal(value, key.expression.type) for key, value in zip(keys, values, strict=True)
    ]
    directions = {key.descending for key in keys}
    if len(directions) == 1:
        # One direction: a row-value comparison, which PostgreSQL serves from an index.
        if len(keys) == 1:
            lhs: ColumnElement[Any] = keys[0].expression
            rhs: ColumnElement[Any] = bound[0]
        else:
            lhs = sa.tuple_(*(key.expression for key in keys))
            rhs = sa.tuple_(*bound)
        after: ColumnElement[bool] = lhs < rhs if directions == {True} else lhs > rhs
        return after
    # Mixed directions: (a > x) OR (a = x AND b < y) OR ...
    alternatives = []
    for index, key in enumerate(keys):
        equal = [keys[i].expression == bound[i] for i in range(index)]
        value = bound[index]
        beyond = key.expression < value if key.descending else key.expression > value
        alternatives.append(sa.and_(*equal, beyond))
    return sa.or_(*alternatives)


def _encode_value(value: Any, key: KeysetKey) -> Any:
    if value is None:
        raise ValueError(
            f"paginate_keyset(): a row has NULL in the order_by column {key.expression}. "
            "Keyset columns must be NOT NULL; order by a non-null column or a coalesce()."
        )
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    raise ValueError(
        f"paginate_keyset() cannot put a {type(value).__name__} value of {key.expression} in a "
        "cursor; order by columns of type int, str, float, bool, date, time, datetime, "
        "Decimal or UUID."
    )


_DECODERS = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": Decimal,
    "uuid": uuid.UUID,
}


def _decode_value(raw: Any) -> Any:
    if isinstance(raw, bool | int | float | str):
        return raw
    if isinstance(raw, dict) and len(raw) == 1:
        ((kind, text),) = raw.items()
        if kind in _DECODERS and isinstance(text, str):
            return _DECODERS[kind](text)
    raise ValueError(f"not a cursor value: {raw!r}")


def encode_cursor(fingerprint: str, values: Sequence[Any], keys: Sequence[KeysetKey]) -> str:
    """An opaque, URL-safe cursor holding the ordering's fingerprint and the last row's keys."""
    payload = [
        fingerprint,
        [_encode_value(value, key) for value, key in zip(values, keys, strict=True)],
    ]
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str, length: int) -> list[Any] | None:
    """The key values in ``cursor``, or None when it is not a cursor of this ordering."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        kind, raw_values = payload
        if kind != fingerprint or not isinstance(raw_values, list) or len(raw_values) != length:
            return None
        return [_decode_value(raw) for raw in raw_values]
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        return None
