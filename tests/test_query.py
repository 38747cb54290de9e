"""Query helpers: get_or_404, first_or_404, one_or_404, paginate and paginate_keyset."""

from __future__ import annotations

import ast
import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import LargeBinary, Numeric, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.exceptions import NotFound

import flask_uow
from flask_uow import Database, Model, NoActiveUnitOfWork, Pagination

START = dt.datetime(2024, 1, 1, 12, 0, 0)


class Base(Model, DeclarativeBase):
    pass


class QueryPost(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    score: Mapped[int]
    created: Mapped[dt.datetime]


@pytest.fixture
def db(backend_url: str) -> Iterator[Database]:
    """A Database with ``count`` posts, ids 1..45, score = id % 7, one minute apart."""
    database = Database(backend_url, metadata=Base.metadata)
    database.drop_all()
    database.create_all()
    with database.unit_of_work():
        database.session.add_all(
            QueryPost(
                id=n, title=f"post {n:02}", score=n % 7, created=START + dt.timedelta(minutes=n)
            )
            for n in range(1, 46)
        )
    yield database
    database.drop_all()
    database.dispose()


def ids(posts: Iterable[QueryPost]) -> list[int]:
    return [post.id for post in posts]


BY_ID = sa.select(QueryPost).order_by(QueryPost.id)


# -- the 404 helpers ---------------------------------------------------------------------


def test_get_or_404_returns_the_row_with_that_primary_key(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        assert db.get_or_404(QueryPost, 3).title == "post 03"


def test_get_or_404_raises_not_found_with_the_description(db: Database) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(NotFound) as raised:
        db.get_or_404(QueryPost, 999, description="No such post.")
    assert raised.value.description == "No such post."


def test_get_or_404_passes_keyword_arguments_to_session_get(db: Database) -> None:
    with db.unit_of_work():
        loaded = db.session.get(QueryPost, 3)  # held: the identity map is weak
        db.session.execute(
            sa.update(QueryPost).where(QueryPost.id == 3).values(title="new"),
            execution_options={"synchronize_session": False},
        )
        assert db.get_or_404(QueryPost, 3) is loaded and loaded.title == "post 03"
        assert db.get_or_404(QueryPost, 3, populate_existing=True).title == "new"


def test_first_or_404_returns_the_first_scalar(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        post = db.first_or_404(sa.select(QueryPost).where(QueryPost.score == 3).order_by("id"))
    assert post.id == 3


def test_first_or_404_raises_not_found_when_nothing_matches(db: Database) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(NotFound):
        db.first_or_404(sa.select(QueryPost).where(QueryPost.score == 99))


def test_one_or_404_returns_the_only_row(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        assert db.one_or_404(sa.select(QueryPost.title).where(QueryPost.id == 5)) == "post 05"


@pytest.mark.parametrize("score", [99, 3], ids=["no row", "several rows"])
def test_one_or_404_raises_not_found_unless_exactly_one_row(db: Database, score: int) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(NotFound, match="Gone"):
        db.one_or_404(sa.select(QueryPost).where(QueryPost.score == score), description="Gone")


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.get_or_404(QueryPost, 1),
        lambda db: db.first_or_404(BY_ID),
        lambda db: db.one_or_404(BY_ID),
        lambda db: db.paginate(BY_ID),
        lambda db: db.paginate_keyset(BY_ID, order_by=[QueryPost.id]),
    ],
    ids=["get_or_404", "first_or_404", "one_or_404", "paginate", "paginate_keyset"],
)
def test_helpers_refuse_to_run_outside_a_unit_of_work(db: Database, call: object) -> None:
    assert callable(call)
    with pytest.raises(NoActiveUnitOfWork, match=r"@db\.transactional\(read_only=True\)"):
        call(db)


def test_helpers_load_in_the_callers_unit(db: Database) -> None:
    with db.unit_of_work():
        post = db.get_or_404(QueryPost, 1)
        post.title = "changed in the unit"
        assert db.paginate(BY_ID, per_page=1).items[0] is post
    with db.unit_of_work(read_only=True):
        assert db.session.get(QueryPost, 1).title == "changed in the unit"  # type: ignore[union-attr]


# -- paginate ----------------------------------------------------------------------------


def test_paginate_returns_the_requested_page_and_the_total(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID, page=2, per_page=10)
    assert ids(page) == list(range(11, 21))
    assert (page.total, page.pages, page.page, page.per_page) == (45, 5, 2, 10)
    assert (page.has_prev, page.prev_num, page.has_next, page.next_num) == (True, 1, True, 3)
    assert (page.first, page.last) == (11, 20)


def test_paginate_last_page_is_partial_and_has_no_next(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID, page=5, per_page=10)
    assert ids(page) == list(range(41, 46))
    assert (page.has_next, page.next_num, page.first, page.last) == (False, None, 41, 45)


def test_paginate_defaults_to_page_1_of_20_outside_a_request(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID)
    assert (page.page, page.per_page, ids(page)) == (1, 20, list(range(1, 21)))


def test_paginate_counts_a_filtered_select_without_its_order(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(sa.select(QueryPost).where(QueryPost.score == 0), per_page=2)
    assert page.total == 6 and page.pages == 3


def test_paginate_without_count_knows_no_total(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID, per_page=10, count=False)
    assert (page.total, page.pages, page.has_next) == (None, 0, False)
    assert len(page.items) == 10


def test_paginate_caps_per_page_at_max_per_page(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID, per_page=1000, max_per_page=15)
    assert page.per_page == 15 and len(page.items) == 15


@pytest.mark.parametrize(
    ("page", "per_page"), [(6, 10), (0, 10), (-1, 10), (1, 0)], ids=["past end", "0", "<0", "pp0"]
)
def test_paginate_raises_not_found_for_pages_that_cannot_exist(
    db: Database, page: int, per_page: int
) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(NotFound):
        db.paginate(BY_ID, page=page, per_page=per_page)


def test_paginate_without_error_out_falls_back_to_page_1_and_20_per_page(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        assert db.paginate(BY_ID, page=0, per_page=5, error_out=False).page == 1
        assert db.paginate(BY_ID, page=1, per_page=0, error_out=False).per_page == 20
        past = db.paginate(BY_ID, page=9, per_page=10, error_out=False)
    assert past.items == [] and past.total == 45


def test_an_empty_first_page_is_not_an_error(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(sa.select(QueryPost).where(QueryPost.score == 99))
    assert (page.items, page.total, page.pages, page.first, page.last) == ([], 0, 0, 0, 0)
    assert list(page.iter_pages()) == []


def test_next_and_prev_query_the_neighbouring_pages_keeping_the_total(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID, page=2, per_page=10)
        following, previous = page.next(), page.prev()
    assert ids(following) == list(range(21, 31)) and following.total == 45
    assert ids(previous) == list(range(1, 11)) and previous.total == 45


def test_next_needs_a_unit_of_work_when_it_is_called(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID, per_page=10)
    with pytest.raises(NoActiveUnitOfWork):
        page.next()


def make_page(page: int, pages: int) -> Pagination[int]:
    def no_fetch(_: int, __: bool) -> Pagination[int]:
        raise AssertionError("iter_pages must not query")

    return Pagination(
        items=[1], total=pages * 10, page=page, per_page=10, max_per_page=None, fetch=no_fetch
    )


@pytest.mark.parametrize(
    ("page", "pages", "expected"),
    [
        (7, 20, [1, 2, None, 5, 6, 7, 8, 9, 10, 11, None, 19, 20]),
        (1, 20, [1, 2, 3, 4, 5, None, 19, 20]),
        (20, 20, [1, 2, None, 18, 19, 20]),
        (3, 5, [1, 2, 3, 4, 5]),
        (1, 1, [1]),
    ],
)
def test_iter_pages_skips_pages_between_the_edges_and_the_current_page(
    page: int, pages: int, expected: list[int | None]
) -> None:
    assert list(make_page(page, pages).iter_pages()) == expected


def test_iter_pages_takes_the_widths_of_edges_and_middle() -> None:
    widths = {"left_edge": 1, "left_current": 1, "right_current": 1, "right_edge": 1}
    assert list(make_page(10, 20).iter_pages(**widths)) == [1, None, 9, 10, 11, None, 20]


# -- paginate in a Flask request ---------------------------------------------------------


@pytest.fixture
def app(db: Database) -> Flask:
    app = Flask(__name__)

    @app.get("/posts")
    @db.transactional(read_only=True)
    def posts() -> dict[str, object]:
        page = db.paginate(BY_ID, max_per_page=10)
        return {"ids": ids(page), "page": page.page, "per_page": page.per_page}

    @app.get("/posts/<int:post_id>")
    @db.transactional(read_only=True)
    def post(post_id: int) -> dict[str, object]:
        return {"title": db.get_or_404(QueryPost, post_id, description="No such post.").title}

    @app.get("/feed")
    @db.transactional(read_only=True)
    def feed() -> dict[str, object]:
        page = db.paginate_keyset(BY_ID, order_by=[QueryPost.id.desc()], per_page=3)
        return {"ids": ids(page), "next": page.next_cursor}

    return app


def test_paginate_reads_page_and_per_page_from_the_query_string(app: Flask) -> None:
    answer = app.test_client().get("/posts?page=3&per_page=4")
    assert answer.json == {"ids": [9, 10, 11, 12], "page": 3, "per_page": 4}


def test_paginate_caps_a_per_page_from_the_query_string(app: Flask) -> None:
    assert app.test_client().get("/posts?per_page=500").json["per_page"] == 10  # type: ignore[index]


@pytest.mark.parametrize("query", ["page=abc", "per_page=x", "page=0", "page=99"])
def test_a_bad_page_in_the_query_string_answers_404(app: Flask, query: str) -> None:
    assert app.test_client().get(f"/posts?{query}").status_code == 404


def test_get_or_404_answers_404_with_the_description(app: Flask) -> None:
    answer = app.test_client().get("/posts/999")
    assert answer.status_code == 404 and b"No such post." in answer.data


def test_keyset_pages_follow_the_after_query_argument(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/feed").json
    assert first is not None and first["ids"] == [45, 44, 43]
    second = client.get(f"/feed?after={first['next']}").json
    assert second is not None and second["ids"] == [42, 41, 40]
    assert client.get("/feed?after=not-a-cursor").status_code == 404


# -- paginate_keyset ---------------------------------------------------------------------


def walk(db: Database, select: sa.Select[Any], order_by: list[object]) -> list[int]:
    """Every id, page after page of 7, each page in a unit of its own."""
    seen: list[int] = []
    after = None
    while True:
        with db.unit_of_work(read_only=True):
            page = db.paginate_keyset(select, order_by=order_by, after=after, per_page=7)
        assert len(page.items) <= 7
        seen.extend(ids(page))
        if not page.has_next:
            return seen
        after = page.next_cursor


def test_keyset_pages_visit_every_row_once_in_ascending_order(db: Database) -> None:
    assert walk(db, BY_ID, [QueryPost.id]) == list(range(1, 46))


def test_keyset_pages_visit_every_row_once_in_descending_order(db: Database) -> None:
    assert walk(db, BY_ID, [QueryPost.created.desc(), QueryPost.id.desc()]) == list(
        range(45, 0, -1)
    )


def test_keyset_pages_follow_mixed_directions(db: Database) -> None:
    expected = sorted(range(1, 46), key=lambda n: (-(n % 7), n))
    assert walk(db, BY_ID, [QueryPost.score.desc(), QueryPost.id]) == expected


def test_keyset_pages_respect_the_where_clause(db: Database) -> None:
    select = sa.select(QueryPost).where(QueryPost.score == 2)
    assert walk(db, select, [QueryPost.score, QueryPost.id]) == [2, 9, 16, 23, 30, 37, 44]


def test_a_keyset_page_is_not_shifted_by_rows_inserted_before_it(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        first = db.paginate_keyset(BY_ID, order_by=[QueryPost.id], per_page=10)
    with db.unit_of_work():
        db.session.add(QueryPost(id=0, title="new", score=0, created=START))
    with db.unit_of_work(read_only=True):
        second = first.next()
    assert ids(second) == list(range(11, 21))


def test_the_last_keyset_page_has_no_next_cursor(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate_keyset(BY_ID, order_by=[QueryPost.id], per_page=45)
    assert len(page.items) == 45 and page.next_cursor is None and not page.has_next
    with pytest.raises(ValueError, match="last page"):
        page.next()


def test_a_keyset_cursor_of_another_ordering_is_not_found(db: Database) -> None:
    with db.unit_of_work(read_only=True):
        page = db.paginate_keyset(BY_ID, order_by=[QueryPost.id], per_page=5)
        cursor = page.next_cursor
        with pytest.raises(NotFound):
            db.paginate_keyset(BY_ID, order_by=[QueryPost.id.desc()], after=cursor)


@pytest.mark.parametrize("cursor", ["garbage", "W10", "!!!!", "eyJhIjoxfQ"])
def test_a_malformed_keyset_cursor_is_not_found_or_restarts_without_error_out(
    db: Database, cursor: str
) -> None:
    with db.unit_of_work(read_only=True):
        with pytest.raises(NotFound):
            db.paginate_keyset(BY_ID, order_by=[QueryPost.id], after=cursor)
        page = db.paginate_keyset(
            BY_ID, order_by=[QueryPost.id], after=cursor, per_page=3, error_out=False
        )
    assert ids(page) == [1, 2, 3] and page.cursor is None


def test_keyset_refuses_an_ordering_that_does_not_identify_rows(db: Database) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(ValueError, match="primary key"):
        db.paginate_keyset(BY_ID, order_by=[QueryPost.score])


def test_keyset_refuses_a_bare_column_instead_of_a_list(db: Database) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(ValueError, match="list of columns"):
        db.paginate_keyset(BY_ID, order_by=QueryPost.id)  # type: ignore[arg-type]


def test_keyset_reads_one_page_with_one_query(db: Database) -> None:
    statements: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with db.unit_of_work(read_only=True):
        page = db.paginate_keyset(BY_ID, order_by=[QueryPost.id], per_page=5)
        statements.clear()
        page.next()
    assert len(statements) == 1


class EventBase(DeclarativeBase):
    pass


class QueryEvent(EventBase):
    """Rows with keyset columns of every type a cursor can carry (and two it cannot)."""

    __tablename__ = "uow_query_event"
    __table_args__ = (UniqueConstraint("day", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date]
    at: Mapped[dt.time]
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    uid: Mapped[uuid.UUID] = mapped_column(unique=True)
    note: Mapped[str | None] = mapped_column(String(20))
    blob: Mapped[bytes] = mapped_column(LargeBinary(16))


EVENTS = sa.select(QueryEvent)


@pytest.fixture
def events(backend_url: str) -> Iterator[Database]:
    """A Database with 12 events, whose (day, at), amount and uid orders all differ from id's."""
    database = Database(backend_url, metadata=EventBase.metadata)
    database.drop_all()
    database.create_all()
    with database.unit_of_work():
        database.session.add_all(
            QueryEvent(
                id=n,
                day=dt.date(2024, 1, 1) + dt.timedelta(days=(n * 5) % 12 // 3),
                at=dt.time(8 + (n * 5) % 3, 30),
                amount=Decimal(n * 7 % 12) + Decimal("0.25"),
                uid=uuid.UUID(int=(n * 7919) % 104729),
                note=None,
                blob=bytes([n]),
            )
            for n in range(1, 13)
        )
    yield database
    database.drop_all()
    database.dispose()


def event_ids(db: Database, order_by: Sequence[Any], per_page: int = 5) -> list[int]:
    """Every event id, following next_cursor page after page."""
    seen: list[int] = []
    after = None
    while True:
        with db.unit_of_work(read_only=True):
            page = db.paginate_keyset(EVENTS, order_by=order_by, after=after, per_page=per_page)
        seen.extend(event.id for event in page.items)
        if not page.has_next:
            return seen
        after = page.next_cursor


def test_keyset_cursors_carry_date_time_decimal_and_uuid_values(events: Database) -> None:
    with events.unit_of_work(read_only=True):
        rows = events.session.scalars(EVENTS).all()
    expected = [
        row.id for row in sorted(rows, key=lambda r: (r.day, r.at, r.amount, r.uid, r.id))
    ]
    order_by = [QueryEvent.day, QueryEvent.at, QueryEvent.amount, QueryEvent.uid, QueryEvent.id]
    assert event_ids(events, order_by) == expected


def test_keyset_accepts_a_unique_column_alone_as_the_ordering(events: Database) -> None:
    with events.unit_of_work(read_only=True):
        rows = events.session.scalars(EVENTS).all()
    expected = [row.id for row in sorted(rows, key=lambda r: r.uid)]
    assert event_ids(events, [QueryEvent.uid.desc()]) == expected[::-1]


def test_keyset_accepts_the_columns_of_a_unique_constraint_as_the_ordering(
    events: Database,
) -> None:
    with events.unit_of_work(read_only=True):
        rows = events.session.scalars(EVENTS).all()
    expected = [row.id for row in sorted(rows, key=lambda r: (r.day, r.at))]
    assert event_ids(events, [QueryEvent.day, QueryEvent.at]) == expected


def test_keyset_refuses_part_of_a_unique_constraint_as_the_ordering(events: Database) -> None:
    with events.unit_of_work(read_only=True), pytest.raises(ValueError, match="identify a row"):
        events.paginate_keyset(EVENTS, order_by=[QueryEvent.day])


def test_keyset_refuses_a_null_key_in_a_row_and_names_the_column(events: Database) -> None:
    with events.unit_of_work(read_only=True), pytest.raises(ValueError) as raised:
        events.paginate_keyset(EVENTS, order_by=[QueryEvent.note, QueryEvent.id], per_page=2)
    assert "NULL in the order_by column" in str(raised.value) and "note" in str(raised.value)


def test_keyset_refuses_a_key_type_a_cursor_cannot_carry_and_lists_those_it_can(
    events: Database,
) -> None:
    with events.unit_of_work(read_only=True), pytest.raises(ValueError) as raised:
        events.paginate_keyset(EVENTS, order_by=[QueryEvent.blob, QueryEvent.id], per_page=2)
    assert "cannot put a bytes value" in str(raised.value) and "UUID" in str(raised.value)


def test_keyset_refuses_nulls_first_orderings(db: Database) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(ValueError, match="NULLS FIRST"):
        db.paginate_keyset(BY_ID, order_by=[QueryPost.id.asc().nulls_first()])


def test_keyset_refuses_order_by_items_that_are_not_columns(db: Database) -> None:
    with db.unit_of_work(read_only=True), pytest.raises(ValueError, match="must be columns"):
        db.paginate_keyset(BY_ID, order_by=["id"])


@pytest.mark.parametrize("value", [{"bogus": "1"}, {"date": 20240101}, [1, 2]])
def test_a_keyset_cursor_with_a_tampered_value_is_not_found(db: Database, value: object) -> None:
    with db.unit_of_work(read_only=True):
        cursor = db.paginate_keyset(BY_ID, order_by=[QueryPost.id], per_page=5).next_cursor
        assert cursor is not None
        fingerprint, _ = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        tampered = base64.urlsafe_b64encode(json.dumps([fingerprint, [value]]).encode()).decode()
        with pytest.raises(NotFound):
            db.paginate_keyset(BY_ID, order_by=[QueryPost.id], after=tampered)


@pytest.mark.parametrize("query", ["page=abc", "per_page=x"])
def test_a_bad_page_in_the_query_string_falls_back_to_the_default_without_error_out(
    db: Database, query: str
) -> None:
    with Flask(__name__).test_request_context(f"/posts?{query}"), db.unit_of_work(read_only=True):
        page = db.paginate(BY_ID, error_out=False)
    assert (page.page, page.per_page, ids(page)) == (1, 20, list(range(1, 21)))


# -- no Flask in the core ----------------------------------------------------------------


@pytest.mark.parametrize("module", ["_query.py", "pagination.py", "_model.py"])
def test_query_helpers_import_nothing_from_flask_at_module_level(module: str) -> None:
    tree = ast.parse((Path(flask_uow.__file__).parent / module).read_text())
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] in {"flask", "werkzeug"}}


def test_an_empty_after_reads_the_first_page_whatever_the_request_says(
    app: Flask, db: Database
) -> None:
    with app.test_request_context("/feed?after=not-a-cursor"), db.unit_of_work(read_only=True):
        page = db.paginate_keyset(BY_ID, order_by=[QueryPost.id], after="", per_page=2)
    assert ids(page) == [1, 2]
