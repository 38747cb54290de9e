"""The application factory: ``flask --app ledger.app:create_app run``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import delivery
from .cli import ledger_cli
from .database import db
from .http import errorhandlers
from .views import api

DEFAULTS: Mapping[str, Any] = {
    "UOW_PER_REQUEST": False,
    "MAX_CONTENT_LENGTH": 64 * 1024,
}
"""Services declare their own units of work, so requests do not get one each."""


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the ledger app.

    Configuration, later entries winning: :data:`DEFAULTS`; the environment variables
    ``DATABASE_URL`` as ``UOW_DATABASE_URL``, ``REPLICA_URLS`` (space-separated) as
    ``UOW_REPLICA_URLS`` and ``SECRET_KEY``; ``config``. Without a URL, flask-uow uses a SQLite
    file ``app.db`` in the instance folder (``examples/ledger/instance/`` in a source checkout).

    Outbox messages (``transfer.completed``) are delivered in this process, or, with
    ``CELERY_BROKER_URL`` (and ``CELERY_QUEUE``, default ``ledger``), published to Celery
    workers: see :mod:`ledger.delivery`.

    With replicas, the GET endpoints (read-only services) read from a replica, and a client
    that keeps the session cookie always sees its own writes (the position of its last write
    travels in the signed cookie: give every worker the same ``SECRET_KEY``).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(DEFAULTS)
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        app.config["UOW_DATABASE_URL"] = database_url
    for variable, key in (
        ("REPLICA_URLS", "UOW_REPLICA_URLS"),
        ("SECRET_KEY", "SECRET_KEY"),
        ("CELERY_BROKER_URL", "CELERY_BROKER_URL"),
        ("CELERY_QUEUE", "CELERY_QUEUE"),
    ):
        if os.environ.get(variable):
            app.config[key] = os.environ[variable]
    if config is not None:
        app.config.from_mapping(config)

    db.init_app(app)
    delivery.configure(app)
    errorhandlers.register(app)
    app.register_blueprint(api)
    app.cli.add_command(ledger_cli)
    return app
