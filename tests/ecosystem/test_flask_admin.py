"""Flask-Admin's ModelView over ``db.session``, as its docs wire it, with one config line."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_admin import Admin
from flask_admin.contrib.sqla import ModelView
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database, Model

from .conftest import SQLITE_AND_POSTGRESQL, fresh_tables

pytestmark = [
    pytest.mark.flask,
    # Flask-Admin 2.x deprecates a session argument, and its db argument unwraps only
    # Flask-SQLAlchemy(-Lite) objects: docs/ecosystem.md#flask-admin.
    pytest.mark.filterwarnings("ignore:Passing a session object directly:DeprecationWarning"),
]


class Base(Model, DeclarativeBase):
    pass


class User(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)


db = Database(metadata=Base.metadata)


def create_app(url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=url,
        UOW_PER_REQUEST=True,
        UOW_SESSION_COMMIT="savepoint",  # the one line: Flask-Admin commits by itself
        SECRET_KEY="test",
    )
    db.init_app(app)
    admin = Admin(app, name="shop")
    admin.add_view(ModelView(User, db.session))
    return app


@pytest.fixture
def client(backend_url: str) -> FlaskClient:
    fresh_tables(backend_url, Base.metadata)
    app = create_app(backend_url)
    return app.test_client()


def names(client: FlaskClient) -> list[str]:
    app = client.application
    with app.app_context(), db.unit_of_work(read_only=True):
        return list(db.session.scalars(sa.select(User.name).order_by(User.name)))


def ids_by_name(client: FlaskClient) -> dict[str, int]:
    with client.application.app_context(), db.unit_of_work(read_only=True):
        return {name: id_ for name, id_ in db.session.execute(sa.select(User.name, User.id))}


@SQLITE_AND_POSTGRESQL
def test_the_list_create_edit_and_delete_views_work_unchanged(client: FlaskClient) -> None:
    for name in ("ada", "grace", "linus"):
        created = client.post("/admin/user/new/", data={"name": name})
        assert created.status_code == 302, created.text
    assert names(client) == ["ada", "grace", "linus"]

    listed = client.get("/admin/user/")
    assert listed.status_code == 200
    assert all(name in listed.text for name in ("ada", "grace", "linus"))

    ids = ids_by_name(client)
    edited = client.post(f"/admin/user/edit/?id={ids['ada']}", data={"name": "ada lovelace"})
    assert edited.status_code == 302
    deleted = client.post("/admin/user/delete/", data={"id": str(ids["linus"])})
    assert deleted.status_code == 302
    assert names(client) == ["ada lovelace", "grace"]


# SQLite only: on PostgreSQL, Flask-Admin 2.2.1's bulk actions fail under SQLAlchemy 2.1 with
# or without flask-uow (the ids of the form are bound as VARCHAR): docs/ecosystem.md.
@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_bulk_delete_deletes_the_selected_rows_only(client: FlaskClient) -> None:
    for name in ("ada", "grace", "linus"):
        client.post("/admin/user/new/", data={"name": name})
    ids = ids_by_name(client)
    response = client.post(
        "/admin/user/action/",
        data={"action": "delete", "rowid": [str(ids["ada"]), str(ids["linus"])]},
    )
    assert response.status_code == 302
    assert names(client) == ["grace"]


@SQLITE_AND_POSTGRESQL
def test_a_duplicate_key_shows_flask_admins_message_and_leaves_other_rows_intact(
    client: FlaskClient,
) -> None:
    client.post("/admin/user/new/", data={"name": "ada"})
    client.post("/admin/user/new/", data={"name": "grace"})

    response = client.post("/admin/user/new/", data={"name": "ada"})

    assert response.status_code == 200
    assert "Failed to create record." in response.text
    assert names(client) == ["ada", "grace"]

    grace = ids_by_name(client)["grace"]
    edited = client.post(f"/admin/user/edit/?id={grace}", data={"name": "ada"})
    assert edited.status_code == 200
    assert "Already exists." in edited.text  # its Unique validator, which queries db.session
    assert names(client) == ["ada", "grace"]
    # The session is usable after Flask-Admin's rollback(): the list still renders.
    assert client.get("/admin/user/").status_code == 200

