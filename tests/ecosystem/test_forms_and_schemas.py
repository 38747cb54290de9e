"""WTForms-SQLAlchemy, marshmallow-sqlalchemy and Flask-Marshmallow on ``db.session``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask, request
from flask_marshmallow import Marshmallow
from flask_wtf import FlaskForm
from marshmallow_sqlalchemy import SQLAlchemyAutoSchema
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from wtforms import StringField
from wtforms_sqlalchemy.fields import QuerySelectField
from wtforms_sqlalchemy.orm import model_form

from flask_uow import Database, Model

from .conftest import ECOSYSTEM, fresh_tables

pytestmark = ECOSYSTEM


class Base(Model, DeclarativeBase):
    pass


class Team(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    members: Mapped[list[Member]] = relationship(back_populates="team")


class Member(Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"))
    team: Mapped[Team] = relationship(back_populates="members")


db = Database(metadata=Base.metadata)
ma = Marshmallow()
ma.SQLAlchemyAutoSchema.OPTIONS_CLASS.session = db.session  # the one line (see the docs)


class MemberForm(FlaskForm):
    name = StringField()
    team = QuerySelectField(
        query_factory=lambda: db.session.scalars(sa.select(Team).order_by(Team.name)).all(),
        get_label="name",
    )


MemberModelForm = model_form(Member, db_session=db.session, base_class=FlaskForm)


class MemberSchema(SQLAlchemyAutoSchema):  # marshmallow-sqlalchemy, as its docs wire it
    class Meta:
        model = Member
        load_instance = True
        include_fk = True
        sqla_session = db.session


class TeamSchema(ma.SQLAlchemyAutoSchema):
    class Meta:
        model = Team
        load_instance = True
        include_relationships = True


def create_app(url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=url, UOW_PER_REQUEST=True, SECRET_KEY="test", WTF_CSRF_ENABLED=False
    )
    db.init_app(app)
    ma.init_app(app)

    @app.post("/members")
    def add_member() -> tuple[str, int]:
        form = MemberForm()
        if not form.validate_on_submit():
            return str(form.errors), 400
        db.session.add(Member(name=form.name.data, team=form.team.data))
        return "created", 201

    @app.post("/members/model-form")
    def add_member_with_model_form() -> tuple[str, int]:
        form = MemberModelForm()
        if not form.validate_on_submit():
            return str(form.errors), 400
        member = Member()
        form.populate_obj(member)
        db.session.add(member)
        return "created", 201

    @app.post("/api/members")
    def load_member() -> tuple[dict[str, object], int]:
        member = MemberSchema().load(request.get_json())
        db.session.add(member)
        db.session.flush()
        return MemberSchema().dump(member), 201

    @app.put("/api/teams/<int:team_id>")
    def update_team(team_id: str) -> dict[str, object]:
        team = TeamSchema().load({"id": team_id, **request.get_json()})
        return TeamSchema().dump(team)

    return app


@pytest.fixture
def app(backend_url: str) -> Iterator[Flask]:
    fresh_tables(backend_url, Base.metadata)
    app = create_app(backend_url)
    with app.app_context(), db.unit_of_work():
        db.session.add_all([Team(id=1, name="blue"), Team(id=2, name="red")])
    yield app
    db.dispose()


def members(app: Flask) -> list[tuple[str, str]]:
    with app.app_context(), db.unit_of_work(read_only=True):
        query = sa.select(Member.name, Team.name).join(Member.team).order_by(Member.id)
        return [(member, team) for member, team in db.session.execute(query)]


def test_a_query_select_field_offers_and_validates_rows_of_the_request_unit(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/members", data={"name": "ada", "team": "2"}).status_code == 201
    assert client.post("/members", data={"name": "bob", "team": "9"}).status_code == 400
    assert members(app) == [("ada", "red")]


def test_a_model_form_built_at_import_time_uses_the_current_units_session(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/members/model-form", data={"name": "grace", "team": "1"})
    assert response.status_code == 201, response.text
    assert members(app) == [("grace", "blue")]


def test_a_marshmallow_sqlalchemy_schema_loads_instances_in_the_current_unit(app: Flask) -> None:
    response = app.test_client().post("/api/members", json={"name": "linus", "team_id": 1})
    assert response.status_code == 201
    assert response.json is not None and response.json["name"] == "linus"
    assert members(app) == [("linus", "blue")]


def test_a_flask_marshmallow_schema_loads_the_existing_row_and_updates_it(app: Flask) -> None:
    response = app.test_client().put("/api/teams/1", json={"name": "green"})
    assert response.json == {"id": 1, "name": "green", "members": []}
    with app.app_context(), db.unit_of_work(read_only=True):
        names = db.session.scalars(sa.select(Team.name).order_by(Team.id)).all()
    assert names == ["green", "red"]
