"""``flask --app ledger.app:create_app ledger ...``: migrations and a report from the shell."""

from __future__ import annotations

from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from flask import current_app
from flask.cli import AppGroup

from .services import reports

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
"""``examples/ledger/migrations``: present in a source checkout or an editable install."""

ledger_cli = AppGroup("ledger", help="Manage the ledger's database.")


def alembic_config() -> Config:
    """An Alembic config for the current app; ``migrations/env.py`` uses the app's engine."""
    if not (MIGRATIONS / "env.py").is_file():
        raise click.ClickException(
            f"migrations not found at {MIGRATIONS}; install the ledger from a source checkout "
            "with 'pip install -e examples/ledger'"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["flask_app"] = current_app._get_current_object()  # type: ignore[attr-defined]
    return config


@ledger_cli.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
def migrate(revision: str) -> None:
    """Upgrade the database schema (alembic upgrade)."""
    command.upgrade(alembic_config(), revision)
    click.echo(f"database upgraded to {revision}")


@ledger_cli.command("downgrade")
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the database schema, e.g. to 'base' (alembic downgrade)."""
    command.downgrade(alembic_config(), revision)
    click.echo(f"database downgraded to {revision}")


@ledger_cli.command("report")
def report() -> None:
    """Print customer, account and transfer counts and the sum of all balances."""
    totals = reports.ledger_totals()
    click.echo(
        f"customers={totals.customers} accounts={totals.accounts} "
        f"transfers={totals.transfers} total_balance={totals.total_balance}"
    )
