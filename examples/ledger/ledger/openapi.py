"""The OpenAPI 3.0 description of the JSON API, served at ``GET /openapi.json``.

Written by hand, next to the hand-written validation it describes: the limits come from the same
constants (``ledger.rules``, ``ledger.schemas``), so the document and the code cannot disagree
about what is valid.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from . import rules, schemas

JSON = "application/json"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], *, description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


def _id(description: str) -> dict[str, Any]:
    # Ids are INTEGER columns: signed 32-bit on every backend (see rules.MAX_ID).
    return {
        "type": "integer",
        "format": "int32",
        "minimum": 1,
        "maximum": rules.MAX_ID,
        "description": description,
    }


def _cents(description: str, *, minimum: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "format": "int64",
        "minimum": minimum,
        "maximum": rules.MAX_AMOUNT,
        "description": description,
    }


def _response(
    description: str, schema: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str) -> dict[str, Any]:
    return _response(description, "Error")


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(schema)}}}


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _id(description)}


MALFORMED = _error("The body is not JSON or not a JSON object (code `malformed_json`).")
INVALID = _error("A field is missing, unknown, of the wrong type or out of range.")
TOO_LARGE = _error("The body is larger than 64 KiB, whether sent with a length or in chunks.")
LENGTH_REQUIRED = _error(
    "The body came in chunks that this server does not decode; send a Content-Length."
)
CUSTOMER_NOT_FOUND = _error("No customer has this id (code `not_found`).")
ACCOUNT_NOT_FOUND = _error("No account has this id (code `not_found`).")

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {
                        "type": "string",
                        "description": "Machine-readable, e.g. `not_found`, `validation_error`,"
                        " `malformed_json`, `duplicate_email`, `insufficient_funds`,"
                        " `same_account`, `idempotency_conflict`, `method_not_allowed`.",
                    },
                    "message": {"type": "string", "description": "For a person to read."},
                }
            )
        },
        description="Every error response has this shape.",
    ),
    "NewCustomer": _object(
        {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": rules.NAME_MAX_LENGTH,
                "pattern": rules.NAME_PATTERN,
                "description": "At least one visible character, no control characters.",
            },
            "email": {
                "type": "string",
                "format": "email",
                "maxLength": rules.EMAIL_MAX_LENGTH,
                "description": "Compared case-insensitively and stored lower-cased.",
            },
        }
    ),
    "AccountBalance": _object(
        {"id": _id("Account id."), "balance": _cents("Balance in cents.", minimum=0)}
    ),
    "Account": _object(
        {
            "id": _id("Account id."),
            "customer_id": _id("Owner's customer id."),
            "balance": _cents("Balance in cents.", minimum=0),
        }
    ),
    "Customer": _object(
        {
            "id": _id("Customer id."),
            "name": {"type": "string"},
            "email": {"type": "string"},
            "account": _ref("AccountBalance"),
        }
    ),
    "CustomerPage": _object(
        {
            "items": {"type": "array", "items": _ref("Customer")},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": schemas.PER_PAGE_MAX},
            "total": {"type": "integer", "minimum": 0},
        }
    ),
    "NewDeposit": _object({"amount": _cents("Cents to add.", minimum=1)}),
    "NewTransfer": _object(
        {
            "from_account": _id("Account to debit."),
            "to_account": _id("Account to credit; must differ from `from_account`."),
            "amount": _cents("Cents to move.", minimum=1),
        }
    ),
    "Transfer": _object(
        {
            "id": _id("Transfer id."),
            "from_account": _id("Debited account."),
            "to_account": _id("Credited account."),
            "amount": _cents("Cents moved.", minimum=1),
        }
    ),
    "TransferList": _object({"items": {"type": "array", "items": _ref("Transfer")}}),
    "Health": _object(
        {
            "status": {"type": "string", "enum": ["ok", "error"]},
            "database": {"type": "string", "enum": ["ok", "unreachable"]},
        }
    ),
}

PATHS: dict[str, Any] = {
    "/customers": {
        "post": {
            "operationId": "createCustomer",
            "summary": "Register a customer and open their account with a balance of 0.",
            "requestBody": _body("NewCustomer"),
            "responses": {
                "201": _response(
                    "The customer was registered.",
                    "Customer",
                    {
                        "Location": {
                            "description": "URL of the new customer.",
                            "schema": {"type": "string"},
                        }
                    },
                ),
                "400": MALFORMED,
                "409": _error("The email is taken (code `duplicate_email`)."),
                "411": LENGTH_REQUIRED,
                "413": TOO_LARGE,
                "422": INVALID,
            },
        },
        "get": {
            "operationId": "listCustomers",
            "summary": "List customers in id order, a page at a time.",
            "parameters": [
                {
                    "name": "page",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": schemas.PAGE_MAX,
                        "default": 1,
                    },
                },
                {
                    "name": "per_page",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": schemas.PER_PAGE_MAX,
                        "default": schemas.PER_PAGE_DEFAULT,
                    },
                },
            ],
            "responses": {
                "200": _response("One page of customers.", "CustomerPage"),
                "422": _error("`page` or `per_page` is not an integer in range."),
            },
        },
    },
    "/customers/{customer_id}": {
        "get": {
            "operationId": "getCustomer",
            "summary": "Read a customer and their account.",
            "parameters": [_path_id("customer_id", "Customer id.")],
            "responses": {
                "200": _response("The customer.", "Customer"),
                "404": CUSTOMER_NOT_FOUND,
            },
        }
    },
    "/accounts/{account_id}": {
        "get": {
            "operationId": "getAccount",
            "summary": "Read an account's balance.",
            "parameters": [_path_id("account_id", "Account id.")],
            "responses": {
                "200": _response("The account.", "Account"),
                "404": ACCOUNT_NOT_FOUND,
            },
        }
    },
    "/accounts/{account_id}/deposits": {
        "post": {
            "operationId": "deposit",
            "summary": "Add money to an account.",
            "parameters": [_path_id("account_id", "Account id.")],
            "requestBody": _body("NewDeposit"),
            "responses": {
                "200": _response("The account's new balance.", "AccountBalance"),
                "400": MALFORMED,
                "404": ACCOUNT_NOT_FOUND,
                "409": _error(
                    "The balance would exceed 2^63-1 cents (code `balance_limit_exceeded`)."
                ),
                "411": LENGTH_REQUIRED,
                "413": TOO_LARGE,
                "422": INVALID,
            },
        }
    },
    "/accounts/{account_id}/transfers": {
        "get": {
            "operationId": "listAccountTransfers",
            "summary": "Transfers into or out of an account, newest first.",
            "parameters": [_path_id("account_id", "Account id.")],
            "responses": {
                "200": _response("The account's transfers.", "TransferList"),
                "404": ACCOUNT_NOT_FOUND,
            },
        }
    },
    "/transfers": {
        "post": {
            "operationId": "createTransfer",
            "summary": "Move money between two accounts, atomically.",
            "description": (
                "With an `Idempotency-Key`, repeating the request with the same body returns "
                "the first response and moves the money once; the same key with another body "
                "is a 409. Only successful transfers are recorded, so a failed request may be "
                "retried with its key."
            ),
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": schemas.IDEMPOTENCY_KEY_MAX_LENGTH,
                        "pattern": schemas.IDEMPOTENCY_KEY_PATTERN,
                    },
                    "description": "Any 1 to 255 visible ASCII characters, such as a UUID.",
                }
            ],
            "requestBody": _body("NewTransfer"),
            "responses": {
                "201": _response(
                    "The transfer was made, now or by an earlier request with the same key.",
                    "Transfer",
                    {
                        "Idempotent-Replayed": {
                            "description": "`true` when an earlier request made the transfer.",
                            "schema": {"type": "string", "enum": ["true"]},
                        }
                    },
                ),
                "400": MALFORMED,
                "404": ACCOUNT_NOT_FOUND,
                "409": _error(
                    "Insufficient funds (`insufficient_funds`), the key was used with another "
                    "body (`idempotency_conflict`) or the credited balance would overflow "
                    "(`balance_limit_exceeded`). Nothing was changed."
                ),
                "411": LENGTH_REQUIRED,
                "413": TOO_LARGE,
                "422": _error(
                    "Invalid body or key, or both accounts are the same (`same_account`)."
                ),
            },
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Whether the app can reach its database.",
            "responses": {
                "200": _response("The database answered.", "Health"),
                "503": _response("The database did not answer.", "Health"),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "responses": {
                "200": {
                    "description": "An OpenAPI 3.0 document.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "flask-uow ledger example",
        "version": "0.1.0",
        "description": (
            "A small banking ledger. Money is integer cents. Every error is "
            '`{"error": {"code": ..., "message": ...}}`; unknown routes answer 404 and '
            "unsupported methods 405 in the same shape."
        ),
    },
    "paths": PATHS,
    "components": {"schemas": SCHEMAS},
}


def document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    return deepcopy(_DOCUMENT)
