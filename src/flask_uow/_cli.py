"""The ``uow`` command group of an app: create-all, drop-all, check (Flask and Quart alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import sqlalchemy as sa

from ._engines import masked
from ._frameworks import EXTENSION_KEY
from ._replica_check import check_lines
from .outbox._cli import register as register_outbox_commands

if TYPE_CHECKING:
    from ._database import Database


def command_group(group_class: type[click.Group], app: Any) -> click.Group:
    """The ``uow`` group, made of ``group_class`` (the framework's ``AppGroup``), whose
    commands run in an app context and use the Database registered with ``app`` (the
    framework's ``current_app``)."""
    group = group_class("uow", help="Manage the flask-uow database of this app.")

    def database() -> Database:
        db: Database = app.extensions[EXTENSION_KEY]
        return db

    @group.command("create-all", with_appcontext=True)
    def create_all_command() -> None:
        """Create every table of the Database's metadata that does not exist yet."""
        db = database()
        db.create_all()
        click.echo(f"Created missing tables on {masked(db.engine.url)}")

    @group.command("drop-all", with_appcontext=True)
    @click.confirmation_option(prompt="Drop every table of this app's database?")
    def drop_all_command() -> None:
        """Drop every table of the Database's metadata."""
        db = database()
        db.drop_all()
        click.echo(f"Dropped all tables on {masked(db.engine.url)}")

    @group.command("check", with_appcontext=True)
    def check_command() -> None:
        """Connect to the database and report the backend, server version and pool status.

        Exits with status 1 when the database cannot be reached.
        """
        check(database())

    register_outbox_commands(group, database)
    return group


def check(db: Database) -> None:
    """Print the backend, server version, pool status and replicas; exit 1 when unreachable."""
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

