"""Flask-Login with ``db.session``: with per-request units its documented ``user_loader``
works as written; without them, the loader opens its own unit and loads what templates use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from flask_uow import Database, Model, NoActiveUnitOfWork

from .conftest import ECOSYSTEM, fresh_tables

pytestmark = ECOSYSTEM


class Base(Model, DeclarativeBase):
    pass


class User(UserMixin, Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    posts: Mapped[list[Post]] = relationship(back_populates="author", order_by="Post.id")


class Post(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80))
    author_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    author: Mapped[User] = relationship(back_populates="posts")


db = Database(metadata=Base.metadata)


def create_app(url: str, *, per_request: bool, loader_unit: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=url, UOW_PER_REQUEST=per_request, SECRET_KEY="test")
    db.init_app(app)
    login_manager = LoginManager(app)

    if loader_unit:

        @login_manager.user_loader
        def load_user_in_its_own_unit(user_id: str) -> User | None:
            # Without per-request units: a unit of its own (or the view's, when one is
            # active), loading what templates will read once that unit has ended.
            with db.unit_of_work(read_only=True):
                query = sa.select(User).options(selectinload(User.posts))
                return db.session.scalars(query.filter_by(id=int(user_id))).one_or_none()

    else:

        @login_manager.user_loader
        def load_user(user_id: str) -> User | None:
            return db.session.get(User, int(user_id))  # as Flask-Login's docs write it

    @app.post("/login/<name>")
    def login(name: str) -> str:
        with db.unit_of_work(read_only=True):
            user = db.session.scalars(sa.select(User).filter_by(name=name)).one()
        login_user(user)
        return "ok"

    @app.get("/me")
    @login_required
    def me() -> dict[str, object]:
        return {"name": current_user.name, "posts": [post.title for post in current_user.posts]}

    return app


@pytest.fixture
def url(backend_url: str) -> Iterator[str]:
    fresh_tables(backend_url, Base.metadata)
    engine = sa.create_engine(backend_url)
    with engine.begin() as connection:
        connection.execute(sa.insert(User), [{"id": 1, "name": "ada"}])
        connection.execute(sa.insert(Post), [{"title": "Notes", "author_id": 1}])
    engine.dispose()
    yield backend_url
    db.dispose()


def logged_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert client.post("/login/ada").text == "ok"
    return client


def test_with_per_request_units_the_documented_loader_works_as_written(url: str) -> None:
    client = logged_in(create_app(url, per_request=True, loader_unit=False))
    assert client.get("/me").json == {"name": "ada", "posts": ["Notes"]}


def test_without_per_request_units_a_loader_in_its_own_unit_gives_a_usable_user(
    url: str,
) -> None:
    client = logged_in(create_app(url, per_request=False, loader_unit=True))
    assert client.get("/me").json == {"name": "ada", "posts": ["Notes"]}


def test_without_per_request_units_the_plain_loader_fails_loudly_not_with_a_detached_user(
    url: str,
) -> None:
    app = create_app(url, per_request=False, loader_unit=False)
    app.testing = True  # let the view's error reach the test
    client = logged_in(app)
    with pytest.raises(NoActiveUnitOfWork):
        client.get("/me")
