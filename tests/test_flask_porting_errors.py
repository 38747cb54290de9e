"""A test-wide unit around test-client requests: a 4xx dooms it, and the error names the fix."""

from __future__ import annotations

import pytest
from flask import Flask, abort

from flask_uow import Database, UnexpectedRollback
from flask_uow.testing import isolated

from .models import Base, Item


def create_app(url: str, db: Database) -> Flask:
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=url, UOW_PER_REQUEST=True)
    db.init_app(app)

    @app.post("/items/<name>")
    def add(name: str) -> tuple[str, int]:
        if name == "bad":
            abort(400)
        db.session.add(Item(name=name))
        return "created", 201

    return app


def test_a_request_answering_4xx_inside_a_test_wide_unit_names_isolated_as_the_fix(
    backend_url: str,
) -> None:
    db = Database(metadata=Base.metadata)
    app = create_app(backend_url, db)
    client = app.test_client()
    with app.app_context():
        db.drop_all()
        db.create_all()
        with pytest.raises(UnexpectedRollback) as raised:
            with db.unit_of_work():  # the test-wide unit of a ported suite
                assert client.post("/items/ada").status_code == 201
                assert client.post("/items/bad").status_code == 400
        message = str(raised.value)
        assert "the per-request unit of POST /items/bad" in message
        assert "flask_uow.testing.isolated(db)" in message
        db.drop_all()
    db.dispose()


def test_under_isolated_a_4xx_request_rolls_back_only_itself(backend_url: str) -> None:
    db = Database(metadata=Base.metadata)
    app = create_app(backend_url, db)
    client = app.test_client()
    with app.app_context():
        db.drop_all()
        db.create_all()
        with isolated(db):
            assert client.post("/items/ada").status_code == 201
            assert client.post("/items/bad").status_code == 400
            with db.unit_of_work(read_only=True):
                assert [item.name for item in db.session.query(Item)] == ["ada"]
        db.drop_all()
    db.dispose()
