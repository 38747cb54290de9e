"""The ``flask uow`` command group: create-all, drop-all, check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from ._engines import masked
from ._replica_check import check_lines

if TYPE_CHECKING:
    from ._database import Database

uow_cli = AppGroup("uow", help="Manage the flask-uow database of this app.")


def _database() -> Database:
    from flask import has_app_context

    from ._flask import EXTENSION_KEY

    if has_app_context():
        app: Any = current_app
    else:  # a Quart app's command: Quart is imported, its app context is pushed
        import quart

        app = quart.current_app
    db: Database = app.extensions[EXTENSION_KEY]
    return db


@uow_cli.command("create-all")
def create_all_command() -> None:
    """Create every table of the Database's metadata that does not exist yet."""
    db = _database()
    db.create_all()
    click.echo(f"Created missing tables on {masked(db.engine.url)}")


@uow_cli.command("drop-all")
@click.confirmation_option(prompt="Drop every table of this app's database?")
def drop_all_command() -> None:
    """Drop every table of the Database's metadata."""
    db = _database()
    db.drop_all()
    click.echo(f"Dropped all tables on {masked(db.engine.url)}")


@uow_cli.command("check")
def check_command() -> None:
    """Connect to the database and report the backend, server version and pool status.

    Exits with status 1 when the database cannot be reached.
    """
    db = _database()
    engine = db.engine
    url = engine.url
    click.echo(f"database: {masked(url)}")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
            version = connection.dialect.server_version_info
    except sa.exc.DBAPIError as error:
        message = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        if url.password:
            message = message.replace(str(url.password), "***")
        click.echo(f"unreachable: {message}", err=True)
        raise SystemExit(1) from None
    click.echo(f"backend: {engine.dialect.name} ({engine.dialect.driver})")
    click.echo("server version: " + (".".join(str(part) for part in version) if version else "?"))
    click.echo(f"pool: {engine.pool.status()}")
    for line in check_lines(db):
        click.echo(line)
