"""A small app for gunicorn in tests/test_replicas.py: writes on the primary, reads on replicas.

Configured from the environment (``PRIMARY_URL``, ``REPLICA_URL``); each response names the
server port its unit ran on and the worker process that served it.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask, Response, jsonify

from flask_uow import Database

from .models import Item


def create_app() -> Flask:
    db = Database()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="replica test secret",
        UOW_DATABASE_URL=os.environ["PRIMARY_URL"],
        UOW_REPLICA_URLS=os.environ["REPLICA_URL"],
        UOW_REPLICA_MAX_LAG=60.0,
        UOW_REPLICA_MAX_WAIT=0.05,
    )
    db.init_app(app)

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/items/<name>")
    @db.transactional
    def create(name: str) -> tuple[Response, int]:
        db.session.add(Item(name=name))
        return jsonify(name=name, worker=os.getpid()), 201

    @app.get("/items")
    @db.transactional(read_only=True)
    def names() -> Response:
        port = db.session.scalar(sa.text("SELECT inet_server_port()"))
        found = list(db.session.scalars(sa.select(Item.name)))
        return jsonify(port=port, names=found, worker=os.getpid())

    return app
