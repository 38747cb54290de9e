"""Helpers for testing the ledger through its HTTP API with Flask's test client."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

_emails = itertools.count(1)

UNKNOWN_ID = 2**31 - 1
"""An id that no customer, account or transfer has in a test: the largest an INTEGER primary
key holds. Tests that share a database through rollbacks (``flask_uow.testing.isolated``)
cannot use a small literal such as 777 for "unknown": sequences and AUTO_INCREMENT counters
are not rolled back, so ids keep growing from test to test and would reach it."""


DELIVERY_SECONDS = 30.0
"""The longest a test waits for the outbox's in-process deliveries before it fails."""


def wait_for_deliveries(app: Flask, seconds: float = DELIVERY_SECONDS) -> None:
    """Wait until the outbox's in-process thread ran every ``transfer.completed`` committed so
    far (units that commit for real hand them over; under ``isolated()`` they run at once)."""
    from .database import db

    with app.app_context():
        db.outbox.flush(timeout=seconds)


class LedgerClient:
    """A thin wrapper over a Flask test client that speaks the ledger's JSON API.

    The ``post`` and ``get`` methods return the raw response; the other methods assert the
    happy path and return the JSON body, so tests can set up state in one line.
    """

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.client.get(path, **kwargs)

    def post(
        self,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TestResponse:
        """POST ``body`` as JSON, or the exact bytes ``raw``."""
        data = raw if raw is not None else json.dumps(body).encode()
        return self.client.post(
            path, data=data, headers=dict(headers or {}), content_type="application/json"
        )

    def create_customer(self, name: str = "Ada Lovelace", email: str | None = None) -> Any:
        if email is None:
            email = f"customer{next(_emails)}@example.com"
        response = self.post("/customers", {"name": name, "email": email})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def open_account(self, balance: int = 0) -> int:
        """Register a customer, deposit ``balance`` cents if positive, return the account id."""
        account_id: int = self.create_customer()["account"]["id"]
        if balance > 0:
            self.deposit(account_id, balance)
        return account_id

    def deposit(self, account_id: int, amount: int) -> Any:
        response = self.post(f"/accounts/{account_id}/deposits", {"amount": amount})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def transfer(self, from_account: int, to_account: int, amount: int) -> Any:
        body = {"from_account": from_account, "to_account": to_account, "amount": amount}
        response = self.post("/transfers", body)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def balance(self, account_id: int) -> int:
        response = self.get(f"/accounts/{account_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        balance: int = response.get_json()["balance"]
        return balance

    def transfers_of(self, account_id: int) -> list[Any]:
        response = self.get(f"/accounts/{account_id}/transfers")
        assert response.status_code == 200, response.get_data(as_text=True)
        items: list[Any] = response.get_json()["items"]
        return items


def error_code(response: TestResponse) -> str:
    """The ``error.code`` of a JSON error response, checking the error shape on the way."""
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    code: str = body["error"]["code"]
    return code
