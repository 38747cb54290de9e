"""The JSON API: parse the request, call one service, shape the result. Nothing else.

Transaction boundaries are the services' business, errors are ``ledger.errorhandlers``'.
"""

from __future__ import annotations

from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import LengthRequired, RequestEntityTooLarge

from . import openapi, rules, schemas
from .services import accounts, customers, health, reports, transfers

api = Blueprint("ledger", __name__)

# Ids are signed 32-bit on every backend (see rules.MAX_ID); larger ones in a URL are not found.
ID = f"int(max={rules.MAX_ID})"


def _body() -> dict[str, object]:
    return schemas.json_object(_read_body())


def _read_body() -> bytes:
    """The request body; 413 past ``MAX_CONTENT_LENGTH``, however the body is framed.

    With a Content-Length, Werkzeug refuses a body declared too large before reading it. A
    chunked or streamed body declares no length: Werkzeug would stop reading at the limit
    without a word (or read nothing at all), and the cut-off JSON would look malformed. So such
    a body is read here, from the stream that the server ends where the body ends, up to one
    byte past the limit.
    """
    limit = request.max_content_length
    if request.content_length is not None or limit is None:
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            # This server passes the chunks on undecoded, with no end to stop at.
            raise LengthRequired("send the body with a Content-Length header")
        return b""  # no Content-Length and no chunks: HTTP/1.1 says there is no body
    stream = request.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise RequestEntityTooLarge()


@api.post("/customers")
def create_customer() -> ResponseReturnValue:
    data = schemas.new_customer(_body())
    created = customers.register_customer(data.name, data.email)
    location = url_for(".get_customer", customer_id=created.id)
    return schemas.customer(created), 201, {"Location": location}


@api.get("/customers")
def list_customers() -> ResponseReturnValue:
    page = schemas.page_request(request.args)
    return schemas.customer_page(customers.list_customers(page.page, page.per_page))


@api.get(f"/customers/<{ID}:customer_id>")
def get_customer(customer_id: int) -> ResponseReturnValue:
    return schemas.customer(customers.get_customer(customer_id))


@api.get(f"/accounts/<{ID}:account_id>")
def get_account(account_id: int) -> ResponseReturnValue:
    return schemas.account(accounts.get_account(account_id))


@api.post(f"/accounts/<{ID}:account_id>/deposits")
def deposit(account_id: int) -> ResponseReturnValue:
    data = schemas.new_deposit(_body())
    return schemas.account_balance(accounts.deposit(account_id, data.amount))


@api.get(f"/accounts/<{ID}:account_id>/transfers")
def account_transfers(account_id: int) -> ResponseReturnValue:
    statement = reports.account_statement(account_id)
    return {"items": [schemas.transfer(t) for t in statement]}


@api.post("/transfers")
def create_transfer() -> ResponseReturnValue:
    key = schemas.idempotency_key(request.headers.get("Idempotency-Key"))
    data = schemas.new_transfer(_body())
    result = transfers.transfer(
        data.from_account, data.to_account, data.amount, idempotency_key=key
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    return schemas.transfer(result.transfer), 201, headers


@api.get("/health")
def get_health() -> ResponseReturnValue:
    if health.database_is_reachable():
        return {"status": "ok", "database": "ok"}
    return {"status": "error", "database": "unreachable"}, 503


@api.get("/openapi.json")
def get_openapi() -> ResponseReturnValue:
    return openapi.document()
