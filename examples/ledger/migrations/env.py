"""Alembic environment for the ledger: migrate the database of a ledger Flask app.

``flask ... ledger migrate`` passes its app in ``config.attributes["flask_app"]``; the
``alembic`` command line builds one with ``create_app()``, so both use the app's URL and
the engine flask-uow made for it (foreign keys on, the same options as the app).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from flask import Flask

from ledger.app import create_app
from ledger.database import db
from ledger.models import Base

config = context.config
target_metadata = Base.metadata

app: Flask | None = config.attributes.get("flask_app")
if app is None:
    # Run by the alembic command line: configure logging from alembic.ini, build the app.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    app = create_app()


def run_migrations_offline() -> None:
    """Print the SQL (``alembic upgrade head --sql``) instead of running it."""
    context.configure(
        url=db.engine.url.render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a connection of the app's engine, in one transaction."""
    with db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


with app.app_context():
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()
