"""``flask_uow.Query``: the legacy Query API of a ported app (``Model.query``, dynamic
relationships) with Flask-SQLAlchemy's ``paginate`` and ``*_or_404``, in the current unit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import sqlalchemy as sa
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, DynamicMapped, Mapped, mapped_column, relationship

from flask_uow import Database, Model, NoActiveUnitOfWork, Query, QueryProperty

db = Database(session_options={"query_cls": Query})


class Base(Model, DeclarativeBase):
    query = QueryProperty(db)


class Author(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    posts: DynamicMapped[Post] = relationship(
        lazy="dynamic", query_class=Query, order_by="Post.id"
    )


class Post(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(40))
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id"))


@pytest.fixture(scope="module")
def legacy_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file for the module: ``db`` (needed at class definition) keeps one URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('legacy')}/legacy.db"
    db.url = sa.make_url(url)
    return url


@pytest.fixture
def database(legacy_url: str) -> Iterator[Database]:
    engine = sa.create_engine(legacy_url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(Author), [{"id": 1, "name": "ada"}])
        connection.execute(
            sa.insert(Post), [{"title": f"post {n}", "author_id": 1} for n in range(1, 26)]
        )
    engine.dispose()
    yield db
    db.dispose()


def test_model_query_resolves_to_the_current_units_session(database: Database) -> None:
    with database.unit_of_work(read_only=True):
        assert Post.query.count() == 25
        assert Author.query.filter_by(name="ada").one().name == "ada"


def test_model_query_outside_a_unit_raises_and_says_what_to_open(database: Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match="outside a unit of work"):
        Post.query.count()


def test_a_dynamic_relationship_paginates_as_in_flask_sqlalchemy(database: Database) -> None:
    with database.unit_of_work(read_only=True):
        author = database.session.get(Author, 1)
        assert author is not None
        posts = cast(Query[Post], author.posts)  # an AppenderQuery mixed with Query
        page = posts.paginate(page=2, per_page=10)
        assert [post.title for post in page] == [f"post {n}" for n in range(11, 21)]
        assert (page.total, page.pages, page.prev_num, page.next_num) == (25, 3, 1, 3)
        assert [post.title for post in page.next()] == [f"post {n}" for n in range(21, 26)]


def test_session_query_takes_the_query_class_from_the_session_options(database: Database) -> None:
    with database.unit_of_work(read_only=True):
        query = cast(Query[Post], database.session.query(Post))  # query_cls=Query
        page = query.order_by(Post.id).paginate(per_page=5, count=False)
        assert isinstance(page.items[0], Post) and page.total is None
        assert Post.query.first_or_404().title == "post 1"
        assert Author.query.filter_by(name="ada").one_or_404().id == 1
        assert Post.query.get_or_404(3).title == "post 3"


@pytest.mark.flask
def test_missing_rows_and_pages_raise_not_found(database: Database) -> None:
    from werkzeug.exceptions import NotFound

    with database.unit_of_work(read_only=True):
        with pytest.raises(NotFound):
            Post.query.get_or_404(99)
        with pytest.raises(NotFound):
            Post.query.filter_by(title="none").first_or_404()
        with pytest.raises(NotFound):
            Post.query.one_or_404()  # 25 rows, not one
        with pytest.raises(NotFound):
            Post.query.order_by(Post.id).paginate(page=9, per_page=10)
