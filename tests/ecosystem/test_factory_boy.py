"""factory_boy's SQLAlchemy factories on ``db.session``: "commit" persistence and
``sqlalchemy_get_or_create``, with ``session_commit="savepoint"``."""

from __future__ import annotations

from collections.abc import Iterator

import factory
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Model

from .conftest import ECOSYSTEM, fresh_tables

pytestmark = ECOSYSTEM


class Base(Model, DeclarativeBase):
    pass


class User(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    email: Mapped[str] = mapped_column(String(120), unique=True)


db = Database(metadata=Base.metadata, session_commit="savepoint")


class UserFactory(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        model = User
        sqlalchemy_session = db.session  # the proxy: the current unit's session
        sqlalchemy_session_persistence = "commit"

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")


class UniqueUserFactory(UserFactory):
    class Meta:
        sqlalchemy_get_or_create = ("username",)


@pytest.fixture
def database(backend_url: str) -> Iterator[Database]:
    fresh_tables(backend_url, Base.metadata)
    app = Flask(__name__)
    app.config["UOW_DATABASE_URL"] = backend_url
    db.init_app(app)
    with app.app_context():
        yield db
    db.dispose()


def usernames(database: Database) -> list[str]:
    with database.unit_of_work(read_only=True):
        return list(database.session.scalars(sa.select(User.username).order_by(User.id)))


def test_commit_persistence_keeps_objects_and_the_unit_commits_them(database: Database) -> None:
    with database.unit_of_work():
        ada = UserFactory(username="ada")
        assert ada.id is not None
        UserFactory(username="grace")
    assert usernames(database) == ["ada", "grace"]


def test_a_unit_that_raises_undoes_what_its_factories_committed(database: Database) -> None:
    with pytest.raises(RuntimeError), database.unit_of_work():
        UserFactory(username="ada")
        raise RuntimeError("the test's own failure")
    assert usernames(database) == []


def test_get_or_create_returns_the_existing_row(database: Database) -> None:
    with database.unit_of_work():
        first = UniqueUserFactory(username="ada")
        again = UniqueUserFactory(username="ada")
        assert again is first
    assert usernames(database) == ["ada"]


def test_get_or_create_raises_the_integrity_error_and_keeps_what_was_committed(
    database: Database,
) -> None:
    with database.unit_of_work():
        UniqueUserFactory(username="ada", email="ada@example.com")
        # Not found by username, and the INSERT breaks the unique email: factory_boy calls
        # session.rollback() and re-raises; the savepoint of the last commit() is kept.
        with pytest.raises(IntegrityError):
            UniqueUserFactory(username="lovelace", email="ada@example.com")
        UniqueUserFactory(username="grace")
    assert usernames(database) == ["ada", "grace"]
