"""``flask uow relay`` and ``flask uow outbox status|retry|purge``, added to the app's ``uow``
group (a Flask or Quart ``AppGroup``). Each command asks for the app context explicitly:
Flask's ``AppGroup`` gives it by default, Quart's only when asked."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .._database import Database


def register(uow_cli: click.Group, database: Callable[[], Database]) -> None:
    """Add the outbox commands to the ``uow`` group (an ``AppGroup``: they run in the app
    context)."""
    _relay_command(uow_cli, database)
    _outbox_group(uow_cli, database)


def _relay_command(uow_cli: click.Group, database: Callable[[], Database]) -> None:
    @uow_cli.command("relay", with_appcontext=True)
    @click.option(
        "--idle", default=0.5, show_default=True, help="Seconds to wait when nothing is pending."
    )
    def relay(idle: float) -> None:
        """Publish committed outbox messages until SIGTERM or Ctrl-C (ends after its batch)."""
        db = database()
        click.echo(f"relaying {db!r} to {db.outbox.target!r}")
        published = db.outbox.run_relay(idle_seconds=idle)
        click.echo(f"stopped after publishing {published} message(s)")


def _outbox_group(uow_cli: click.Group, database: Callable[[], Database]) -> None:
    @uow_cli.group("outbox")
    def outbox() -> None:
        """Look at and act on the transactional outbox."""

    @outbox.command("status", with_appcontext=True)
    def status() -> None:
        """Backlog, oldest pending age, parked messages."""
        found = database().outbox.status()
        age = "-" if found.oldest_pending_age is None else f"{found.oldest_pending_age:.1f} s"
        click.echo(f"pending: {found.pending} ({found.leased} being published)")
        click.echo(f"oldest pending: {age}")
        click.echo(f"parked: {found.parked}")
        click.echo(f"published, kept: {found.published_kept}")

    @outbox.command("retry", with_appcontext=True)
    @click.argument("message_id")
    def retry(message_id: str) -> None:
        """Put a parked message back in line."""
        if not database().outbox.retry(message_id):
            click.echo(f"no pending message {message_id}", err=True)
            raise SystemExit(1)
        click.echo(f"message {message_id} will be published by the next relay batch")

    @outbox.command("purge", with_appcontext=True)
    @click.confirmation_option(prompt="Delete every parked message? They will never be sent.")
    def purge() -> None:
        """Delete parked messages."""
        click.echo(f"deleted {database().outbox.purge()} parked message(s)")
