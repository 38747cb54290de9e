"""The JSON the API reads and writes, each shape declared once.

A :class:`Shape` is a JSON object whose properties are all required, with no others allowed. One
declaration parses a request body (each value checked by its rule from ``ledger.services.rules``),
writes a service's result as a response, and is a schema of the OpenAPI document
(``ledger.http.openapi``), so the three cannot disagree. A bad value raises
:class:`ledger.services.errors.ValidationError` (HTTP 422).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from types import SimpleNamespace
from typing import Any

from ..services import rules
from ..services.errors import ValidationError
from .body import parse_int


def _as_is(value: Any, field: str) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Field:
    """One property: its JSON Schema, the rule a request's value must pass, and, for a nested
    shape, how to write a result's value (other values are written as they are)."""

    schema: dict[str, Any]
    check: Callable[[Any, str], Any] = _as_is
    write: Callable[[Any], Any] | None = None


class Shape:
    """A JSON object; ``name`` is its name under ``components/schemas``."""

    __slots__ = ("name", "fields", "description", "_names", "_values", "_nested")

    def __init__(self, name: str, fields: dict[str, Field], description: str = "") -> None:
        self.name = name
        self.fields = fields
        self.description = description
        self._names = tuple(fields)
        # attrgetter returns a tuple for two names or more; a one-field shape asks twice.
        self._values = attrgetter(*self._names, *self._names[:1])
        self._nested = [(name, f.write) for name, f in fields.items() if f.write is not None]

    def ref(self) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{self.name}"}

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "required": list(self.fields),
            "properties": {name: field.schema for name, field in self.fields.items()},
            "additionalProperties": False,
        }
        if self.description:
            schema["description"] = self.description
        return schema

    def parse(self, body: Mapping[str, Any]) -> SimpleNamespace:
        """The body's values as attributes, each checked by its field's rule in declaration order
        (after refusing unknown fields, then missing ones)."""
        unknown = sorted(set(body) - set(self.fields))
        if unknown:
            names = ", ".join(repr(name[:40]) for name in unknown[:5])
            raise ValidationError(f"unknown field(s): {names}")
        missing = [name for name in self.fields if name not in body]
        if missing:
            raise ValidationError(f"missing field(s): {', '.join(missing)}")
        return SimpleNamespace(
            **{name: field.check(body[name], name) for name, field in self.fields.items()}
        )

    def write(self, result: object) -> dict[str, Any]:
        """The JSON of ``result``, a service's dataclass with an attribute per property.

        Built without a Python call per property: a response is written on every request.
        """
        body = dict(zip(self._names, self._values(result), strict=False))
        for name, write in self._nested:
            body[name] = write(body[name])
        return body


def _id(description: str) -> Field:
    # Ids are INTEGER columns: signed 32-bit on every backend (see rules.MAX_ID).
    schema = {"type": "integer", "format": "int32", "minimum": 1, "maximum": rules.MAX_ID}
    return Field({**schema, "description": description}, rules.identifier)


def _cents(description: str, *, minimum: int = 1) -> Field:
    schema = {"type": "integer", "format": "int64", "minimum": minimum, "maximum": rules.MAX_AMOUNT}
    return Field({**schema, "description": description}, rules.amount)


def _one(shape: Shape) -> Field:
    return Field(shape.ref(), write=shape.write)


def _many(shape: Shape) -> Field:
    return Field(
        {"type": "array", "items": shape.ref()}, write=lambda rows: list(map(shape.write, rows))
    )


def _text(check: Callable[[Any, str], Any] = _as_is, **schema: Any) -> Field:
    return Field({"type": "string", **schema}, check)


def id_schema(description: str) -> dict[str, Any]:
    """The JSON Schema of an id, for path parameters."""
    return _id(description).schema


PAGE_MAX = 2**31 - 1
PER_PAGE_MAX = 100
PER_PAGE_DEFAULT = 20

ERROR_CODES = (
    "Machine-readable, e.g. `not_found`, `validation_error`, `malformed_json`, `duplicate_email`,"
    " `insufficient_funds`, `same_account`, `idempotency_conflict`, `method_not_allowed`."
)
ERROR_DETAIL = Shape(
    "",
    {"code": _text(description=ERROR_CODES), "message": _text(description="For a person to read.")},
)
ERROR = Shape(
    "Error",
    {"error": Field(ERROR_DETAIL.json_schema())},
    description="Every error response has this shape.",
)
NEW_CUSTOMER = Shape(
    "NewCustomer",
    {
        "name": _text(
            rules.name,
            minLength=1,
            maxLength=rules.NAME_MAX_LENGTH,
            pattern=rules.NAME_PATTERN,
            description="At least one visible character, no control characters.",
        ),
        "email": _text(
            rules.email,
            format="email",
            maxLength=rules.EMAIL_MAX_LENGTH,
            description="Compared case-insensitively and stored lower-cased.",
        ),
    },
)
ACCOUNT_BALANCE = Shape(
    "AccountBalance",
    {"id": _id("Account id."), "balance": _cents("Balance in cents.", minimum=0)},
)
ACCOUNT = Shape(
    "Account",
    {
        "id": _id("Account id."),
        "customer_id": _id("Owner's customer id."),
        "balance": _cents("Balance in cents.", minimum=0),
    },
)
CUSTOMER = Shape(
    "Customer",
    {
        "id": _id("Customer id."),
        "name": _text(),
        "email": _text(),
        "account": _one(ACCOUNT_BALANCE),
    },
)
CUSTOMER_PAGE = Shape(
    "CustomerPage",
    {
        "items": _many(CUSTOMER),
        "page": Field({"type": "integer", "minimum": 1}),
        "per_page": Field({"type": "integer", "minimum": 1, "maximum": PER_PAGE_MAX}),
        "total": Field({"type": "integer", "minimum": 0}),
    },
)
NEW_DEPOSIT = Shape("NewDeposit", {"amount": _cents("Cents to add.")})
NEW_TRANSFER = Shape(
    "NewTransfer",
    {
        "from_account": _id("Account to debit."),
        "to_account": _id("Account to credit; must differ from `from_account`."),
        "amount": _cents("Cents to move."),
    },
)
TRANSFER = Shape(
    "Transfer",
    {
        "id": _id("Transfer id."),
        "from_account": _id("Debited account."),
        "to_account": _id("Credited account."),
        "amount": _cents("Cents moved."),
    },
)
TRANSFER_LIST = Shape("TransferList", {"items": _many(TRANSFER)})
NOTIFICATION = Shape(
    "Notification",
    {
        "kind": _text(description="What happened, e.g. `transfer.completed`."),
        "delivered_by": _text(
            enum=["in-process", "celery"],
            description="The app's own process, or a Celery worker (`make worker`).",
        ),
    },
)
NOTIFICATION_LIST = Shape("NotificationList", {"items": _many(NOTIFICATION)})
HEALTH = Shape(
    "Health",
    {"status": _text(enum=["ok", "error"]), "database": _text(enum=["ok", "unreachable"])},
)

SHAPES = (
    ERROR,
    NEW_CUSTOMER,
    ACCOUNT_BALANCE,
    ACCOUNT,
    CUSTOMER,
    CUSTOMER_PAGE,
    NEW_DEPOSIT,
    NEW_TRANSFER,
    TRANSFER,
    TRANSFER_LIST,
    NOTIFICATION,
    NOTIFICATION_LIST,
    HEALTH,
)
"""Every named shape: the ``components/schemas`` of the OpenAPI document."""


def error(code: str, message: str) -> dict[str, Any]:
    """An :data:`ERROR` body."""
    return {"error": {"code": code, "message": message}}


# Query string and headers

PAGE_QUERY: dict[str, dict[str, Any]] = {
    "page": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": 1},
    "per_page": {
        "type": "integer",
        "minimum": 1,
        "maximum": PER_PAGE_MAX,
        "default": PER_PAGE_DEFAULT,
    },
}
"""The query parameters of ``GET /customers``: both optional, both read by :func:`page_query`."""

IDEMPOTENCY_KEY: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": r"^[!-~]{1,255}$",
}
"""The ``Idempotency-Key`` header: 1 to 255 visible ASCII characters, e.g. a UUID."""

_DIGITS = re.compile(r"[0-9]+")
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY["pattern"])


def page_query(args: Mapping[str, str]) -> tuple[int, int]:
    """``?page=`` and ``?per_page=`` as in :data:`PAGE_QUERY`, with their defaults."""
    page, per_page = (_query_int(args, name, schema) for name, schema in PAGE_QUERY.items())
    return page, per_page


def _query_int(args: Mapping[str, str], name: str, schema: Mapping[str, Any]) -> int:
    raw = args.get(name)
    if raw is None:
        default: int = schema["default"]
        return default
    maximum = schema["maximum"]
    # Only plain ASCII digits: int() would also accept " 7", "+7", "7_0" and "٧".
    if _DIGITS.fullmatch(raw) is None:
        raise ValidationError(f"{name} must be an integer from 1 to {maximum}")
    return rules.integer(parse_int(raw), name, minimum=1, maximum=maximum)


def idempotency_key(header: str | None) -> str | None:
    """The ``Idempotency-Key`` header: absent, or as :data:`IDEMPOTENCY_KEY` says."""
    if header is None:
        return None
    if _IDEMPOTENCY_KEY.fullmatch(header) is None:
        raise ValidationError(
            "Idempotency-Key must be 1 to 255 visible ASCII characters, such as a UUID"
        )
    return header
