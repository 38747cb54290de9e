"""UOW_SESSION_OPTIONS in a Flask app's config shape the sessions of the app's units."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_uow import Database, UnitOfWorkError

from .conftest import checked_out
from .models import Base, Item

pytestmark = pytest.mark.flask


def _app(url: str, **config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=url, TESTING=True, **config)
    return app


@pytest.mark.parametrize(
    ("config", "autoflush", "seen"),
    [({}, True, 1), ({"UOW_SESSION_OPTIONS": {"autoflush": False}}, False, 0)],
    ids=["default", "autoflush-off"],
)
def test_uow_session_options_reach_the_session_of_every_unit_in_the_app(
    backend_url: str, config: dict[str, object], autoflush: bool, seen: int
) -> None:
    db = Database(metadata=Base.metadata)
    app = _app(backend_url, **config)
    db.init_app(app)
    with app.app_context():
        db.create_all()
        try:
            with db.unit_of_work():
                assert db.session.autoflush is autoflush
                db.session.add(Item(name="pending"))
                count = db.session.scalar(sa.select(sa.func.count()).select_from(Item))
            assert count == seen  # with autoflush off, the query ran before the INSERT
            assert checked_out(db) == 0
        finally:
            db.drop_all()
    db.dispose()


@pytest.mark.parametrize(
    ("options", "named"),
    [({"bind": None}, "'bind'"), ({"autoflsh": False}, "'autoflsh'")],
    ids=["managed", "unknown"],
)
def test_invalid_uow_session_options_are_refused_at_init_app_by_name(
    options: dict[str, object], named: str
) -> None:
    db = Database()
    app = _app("sqlite://", UOW_SESSION_OPTIONS=options)

    with pytest.raises(ValueError, match=named):
        db.init_app(app)


def test_apps_sharing_a_database_with_different_session_options_are_refused() -> None:
    db = Database()
    first = _app("sqlite://", UOW_SESSION_OPTIONS={"autoflush": False})
    same = _app("sqlite://", UOW_SESSION_OPTIONS={"autoflush": False})
    other = _app("sqlite://", UOW_SESSION_OPTIONS={"autoflush": True})
    db.init_app(first)
    db.init_app(same)  # the same options: fine
    with pytest.raises(UnitOfWorkError, match="pass session_options to Database"):
        db.init_app(other)
