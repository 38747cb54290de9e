"""The JSON API: parse the request, call one service, shape the result. Nothing else.

Transaction boundaries are the services' business, errors are ``ledger.errorhandlers``'.
"""

from __future__ import annotations

from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue

from . import openapi, rules, schemas
from .services import accounts, customers, health, reports, transfers

api = Blueprint("ledger", __name__)

# Ids are signed 64-bit on every backend; larger ones in a URL are simply not found.
ID = f"int(max={rules.MAX_ID})"


def _body() -> dict[str, object]:
    return schemas.json_object(request.get_data(cache=False))


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
