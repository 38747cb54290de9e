"""The Flask-DebugToolbar panel lists the request's units with what they did."""

from __future__ import annotations

import time

import flask
import sqlalchemy as sa
from flask_debugtoolbar import DebugToolbarExtension

from flask_uow import Database, Propagation

from .models import Base, Item


def make_app(backend_url: str) -> tuple[flask.Flask, Database]:
    db = Database(metadata=Base.metadata)
    app = flask.Flask(__name__)
    app.debug = True
    app.config.update(
        SECRET_KEY="test",
        UOW_DATABASE_URL=backend_url,
        UOW_WARN_IDLE_MS=50,
        DEBUG_TB_INTERCEPT_REDIRECTS=False,
        DEBUG_TB_PANELS=["flask_uow.debugtoolbar.UnitsPanel"],
    )
    db.init_app(app)
    DebugToolbarExtension(app)

    served: list[int] = []

    @app.get("/page")
    def page() -> str:
        served.append(1)
        with db.unit_of_work():
            db.session.add(Item(name=f"shown {len(served)}"))
            db.session.flush()
            time.sleep(0.06)  # a slow call while the transaction is open
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.execute(sa.select(Item)).all()
        with db.unit_of_work(read_only=True):
            db.session.execute(sa.select(Item)).all()
        return "<html><body><p>page</p></body></html>"

    return app, db


def test_the_panel_lists_each_unit_with_outcome_statements_and_idle_time(
    backend_url: str,
) -> None:
    app, db = make_app(backend_url)
    with app.app_context():
        db.create_all()
    try:
        with app.test_client() as client:
            html = client.get("/page").get_data(as_text=True)
            again = client.get("/page").get_data(as_text=True)
    finally:
        with app.app_context():
            db.drop_all()
        db.dispose()
    assert "Units of work" in html
    assert "2 transactions" in html
    body = html[html.index('id="flDebugUnitsOfWorkPanel-content"') :]
    rows = body.split("<tr class=")[1:]
    assert len(rows) == 3
    outer, savepoint, read_only = rows
    assert "outermost" in outer and "committed" in outer and f"{__file__}:" in outer
    assert "longest gap" in outer and "ended at" in outer
    assert "savepoint" in savepoint and "NESTED" in savepoint and "released" in savepoint
    assert "read-only" in read_only and "read_only" in read_only
    # Each request lists its own units only.
    assert again.split('id="flDebugUnitsOfWorkPanel-content"')[1].count("<tr class=") == 3
