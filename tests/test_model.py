"""The Model mixin: table names from class names, inheritance, repr, one MetaData per base."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from flask_uow import Database, Model
from flask_uow._model import snake_case


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("User", "user"),
        ("UserAccount", "user_account"),
        ("HTTPRequest", "http_request"),
        ("APIKeyV2", "api_key_v2"),
        ("OAuth2Token", "o_auth2_token"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case_names_tables_as_flask_sqlalchemy_does(name: str, table: str) -> None:
    assert snake_case(name) == table


def test_a_model_without_tablename_gets_its_class_name_in_snake_case() -> None:
    class Base(Model, DeclarativeBase):
        pass

    class BlogPost(Base):
        id: Mapped[int] = mapped_column(primary_key=True)

    assert BlogPost.__table__.name == "blog_post"
    assert set(Base.metadata.tables) == {"blog_post"}


def test_an_explicit_tablename_wins() -> None:
    class Base(Model, DeclarativeBase):
        pass

    class Post(Base):
        __tablename__ = "posts"
        id: Mapped[int] = mapped_column(primary_key=True)

    assert Post.__table__.name == "posts"


def test_a_declared_attr_tablename_wins() -> None:
    class Base(Model, DeclarativeBase):
        pass

    class Prefixed:
        @declared_attr.directive
        @classmethod
        def __tablename__(cls) -> str:
            return "app_" + cls.__name__.lower()

    class Post(Prefixed, Base):
        id: Mapped[int] = mapped_column(primary_key=True)

    assert Post.__table__.name == "app_post"


def test_abstract_models_get_no_table_and_their_children_get_their_own_names() -> None:
    class Base(Model, DeclarativeBase):
        pass

    class Timestamped(Base):
        __abstract__ = True
        id: Mapped[int] = mapped_column(primary_key=True)

    class Comment(Timestamped):
        body: Mapped[str] = mapped_column(String(200))

    assert "timestamped" not in Base.metadata.tables
    assert Comment.__table__.name == "comment"


def test_a_subclass_without_a_primary_key_shares_its_parents_table() -> None:
    class Base(Model, DeclarativeBase):
        pass

    class Employee(Base):
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(20))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "employee"}

    class Manager(Employee):
        __mapper_args__ = {"polymorphic_identity": "manager"}

    assert Manager.__table__ is Employee.__table__
    assert set(Base.metadata.tables) == {"employee"}


def test_a_subclass_with_its_own_primary_key_gets_a_joined_table() -> None:
    class Base(Model, DeclarativeBase):
        pass

    class Employee(Base):
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(20))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "employee"}

    class Engineer(Employee):
        id: Mapped[int] = mapped_column(ForeignKey("employee.id"), primary_key=True)
        __mapper_args__ = {"polymorphic_identity": "engineer"}

    assert Engineer.__table__.name == "engineer"
    assert set(Base.metadata.tables) == {"employee", "engineer"}


def test_a_model_without_any_primary_key_is_refused_by_sqlalchemy() -> None:
    class Base(Model, DeclarativeBase):
        pass

    with pytest.raises(sa.exc.ArgumentError, match="primary key"):

        class Keyless(Base):
            name: Mapped[str] = mapped_column(String(20))


def test_each_base_has_its_own_metadata() -> None:
    class First(Model, DeclarativeBase):
        pass

    class Second(Model, DeclarativeBase):
        pass

    class Post(First):
        id: Mapped[int] = mapped_column(primary_key=True)

    assert First.metadata is not Second.metadata
    assert "post" in First.metadata.tables and not Second.metadata.tables


def test_repr_shows_the_primary_key_of_persistent_objects() -> None:
    class Base(Model, DeclarativeBase):
        pass

    class Note(Base):
        id: Mapped[int] = mapped_column(primary_key=True)

    db = Database("sqlite://", metadata=Base.metadata)
    db.create_all()
    note = Note(id=7)
    assert repr(note).startswith("<Note transient 0x")
    with db.unit_of_work():
        db.session.add(note)
        assert repr(note).startswith("<Note pending 0x")
    assert repr(note) == "<Note 7>"
    db.dispose()
