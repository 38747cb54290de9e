"""Bad requests answer JSON errors with the right status; nothing a client sends causes a 500."""

from __future__ import annotations

import http.client
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app
from werkzeug.wrappers import Request

from flask_uow import CommitOutcomeUnknown
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


LIMIT = 64 * 1024
"""The ledger's MAX_CONTENT_LENGTH."""


def _customer_body(size: int) -> bytes:
    """A valid new customer, padded with spaces to exactly ``size`` bytes of JSON."""
    body = b'{"name": "Ada", "email": "ada@example.com"}'
    return body[:-1] + b" " * (size - len(body)) + b"}"


def _post_stream(app: Flask, body: bytes, *, chunked: bool, terminated: bool) -> TestResponse:
    """POST ``body`` from a stream with no Content-Length. ``chunked`` sends
    ``Transfer-Encoding: chunked``; ``terminated`` says that the server ends the stream where
    the body ends (``wsgi.input_terminated``), as servers that decode chunked bodies do.

    The environ goes to the app as it is: the test client would compute a Content-Length."""
    headers = {"Content-Type": "application/json"}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    environ = EnvironBuilder(
        "/customers", method="POST", headers=list(headers.items())
    ).get_environ()
    environ["wsgi.input"] = io.BytesIO(body)
    environ.pop("CONTENT_LENGTH", None)  # EnvironBuilder sets "0" for an empty body
    if terminated:
        environ["wsgi.input_terminated"] = True
    app_iter, status, response_headers = run_wsgi_app(app, environ, buffered=True)
    return TestResponse(app_iter, status, response_headers, Request(environ))


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "streamed"])
@pytest.mark.parametrize("size", [LIMIT + 1, 70_000, 1_000_000])
def test_a_body_without_length_larger_than_64_kib_is_refused_in_json(
    app: Flask, api: LedgerClient, chunked: bool, size: int
) -> None:
    response = _post_stream(app, _customer_body(size), chunked=chunked, terminated=True)

    assert response.status_code == 413
    assert error_code(response) == "request_entity_too_large"
    assert api.get("/customers").get_json()["total"] == 0


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "streamed"])
@pytest.mark.parametrize("size", [100, LIMIT])
def test_a_body_without_length_up_to_64_kib_is_read_in_full(
    app: Flask, chunked: bool, size: int
) -> None:
    response = _post_stream(app, _customer_body(size), chunked=chunked, terminated=True)

    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["email"] == "ada@example.com"


def test_a_chunked_body_the_server_cannot_delimit_asks_for_a_length(app: Flask) -> None:
    response = _post_stream(app, _customer_body(100), chunked=True, terminated=False)

    assert response.status_code == 411
    assert error_code(response) == "length_required"


@contextmanager
def _serving(app: Flask) -> Iterator[int]:
    """``app`` behind Werkzeug's HTTP server on 127.0.0.1 in a thread; yields the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def _post_chunked(port: int, body: bytes) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        pieces = (body[start : start + 8192] for start in range(0, len(body), 8192))
        connection.request(
            "POST",
            "/customers",
            body=pieces,
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_real_server_answers_413_to_a_large_chunked_body_and_reads_a_small_one(
    threaded_app: Flask,
) -> None:
    with _serving(threaded_app) as port:
        too_large = _post_chunked(port, _customer_body(70_000))
        small = _post_chunked(port, _customer_body(LIMIT))

    assert too_large == (413, too_large[1])
    assert too_large[1]["error"]["code"] == "request_entity_too_large"
    assert small[0] == 201, small
    assert small[1]["email"] == "ada@example.com"


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


def test_a_commit_whose_outcome_is_unknown_answers_503_asking_to_retry_with_the_key(
    app: Flask,
) -> None:
    def lost_during_commit() -> str:
        lost = sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))
        raise CommitOutcomeUnknown("the connection was lost during COMMIT") from lost

    app.add_url_rule("/lost", view_func=lost_during_commit)

    response = app.test_client().get("/lost")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert error_code(response) == "outcome_unknown"
    assert "Idempotency-Key" in response.get_json()["error"]["message"]
