"""Secrets: the database password never shows in logs, reprs, error responses or the CLI.

Three situations: a server that accepts the password (PostgreSQL's trust accepts any, MariaDB a
user made for the test), a server that refuses it (MariaDB), and a server that is not there
(a closed port on 127.0.0.1, for both drivers, so this part runs everywhere). In each, the
test collects everything a person could read: every log record at DEBUG with its traceback,
the reprs of the Database, its engine, URL and pool, the HTTP error bodies, the exception the
app raised, and the output of ``flask uow check``.
"""

from __future__ import annotations

import logging
import secrets
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ledger.app import create_app
from ledger.database import db
from ledger.services import customers

from ._leaks import body_leaks
from .conftest import SERVERS, LedgerFactory, LogRecorder, Target


@pytest.fixture
def debug_logs(logs: LogRecorder) -> Iterator[LogRecorder]:
    """``logs``, with the app's loggers at DEBUG (SQL, parameters, pool events)."""
    levels = {name: logging.getLogger(name).level for name in ("sqlalchemy", "flask_uow")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield logs
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def readable_output(app: Flask) -> dict[str, str]:
    """Everything about the app's database a person could read, by where it comes from."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["uow", "check"])
    stderr = ""
    try:
        stderr = result.stderr
    except ValueError:  # stderr mixed into output
        pass
    with app.app_context():
        engine = db.engine
        return {
            "repr(db)": repr(db),
            "repr(app.extensions)": repr(app.extensions),
            "repr(engine)": repr(engine),
            "str(engine.url)": str(engine.url),
            "repr(engine.url)": repr(engine.url),
            "repr(pool)": repr(engine.pool) + engine.pool.status(),
            "flask uow check": f"exit {result.exit_code}\n{result.output}\n{stderr}",
        }


def assert_nowhere(
    password: str, places: dict[str, str], logs: LogRecorder, figures: dict[str, Any]
) -> None:
    figures.update(places_checked=sorted(places), log_records_checked=len(logs.records))
    shown = [where for where, text in places.items() if password in text]
    assert not shown, f"the password shows in {shown}"


@pytest.mark.parametrize("backend_url", SERVERS, indirect=True)
def test_password_stays_hidden_on_a_server_that_accepts_it(
    target: Target, ledger_app: LedgerFactory, debug_logs: LogRecorder, figures: dict[str, Any]
) -> None:
    """Normal operation with a password: reprs, CLI, SQL logs at DEBUG never show it."""
    assert target.password
    app = ledger_app(target.url)
    client = app.test_client()
    created = client.post("/customers", json={"name": "Secret", "email": "secret@example.com"})
    assert created.status_code == 201
    duplicate = client.post("/customers", json={"name": "Secret", "email": "secret@example.com"})
    assert duplicate.status_code == 409
    places = readable_output(app)
    assert "exit 0" in places["flask uow check"], places["flask uow check"]
    assert "***" in places["flask uow check"]
    places["responses"] = created.get_data(as_text=True) + duplicate.get_data(as_text=True)
    places["logs"] = debug_logs.text()
    assert debug_logs.records, "nothing was logged at DEBUG; the check proves little"
    assert_nowhere(target.password, places, debug_logs, figures)


@pytest.mark.parametrize("backend_url", ["mariadb"], indirect=True)
def test_password_stays_hidden_when_the_server_refuses_it(
    target: Target, debug_logs: LogRecorder, figures: dict[str, Any]
) -> None:
    """A wrong password: the refusal is reported everywhere, the password nowhere."""
    wrong = f"wr0ng-{secrets.token_hex(8)}"
    url = sa.make_url(target.url).set(password=wrong).render_as_string(hide_password=False)
    app = create_app({"UOW_DATABASE_URL": url})
    places = exercise_a_broken_database(app)
    assert "Access denied" in places["flask uow check"]
    places["logs"] = debug_logs.text()
    assert_nowhere(wrong, places, debug_logs, figures)
    with app.app_context():
        db.dispose()


@pytest.mark.parametrize(
    "driver", ["postgresql+psycopg", "mysql+pymysql"], ids=["postgresql", "mariadb"]
)
def test_password_stays_hidden_when_the_server_is_unreachable(
    driver: str, debug_logs: LogRecorder, figures: dict[str, Any]
) -> None:
    """A closed port: health 503, errors 500, CLI exit 1, and the password in none of them."""
    password = f"s3cr3t-{secrets.token_hex(8)}"
    url = f"{driver}://someone:{password}@127.0.0.1:{closed_port()}/ledger"
    app = create_app({"UOW_DATABASE_URL": url})
    places = exercise_a_broken_database(app)
    assert "unreachable" in places["flask uow check"]
    places["logs"] = debug_logs.text()
    assert "database unavailable" in places["logs"]
    assert_nowhere(password, places, debug_logs, figures)
    with app.app_context():
        db.dispose()


def exercise_a_broken_database(app: Flask) -> dict[str, str]:
    """Hit a ledger whose database fails every connection, and collect what comes out."""
    client = app.test_client()
    health = client.get("/health")
    assert health.status_code == 503
    created = client.post("/customers", json={"name": "Secret", "email": "secret@example.com"})
    listed = client.get("/customers")
    for response in (created, listed):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"
        assert not body_leaks(response.get_data()), response.get_data()
    with app.app_context(), pytest.raises(sa.exc.DBAPIError) as raised:
        customers.register_customer("Secret", "secret@example.com")
    places = readable_output(app)
    assert "exit 1" in places["flask uow check"], places["flask uow check"]
    places["responses"] = "\n".join(r.get_data(as_text=True) for r in (health, created, listed))
    error = raised.value
    places["exception"] = "\n".join(
        [str(error), repr(error), str(error.orig), *traceback.format_exception(error)]
    )
    return places


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
