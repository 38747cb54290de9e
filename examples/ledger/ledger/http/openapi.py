"""The OpenAPI 3.0 document served at ``GET /openapi.json``, built from the routes and the shapes.

Paths, methods and path parameters come from the blueprint's URL rules; bodies and their
schemas are the shapes of :mod:`ledger.http.schemas`, whose limits come from
``ledger.services.rules``. Written here is only what a person has to say: each operation's
summary and what its answers mean. An operation that reads a body answers 400, 411, 413 and 422,
and one with an id in its path answers 404, unless it says otherwise.
"""

from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, current_app

from . import schemas
from .schemas import Shape

JSON = "application/json"


def _answer(
    description: str, body: Shape | dict[str, Any] = schemas.ERROR, **headers: Any
) -> dict[str, Any]:
    schema = body.ref() if isinstance(body, Shape) else body
    answer: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        answer["headers"] = {name.replace("_", "-"): value for name, value in headers.items()}
    return answer


BODY_ERRORS = {
    400: _answer("The body is not JSON or not a JSON object (code `malformed_json`)."),
    411: _answer(
        "The body came in chunks that this server does not decode; send a Content-Length."
    ),
    413: _answer("The body is larger than 64 KiB, whether sent with a length or in chunks."),
    422: _answer("A field is missing, unknown, of the wrong type or out of range."),
}


@dataclass(frozen=True, slots=True)
class Operation:
    """What the routes cannot tell about one view."""

    operation_id: str
    summary: str
    answers: dict[int, dict[str, Any]]
    body: Shape | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""


OPERATIONS = {  # by view name
    "create_customer": Operation(
        "createCustomer",
        "Register a customer and open their account with a balance of 0.",
        {
            201: _answer(
                "The customer was registered.",
                schemas.CUSTOMER,
                Location={"description": "URL of the new customer.", "schema": {"type": "string"}},
            ),
            409: _answer("The email is taken (code `duplicate_email`)."),
        },
        body=schemas.NEW_CUSTOMER,
    ),
    "list_customers": Operation(
        "listCustomers",
        "List customers in id order, a page at a time.",
        {
            200: _answer("One page of customers.", schemas.CUSTOMER_PAGE),
            422: _answer("`page` or `per_page` is not an integer in range."),
        },
        parameters=[
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in schemas.PAGE_QUERY.items()
        ],
    ),
    "get_customer": Operation(
        "getCustomer",
        "Read a customer and their account.",
        {200: _answer("The customer.", schemas.CUSTOMER)},
    ),
    "get_account": Operation(
        "getAccount", "Read an account's balance.", {200: _answer("The account.", schemas.ACCOUNT)}
    ),
    "deposit": Operation(
        "deposit",
        "Add money to an account.",
        {
            200: _answer("The account's new balance.", schemas.ACCOUNT_BALANCE),
            409: _answer("The balance would exceed 2^63-1 cents (code `balance_limit_exceeded`)."),
        },
        body=schemas.NEW_DEPOSIT,
    ),
    "account_transfers": Operation(
        "listAccountTransfers",
        "Transfers into or out of an account, newest first.",
        {200: _answer("The account's transfers.", schemas.TRANSFER_LIST)},
    ),
    "transfer_notifications": Operation(
        "listTransferNotifications",
        "Notifications delivered about a transfer (none until its outbox message is delivered).",
        {200: _answer("The delivered notifications.", schemas.NOTIFICATION_LIST)},
    ),
    "create_transfer": Operation(
        "createTransfer",
        "Move money between two accounts, atomically.",
        {
            201: _answer(
                "The transfer was made, now or by an earlier request with the same key.",
                schemas.TRANSFER,
                Idempotent_Replayed={
                    "description": "`true` when an earlier request made the transfer.",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            ),
            404: _answer("No account has this id (code `not_found`)."),
            409: _answer(
                "Insufficient funds (`insufficient_funds`), the key was used with another "
                "body (`idempotency_conflict`) or the credited balance would overflow "
                "(`balance_limit_exceeded`). Nothing was changed."
            ),
            422: _answer("Invalid body or key, or both accounts are the same (`same_account`)."),
        },
        body=schemas.NEW_TRANSFER,
        parameters=[
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": schemas.IDEMPOTENCY_KEY,
                "description": "Any 1 to 255 visible ASCII characters, such as a UUID.",
            }
        ],
        description=(
            "With an `Idempotency-Key`, repeating the request with the same body returns "
            "the first response and moves the money once; the same key with another body "
            "is a 409. Only successful transfers are recorded, so a failed request may be "
            "retried with its key."
        ),
    ),
    "get_health": Operation(
        "health",
        "Whether the app can reach its database.",
        {
            200: _answer("The database answered.", schemas.HEALTH),
            503: _answer("The database did not answer.", schemas.HEALTH),
        },
    ),
    "get_openapi": Operation(
        "openapi",
        "This document.",
        {200: _answer("An OpenAPI 3.0 document.", {"type": "object"})},
    ),
}

INFO = {
    "title": "flask-uow ledger example",
    "version": "0.1.0",
    "description": (
        "A small banking ledger. Money is integer cents. Every error is "
        '`{"error": {"code": ..., "message": ...}}`; unknown routes answer 404 and '
        "unsupported methods 405 in the same shape."
    ),
}


def document(blueprint: Blueprint) -> dict[str, Any]:
    """The document of ``blueprint``'s routes in the current app; a copy the caller may change."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in current_app.url_map.iter_rules():
        name, _, view = rule.endpoint.partition(".")
        if name != blueprint.name:
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(view, sorted(rule.arguments))
    components = {shape.name: shape.json_schema() for shape in schemas.SHAPES}
    return deepcopy(
        {"openapi": "3.0.3", "info": INFO, "paths": paths, "components": {"schemas": components}}
    )


def _operation(view: str, path_ids: list[str]) -> dict[str, Any]:
    if view not in OPERATIONS:
        raise LookupError(f"add the view {view!r} to ledger.http.openapi.OPERATIONS")
    operation = OPERATIONS[view]
    answers: dict[int, dict[str, Any]] = {}
    parameters: list[dict[str, Any]] = []
    for name in path_ids:  # customer_id, account_id
        kind = name.removesuffix("_id")
        schema = schemas.id_schema(f"{kind.capitalize()} id.")
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        answers[404] = _answer(f"No {kind} has this id (code `not_found`).")
    result: dict[str, Any] = {"operationId": operation.operation_id, "summary": operation.summary}
    if operation.description:
        result["description"] = operation.description
    if operation.body is not None:
        answers.update(BODY_ERRORS)
        result["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": operation.body.ref()}},
        }
    if parameters or operation.parameters:
        result["parameters"] = parameters + operation.parameters
    answers.update(operation.answers)
    result["responses"] = {str(status): answer for status, answer in sorted(answers.items())}
    return result
