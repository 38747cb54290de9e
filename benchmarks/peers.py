"""Flask-SQLAlchemy, Flask-SQLAlchemy-Lite and Advanced Alchemy serving the ledger's endpoints
(``tests/peer_apps/views.py``) as their documentation configures them, all with
``expire_on_commit=False`` as flask-uow's sessions have: the request's session, ``commit()`` in
the view, the session closed with the app context."""

from __future__ import annotations

from flask import Flask

from ledger.models import Base
from tests.peer_apps.flask_apps import DB, app
from tests.peer_apps.settings import async_database_url, database_url, engine_options
from tests.peer_apps.views import blueprint, request_session


def create_flask_sqlalchemy_app() -> Flask:
    """Flask-SQLAlchemy 3.1: ``SQLALCHEMY_DATABASE_URI``, ``db.session``, ``commit()``."""
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy(metadata=Base.metadata, session_options={"expire_on_commit": False})
    fsqla = app(db, lambda: db.engine.dispose(), SQLALCHEMY_DATABASE_URI=database_url(),
                SQLALCHEMY_ENGINE_OPTIONS=engine_options())
    db.init_app(fsqla)
    in_request = request_session(db.session)
    fsqla.register_blueprint(blueprint(in_request, in_request))
    return fsqla


def create_flask_sqlalchemy_lite_app(with_async: bool = False) -> Flask:
    """Flask-SQLAlchemy-Lite: ``SQLALCHEMY_ENGINES["default"]``, ``db.session``, ``commit()``;
    ``with_async`` (units only: it would shift the Quart apps' HTTP counts) adds an async one."""
    from flask_sqlalchemy_lite import SQLAlchemy

    db = SQLAlchemy(session_options={"expire_on_commit": False})
    engines = {"default": {"url": database_url(), **engine_options()}}
    async_engines = {"default": {"url": async_database_url(), **engine_options()}}
    lite = app(db, lambda: db.engine.dispose(), SQLALCHEMY_ENGINES=engines,
               SQLALCHEMY_ASYNC_ENGINES=async_engines if with_async else {})
    db.init_app(lite)
    in_request = request_session(lambda: db.session)
    lite.register_blueprint(blueprint(in_request, in_request))
    return lite


def create_advanced_alchemy_app() -> Flask:
    """Advanced Alchemy's Flask extension, ``commit_mode="manual"``: ``get_sync_session()``."""
    from advanced_alchemy.config import SyncSessionConfig
    from advanced_alchemy.extensions.flask import (
        AdvancedAlchemy,
        EngineConfig,
        SQLAlchemySyncConfig,
    )

    config = SQLAlchemySyncConfig(
        connection_string=database_url(),
        engine_config=EngineConfig(**engine_options()),
        session_config=SyncSessionConfig(expire_on_commit=False),
        commit_mode="manual",
    )
    aa = app(None, lambda: config.get_engine().dispose())
    aa.extensions[DB] = AdvancedAlchemy(config=config, app=aa)
    in_request = request_session(aa.extensions[DB].get_sync_session)
    aa.register_blueprint(blueprint(in_request, in_request))
    return aa
