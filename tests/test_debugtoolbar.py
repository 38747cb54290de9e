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


def toolbar_app(db: Database | None, url: str) -> flask.Flask:
    """A debug app with the panel, registered with ``db`` unless it is None."""
    app = flask.Flask(__name__)
    app.debug = True
    app.config.update(
        SECRET_KEY="test",
        UOW_DATABASE_URL=url,
        DEBUG_TB_INTERCEPT_REDIRECTS=False,
        DEBUG_TB_PANELS=["flask_uow.debugtoolbar.UnitsPanel"],
    )
    if db is not None:
        db.init_app(app)
    DebugToolbarExtension(app)
    return app


def panel_of(html: str) -> str:
    return html[html.index('id="flDebugUnitsOfWorkPanel-content"') :]


EMPTY_PAGE = "<html><body><p>no database here</p></body></html>"


def test_the_panel_says_so_when_a_request_ran_no_unit(backend_url: str) -> None:
    db = Database(metadata=Base.metadata)
    app = toolbar_app(db, backend_url)
    app.get("/static-page")(lambda: EMPTY_PAGE)
    html = app.test_client().get("/static-page").get_data(as_text=True)
    assert "0 transactions" in html
    assert "No unit of work ran a transaction in this request." in panel_of(html)
    db.dispose()


def test_on_an_app_without_a_flask_uow_database_the_panel_shows_no_unit() -> None:
    app = toolbar_app(None, "sqlite://")
    app.get("/static-page")(lambda: EMPTY_PAGE)
    html = app.test_client().get("/static-page").get_data(as_text=True)
    assert "No unit of work ran a transaction in this request." in panel_of(html)


def test_the_panel_lists_each_attempt_of_a_retried_unit_but_no_joined_unit(
    backend_url: str,
) -> None:
    db = Database(metadata=Base.metadata)
    app = toolbar_app(db, backend_url)
    attempts: list[int] = []

    @db.transactional
    def joined() -> None:
        db.session.add(Item(name=f"attempt {len(attempts)}"))

    @app.get("/retried")
    @db.transactional(retries=1)
    def retried() -> str:
        attempts.append(1)
        joined()
        if len(attempts) == 1:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))
        return EMPTY_PAGE

    with app.app_context():
        db.create_all()
    try:
        html = app.test_client().get("/retried").get_data(as_text=True)
    finally:
        with app.app_context():
            db.drop_all()
        db.dispose()
    rows = panel_of(html).split("<tr class=")[1:]
    assert len(rows) == 2
    assert "rolled_back" in rows[0] and "committed" in rows[1]
    assert all("outermost" in row for row in rows)


def test_units_outside_any_request_still_run_once_the_panel_watches_the_database(
    backend_url: str,
) -> None:
    db = Database(backend_url, metadata=Base.metadata)
    app = toolbar_app(db, backend_url)
    app.get("/static-page")(lambda: EMPTY_PAGE)
    assert app.test_client().get("/static-page").status_code == 200  # the panel now watches
    db.create_all()
    try:
        with db.unit_of_work():  # no app context, no request
            db.session.add(Item(name="from a script"))
        with app.app_context(), db.unit_of_work(read_only=True):  # an app context, no request
            assert db.session.scalars(sa.select(Item.name)).all() == ["from a script"]
    finally:
        db.drop_all()
        db.dispose()
