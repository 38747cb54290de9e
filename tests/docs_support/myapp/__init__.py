"""``myapp``: the application that docs/testing.md's examples test (copied next to them)."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request
from flask_migrate import Migrate  # type: ignore[import-untyped]

from . import services
from .models import db

migrate = Migrate(directory=os.path.join(os.path.dirname(__file__), "migrations"))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    db.init_app(app)
    migrate.init_app(app, db)

    @app.post("/customers")
    def post_customer() -> tuple[dict[str, str], int]:
        email = (request.get_json() or {})["email"]
        services.register_customer(email)
        return {"email": email}, 201

    @app.get("/customers")
    def get_customers() -> list[dict[str, str]]:
        return [{"email": email} for email in services.customer_emails()]

    return app
