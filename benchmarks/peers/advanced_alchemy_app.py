"""The ledger's hot endpoints with Advanced Alchemy's Flask extension, ``commit_mode="manual"``.

Configured as its documentation says (``SQLAlchemySyncConfig`` with an ``EngineConfig``),
with ``expire_on_commit=False`` as flask-uow's sessions have; views get the request's
session with ``get_sync_session()`` and commit; the extension closes it when the app
context ends.
"""

from __future__ import annotations

from advanced_alchemy.config import SyncSessionConfig
from advanced_alchemy.extensions.flask import AdvancedAlchemy, EngineConfig, SQLAlchemySyncConfig
from flask import Flask

from ledger import errorhandlers

from ._session_views import blueprint
from .settings import database_url, engine_options


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    db = AdvancedAlchemy(
        config=SQLAlchemySyncConfig(
            connection_string=database_url(),
            engine_config=EngineConfig(**engine_options()),
            session_config=SyncSessionConfig(expire_on_commit=False),
            commit_mode="manual",
        ),
        app=app,
    )
    errorhandlers.register(app)
    app.register_blueprint(blueprint(db.get_sync_session))
    return app


def dispose(app: Flask) -> None:
    app.extensions["advanced_alchemy"].config[0].get_engine().dispose()
