"""Flask-Security-Too's SQLAlchemy-session quickstart on ``db.session``, with one config line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask, render_template_string
from flask.testing import FlaskClient
from flask_security import (
    AsaList,
    RoleMixin,
    Security,
    SQLAlchemySessionUserDatastore,
    SQLAlchemyUserDatastore,
    UserMixin,
    auth_required,
    hash_password,
    permissions_accepted,
)
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, String
from sqlalchemy.ext.mutable import MutableList
from sqlalchemy.orm import DeclarativeBase, backref, relationship

from flask_uow import Database

from .conftest import ECOSYSTEM, fresh_tables

pytestmark = ECOSYSTEM


class Base(DeclarativeBase):
    pass


db = Database(metadata=Base.metadata)
db_session = db.session  # the quickstart's scoped session
Base.query = db_session.query_property()


class RolesUsers(Base):
    __tablename__ = "roles_users"
    id = Column(Integer(), primary_key=True)
    user_id = Column("user_id", Integer(), ForeignKey("user.id"))
    role_id = Column("role_id", Integer(), ForeignKey("role.id"))


class Role(Base, RoleMixin):
    __tablename__ = "role"
    id = Column(Integer(), primary_key=True)
    name = Column(String(80), unique=True)
    description = Column(String(255))
    permissions = Column(MutableList.as_mutable(AsaList()), nullable=True)


class User(Base, UserMixin):
    __tablename__ = "user"
    id = Column(Integer, primary_key=True)
    email = Column(String(255), unique=True)
    username = Column(String(255), unique=True, nullable=True)
    password = Column(String(255), nullable=False)
    last_login_at = Column(DateTime())
    current_login_at = Column(DateTime())
    last_login_ip = Column(String(100))
    current_login_ip = Column(String(100))
    login_count = Column(Integer)
    active = Column(Boolean())
    fs_uniquifier = Column(String(64), unique=True, nullable=False)
    confirmed_at = Column(DateTime())
    roles = relationship(
        "Role", secondary="roles_users", backref=backref("users", lazy="dynamic")
    )


def create_app(url: str, *, datastore_of_db: bool = False) -> Flask:
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=url,
        UOW_PER_REQUEST=True,
        UOW_SESSION_COMMIT="savepoint",  # the one line: the datastore commits by itself
        SECRET_KEY="test-secret",
        SECURITY_PASSWORD_SALT="test-salt",
        SECURITY_TRACKABLE=True,
        SECURITY_REGISTERABLE=True,
        SECURITY_SEND_REGISTER_EMAIL=False,
        SECURITY_EMAIL_VALIDATOR_ARGS={"check_deliverability": False},  # no DNS in tests
        WTF_CSRF_ENABLED=False,
        REMEMBER_COOKIE_SAMESITE="strict",
        SESSION_COOKIE_SAMESITE="strict",
    )
    db.init_app(app)
    app.teardown_appcontext(lambda exc: db_session.close())  # as the quickstart has it
    user_datastore = (
        SQLAlchemyUserDatastore(db, User, Role)  # the Flask-SQLAlchemy quickstart's: db.session
        if datastore_of_db
        else SQLAlchemySessionUserDatastore(db_session, User, Role)
    )
    app.security = Security(app, user_datastore)

    @app.route("/")
    @auth_required()
    def home() -> str:
        return render_template_string("Hello {{ current_user.email }}")

    @app.route("/reports")
    @auth_required()
    @permissions_accepted("reports-read")
    def reports() -> str:
        return "reports"

    # The quickstart's seeding, in a unit: datastore.commit() is a savepoint there.
    with app.app_context(), db.unit_of_work():
        datastore = app.security.datastore
        if not datastore.find_user(email="test@me.com"):
            analyst = datastore.find_or_create_role(
                name="analyst", permissions={"reports-read"}
            )
            datastore.create_user(
                email="test@me.com", password=hash_password("password"), roles=[analyst]
            )
        datastore.commit()
    return app


@pytest.fixture
def client(backend_url: str) -> Iterator[FlaskClient]:
    fresh_tables(backend_url, Base.metadata)
    app = create_app(backend_url)
    yield app.test_client()
    db.dispose()


def login(client: FlaskClient, email: str, password: str) -> int:
    response = client.post("/login", json={"email": email, "password": password})
    return response.status_code


def test_the_seeded_user_logs_in_and_is_tracked(client: FlaskClient) -> None:
    assert client.get("/", headers={"Accept": "application/json"}).status_code == 401
    assert login(client, "test@me.com", "password") == 200
    assert client.get("/").text == "Hello test@me.com"
    with client.application.app_context(), db.unit_of_work(read_only=True):
        user = db.session.scalars(sa.select(User).filter_by(email="test@me.com")).one()
        assert user.login_count == 1
        assert user.current_login_ip == "127.0.0.1"


def test_a_wrong_password_is_refused_and_changes_nothing(client: FlaskClient) -> None:
    assert login(client, "test@me.com", "wrong") == 400
    with client.application.app_context(), db.unit_of_work(read_only=True):
        user = db.session.scalars(sa.select(User).filter_by(email="test@me.com")).one()
        assert user.login_count is None


def test_a_registered_user_is_stored_and_can_log_in(client: FlaskClient) -> None:
    registered = client.post(
        "/register",
        json={
            "email": "new@me.com",
            "password": "a long enough password",
            "password_confirm": "a long enough password",
        },
    )
    assert registered.status_code == 200, registered.text
    client.post("/logout")
    assert login(client, "new@me.com", "a long enough password") == 200
    with client.application.app_context(), db.unit_of_work(read_only=True):
        emails = db.session.scalars(sa.select(User.email).order_by(User.email)).all()
    assert emails == ["new@me.com", "test@me.com"]


def test_permissions_come_from_the_roles_in_the_database(client: FlaskClient) -> None:
    with client.application.app_context(), db.unit_of_work():
        datastore = client.application.security.datastore
        datastore.create_user(email="guest@me.com", password=hash_password("password"))
        datastore.commit()
    assert login(client, "guest@me.com", "password") == 200
    assert client.get("/reports", headers={"Accept": "application/json"}).status_code == 403
    client.post("/logout")
    assert login(client, "test@me.com", "password") == 200
    assert client.get("/reports").text == "reports"


def test_the_legacy_query_property_of_the_quickstart_resolves_in_the_current_unit(
    client: FlaskClient,
) -> None:
    with client.application.app_context(), db.unit_of_work(read_only=True):
        assert User.query.filter_by(email="test@me.com").count() == 1


def test_the_datastore_of_the_flask_sqlalchemy_quickstart_takes_the_database(
    backend_url: str,
) -> None:
    fresh_tables(backend_url, Base.metadata)
    client = create_app(backend_url, datastore_of_db=True).test_client()
    assert login(client, "test@me.com", "password") == 200
    assert client.get("/").text == "Hello test@me.com"
    db.dispose()
