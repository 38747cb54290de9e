"""``flask uow relay``, ``flask uow outbox status|retry|purge``, and the relay loop's SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_uow import Database
from flask_uow.outbox import Message

from .outbox_support import Collector, metadata

pytestmark = pytest.mark.flask

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(backend_url: str) -> Iterator[Flask]:
    db = Database(metadata=metadata)
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, TESTING=True)
    db.init_app(app)
    with app.app_context():
        db.outbox.publish_with(Collector(), immediate=False)
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.drop_all()
    db.dispose()


def test_outbox_status_shows_the_backlog_and_parked_messages(app: Flask) -> None:
    db = next(value for value in app.extensions.values() if isinstance(value, Database))
    with app.app_context(), db.unit_of_work():
        db.enqueue("mail.send")
    result = app.test_cli_runner().invoke(args=["uow", "outbox", "status"])
    assert result.exit_code == 0, result.output
    assert "pending: 1 (0 being published)" in result.output
    assert "parked: 0" in result.output


def test_outbox_retry_puts_a_parked_message_back_and_purge_deletes_parked_ones(
    app: Flask,
) -> None:
    db = next(value for value in app.extensions.values() if isinstance(value, Database))

    def refuse(messages: list[Message]) -> None:
        raise ValueError("refused")

    with app.app_context():
        db.outbox.publish_with(refuse, immediate=False)
        db.outbox.max_attempts = 1
        with db.unit_of_work():
            message_id = db.enqueue("mail.send")
        db.outbox.relay_once()
    runner = app.test_cli_runner()
    assert "parked: 1" in runner.invoke(args=["uow", "outbox", "status"]).output
    retried = runner.invoke(args=["uow", "outbox", "retry", message_id])
    assert retried.exit_code == 0 and message_id in retried.output
    missing = runner.invoke(args=["uow", "outbox", "retry", "no-such-id"])
    assert missing.exit_code == 1 and "no pending message" in missing.output
    with app.app_context():
        db.outbox.relay_once()
    purged = runner.invoke(args=["uow", "outbox", "purge", "--yes"])
    assert purged.exit_code == 0 and "deleted 1 parked message(s)" in purged.output


RELAY_SCRIPT = textwrap.dedent(
    """
    import sys
    from flask_uow import Database
    from tests.outbox_support import metadata

    db = Database(sys.argv[1], metadata=metadata)
    seen = []
    db.outbox.publish_with(lambda messages: seen.extend(messages))
    print("relaying", flush=True)
    db.outbox.run_relay(idle_seconds=0.05)
    print(f"stopped cleanly after {len(seen)}", flush=True)
    """
)


def test_the_relay_loop_ends_cleanly_on_sigterm_after_publishing_the_backlog(
    backend_url: str,
) -> None:
    db = Database(backend_url, metadata=metadata)
    db.drop_all()
    db.create_all()
    with db.unit_of_work():
        for number in range(3):
            db.enqueue("mail.send", number)
    relay = subprocess.Popen(
        [sys.executable, "-c", RELAY_SCRIPT, backend_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert relay.stdout is not None
        assert relay.stdout.readline().strip() == "relaying"
        deadline = time.monotonic() + 20
        while db.outbox.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        relay.send_signal(signal.SIGTERM)
        output, _ = relay.communicate(timeout=20)
    finally:
        if relay.poll() is None:  # pragma: no cover
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0
    assert "stopped cleanly after 3" in output
    db.drop_all()
    db.dispose()


def relay_app(framework: str) -> str:
    """The source of ``relay_app.py``: a ``create_app()`` of ``framework`` ("Flask" or
    "Quart") whose outbox prints what it publishes, on ``RELAY_APP_DATABASE_URL``."""
    return textwrap.dedent(
        f"""
        import os
        from {framework.lower()} import {framework}
        from flask_uow import Database
        from tests.outbox_support import metadata

        db = Database(metadata=metadata)

        def create_app():
            app = {framework}("relay_app")
            app.config["UOW_DATABASE_URL"] = os.environ["RELAY_APP_DATABASE_URL"]
            db.init_app(app)
            db.outbox.publish_with(
                lambda messages: print("published", *[m.args[0] for m in messages], flush=True)
            )
            return app
        """
    )


def check_relay_publishes_two_then_stops_on_sigterm(relay: subprocess.Popen[str]) -> None:
    """``relay`` (a ``uow relay`` process with two messages pending) says where it relays,
    publishes both in its first batch, and stops cleanly on SIGTERM, saying how many."""
    try:
        assert relay.stdout is not None
        lines = [relay.stdout.readline(), relay.stdout.readline()]
        relay.send_signal(signal.SIGTERM)
        output, _ = relay.communicate(timeout=20)
    finally:
        if relay.poll() is None:  # pragma: no cover
            relay.kill()
            relay.communicate()
    assert lines[0].startswith("relaying <Database"), lines
    assert lines[1].strip() == "published 0 1", lines
    assert relay.returncode == 0, output
    assert "stopped after publishing 2 message(s)" in output


def test_flask_uow_relay_publishes_the_backlog_and_stops_on_sigterm(
    app: Flask, backend_url: str, tmp_path: Path
) -> None:
    db = next(value for value in app.extensions.values() if isinstance(value, Database))
    with app.app_context(), db.unit_of_work():
        for number in range(2):
            db.enqueue("mail.send", number)
    (tmp_path / "relay_app.py").write_text(relay_app("Flask"))
    relay = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "relay_app:create_app", "uow", "relay"]
        + ["--idle", "0.05"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
            "RELAY_APP_DATABASE_URL": backend_url,
        },
    )
    check_relay_publishes_two_then_stops_on_sigterm(relay)
    with app.app_context():
        assert db.outbox.pending() == 0
