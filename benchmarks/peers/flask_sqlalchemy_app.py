"""The ledger's hot endpoints the Flask-SQLAlchemy 3.1 way: ``db.session``, ``commit()``.

Configured as its documentation says (``SQLALCHEMY_DATABASE_URI``, ``SQLALCHEMY_ENGINE_OPTIONS``),
with ``expire_on_commit=False`` as flask-uow's sessions have. Flask-SQLAlchemy removes the
session when the app context ends.
"""

from __future__ import annotations

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from ledger import errorhandlers
from ledger.models import Base

from ._session_views import blueprint
from .settings import database_url, engine_options

db = SQLAlchemy(metadata=Base.metadata, session_options={"expire_on_commit": False})


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url(),
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    db.init_app(app)
    errorhandlers.register(app)
    app.register_blueprint(blueprint(lambda: db.session()))
    return app


def dispose(app: Flask) -> None:
    with app.app_context():
        db.engine.dispose()
