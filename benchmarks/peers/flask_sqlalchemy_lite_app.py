"""The ledger's hot endpoints with Flask-SQLAlchemy-Lite: ``db.session``, ``commit()`` in the view.

Configured as its documentation says (``SQLALCHEMY_ENGINES["default"]`` with the engine
options beside the URL), with ``expire_on_commit=False`` as flask-uow's sessions have. The
extension closes the session when the app context ends.
"""

from __future__ import annotations

from flask import Flask
from flask_sqlalchemy_lite import SQLAlchemy

from ledger import errorhandlers

from ._session_views import blueprint
from .settings import database_url, engine_options

db = SQLAlchemy(session_options={"expire_on_commit": False})


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_ENGINES={"default": {"url": database_url(), **engine_options()}},
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    db.init_app(app)
    errorhandlers.register(app)
    app.register_blueprint(blueprint(lambda: db.session))
    return app


def dispose(app: Flask) -> None:
    with app.app_context():
        db.engine.dispose()
