"""``GET /health`` tells whether the database answers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ledger.app import create_app
from ledger.database import db
from ledger.testing import LedgerClient, error_code


def test_health_is_ok_when_the_database_answers(api: LedgerClient) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/missing-directory/ledger.db",
        "postgresql+psycopg://ledger@127.0.0.1:1/ledger?connect_timeout=2",
        "mysql+pymysql://ledger@127.0.0.1:1/ledger?connect_timeout=2",
    ],
    ids=["sqlite", "postgresql", "mariadb"],
)
def test_health_is_503_when_the_database_is_unreachable(tmp_path: Path, url: str) -> None:
    app = create_app({"UOW_DATABASE_URL": url.format(tmp=tmp_path), "TESTING": True})

    response = app.test_client().get("/health")

    assert response.status_code == 503
    assert response.get_json() == {"status": "error", "database": "unreachable"}
    with app.app_context():
        db.dispose()


def test_an_unreachable_database_answers_503_json_with_retry_after() -> None:
    app = create_app(
        {
            "UOW_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
            "UOW_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}},
        }
    )
    response = app.test_client().get("/customers/1")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json() == {
        "error": {
            "code": "database_unavailable",
            "message": "the database is unavailable; try again shortly",
        }
    }
    db.dispose()


def test_a_write_lock_held_past_the_retries_answers_503_with_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    app = create_app(
        {
            "UOW_DATABASE_URL": f"sqlite:///{path}",
            "UOW_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.05}},  # SQLite's busy wait
        }
    )
    client = LedgerClient(app.test_client())
    with app.app_context():
        db.create_all()
    account_id = client.open_account(100)
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock throughout

        response = client.post(f"/accounts/{account_id}/deposits", {"amount": 5})
    finally:
        locker.close()

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert error_code(response) == "database_unavailable"
    assert client.balance(account_id) == 100
    with app.app_context():
        db.dispose()
