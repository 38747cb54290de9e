"""The HTTP views: parse the request, call one service, write its result. Nothing else.

No view opens, commits or closes anything: each service declares its own unit of work. The JSON
shapes, the OpenAPI document and the error handlers are HTTP plumbing, in ``ledger.http``.
"""

from __future__ import annotations

from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue

from .http import openapi
from .http.body import json_body
from .http.schemas import (
    ACCOUNT,
    ACCOUNT_BALANCE,
    CUSTOMER,
    CUSTOMER_PAGE,
    NEW_CUSTOMER,
    NEW_DEPOSIT,
    NEW_TRANSFER,
    NOTIFICATION,
    TRANSFER,
    idempotency_key,
    page_query,
)
from .services import accounts, customers, health, notifications, reports, rules, transfers

api = Blueprint("ledger", __name__)

# Ids are signed 32-bit on every backend (see rules.MAX_ID); larger ones in a URL are not found.
ID = f"int(max={rules.MAX_ID})"


@api.post("/customers")
def create_customer() -> ResponseReturnValue:
    data = NEW_CUSTOMER.parse(json_body())
    created = customers.register_customer(data.name, data.email)
    location = url_for(".get_customer", customer_id=created.id)
    return CUSTOMER.write(created), 201, {"Location": location}


@api.get("/customers")
def list_customers() -> ResponseReturnValue:
    page, per_page = page_query(request.args)
    return CUSTOMER_PAGE.write(customers.list_customers(page, per_page))


@api.get(f"/customers/<{ID}:customer_id>")
def get_customer(customer_id: int) -> ResponseReturnValue:
    return CUSTOMER.write(customers.get_customer(customer_id))


@api.get(f"/accounts/<{ID}:account_id>")
def get_account(account_id: int) -> ResponseReturnValue:
    return ACCOUNT.write(accounts.get_account(account_id))


@api.post(f"/accounts/<{ID}:account_id>/deposits")
def deposit(account_id: int) -> ResponseReturnValue:
    data = NEW_DEPOSIT.parse(json_body())
    return ACCOUNT_BALANCE.write(accounts.deposit(account_id, data.amount))


@api.get(f"/accounts/<{ID}:account_id>/transfers")
def account_transfers(account_id: int) -> ResponseReturnValue:
    statement = reports.account_statement(account_id)
    return {"items": [TRANSFER.write(transfer) for transfer in statement]}


@api.post("/transfers")
def create_transfer() -> ResponseReturnValue:
    key = idempotency_key(request.headers.get("Idempotency-Key"))
    data = NEW_TRANSFER.parse(json_body())
    result = transfers.transfer(
        data.from_account, data.to_account, data.amount, idempotency_key=key
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    return TRANSFER.write(result.transfer), 201, headers


@api.get(f"/transfers/<{ID}:transfer_id>/notifications")
def transfer_notifications(transfer_id: int) -> ResponseReturnValue:
    delivered = notifications.deliveries_of_transfer(transfer_id)
    return {"items": [NOTIFICATION.write(delivery) for delivery in delivered]}


@api.get("/health")
def get_health() -> ResponseReturnValue:
    if health.database_is_reachable():
        return {"status": "ok", "database": "ok"}
    return {"status": "error", "database": "unreachable"}, 503


@api.get("/openapi.json")
def get_openapi() -> ResponseReturnValue:
    return openapi.document(api)
