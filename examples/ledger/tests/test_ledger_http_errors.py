"""Bad requests answer JSON errors with the right status; nothing a client sends causes a 500."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from ledger.database import db
from ledger.testing import LedgerClient, error_code

POST_ENDPOINTS = ["/customers", "/accounts/{account}/deposits", "/transfers"]
"""``{account}`` is the account the test opened."""

MALFORMED_BODIES = [
    b"",
    b"{",
    b'{"amount": }',
    b"{'amount': 5}",
    b'{"amount": NaN}',
    b'{"amount": Infinity}',
    b"\xff\xfe\x00garbage",
    b"[" * 20_000 + b"]" * 20_000,
    b"[]",
    b'"a string"',
    b"42",
    b"null",
    b"true",
]


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("raw", MALFORMED_BODIES, ids=lambda raw: repr(raw[:16]))
def test_a_body_that_is_not_a_json_object_is_a_bad_request(
    api: LedgerClient, path: str, raw: bytes
) -> None:
    account_id = api.open_account(100)

    response = api.post(path.format(account=account_id), raw=raw)

    assert response.status_code == 400
    assert error_code(response) == "malformed_json"
    assert api.get("/customers").get_json()["total"] == 1
    assert api.balance(account_id) == 100


def test_a_json_body_is_accepted_without_a_json_content_type(api: LedgerClient) -> None:
    response = api.client.post(
        "/customers", data='{"name": "Ada", "email": "ada@example.com"}', content_type="text/plain"
    )

    assert response.status_code == 201


def test_a_body_larger_than_64_kib_is_refused_in_json(api: LedgerClient) -> None:
    raw = b'{"name": "' + b"x" * 70_000 + b'", "email": "a@example.com"}'

    response = api.post("/customers", raw=raw)

    assert response.status_code == 413
    assert error_code(response) == "request_entity_too_large"


@pytest.mark.parametrize("path", ["/nope", "/customers/abc", "/customers/", "/accounts/1/x"])
def test_an_unknown_route_is_a_json_404(api: LedgerClient, path: str) -> None:
    response = api.get(path)

    assert response.status_code == 404
    assert error_code(response) == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/customers", {"GET", "POST"}),
        ("PUT", "/customers/1", {"GET"}),
        ("GET", "/transfers", {"POST"}),
        ("PATCH", "/accounts/1", {"GET"}),
        ("GET", "/accounts/1/deposits", {"POST"}),
        ("POST", "/health", {"GET"}),
    ],
)
def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(
    api: LedgerClient, method: str, path: str, allowed: set[str]
) -> None:
    response = api.client.open(path, method=method)

    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_an_unexpected_error_is_a_json_500_without_traceback_or_sql(app: Flask) -> None:
    def broken() -> str:
        with db.unit_of_work(read_only=True) as uow:
            uow.session.execute(sa.text("SELECT secret_column FROM no_such_table"))
        return "unreachable"

    app.add_url_rule("/broken", view_func=broken)

    response = app.test_client().get("/broken")

    assert response.status_code == 500
    assert error_code(response) == "internal_error"
    text = response.get_data(as_text=True)
    assert "no_such_table" not in text and "Traceback" not in text and "SELECT" not in text
