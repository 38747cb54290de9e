"""myapp's Alembic environment, run by Flask-Migrate (``flask db upgrade``, ``upgrade()``)."""

from __future__ import annotations

from alembic import context
from flask import current_app

db = current_app.extensions["migrate"].db

with db.engine.connect() as connection:
    context.configure(connection=connection, target_metadata=db.metadata)
    with context.begin_transaction():
        context.run_migrations()
