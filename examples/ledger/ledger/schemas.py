"""Request parsing and response shaping for the JSON API, written by hand.

Parsing turns untrusted bytes and strings into small typed inputs or raises
:class:`MalformedBody` (HTTP 400) or :class:`ledger.errors.ValidationError` (HTTP 422). Shaping
turns service results into the JSON documents described in ``ledger.openapi``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import rules
from .errors import LedgerError, ValidationError
from .services.accounts import AccountDetails
from .services.customers import CustomerDetails, CustomerPage
from .services.transfers import TransferDetails

PAGE_MAX = 2**31 - 1
PER_PAGE_MAX = 100
PER_PAGE_DEFAULT = 20
IDEMPOTENCY_KEY_MAX_LENGTH = 255
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"
"""1 to 255 visible ASCII characters, e.g. a UUID (also used in the OpenAPI document)."""

_LONGEST_INT_LITERAL = 20  # digits of 2**64; longer literals are out of range for every field
_DIGITS = re.compile(r"[0-9]+")
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


class MalformedBody(LedgerError):
    """The body is not JSON, or not a JSON object."""

    code = "malformed_json"


# Parsing


def _parse_int(literal: str) -> int | rules.OutOfRange:
    # Python refuses to convert integer literals longer than 4300 digits (a ValueError, which
    # would look like malformed JSON); anything longer than 20 digits is out of range anyway.
    if len(literal.lstrip("-")) > _LONGEST_INT_LITERAL:
        return rules.OUT_OF_RANGE
    return int(literal)


def _reject_constant(literal: str) -> None:
    raise ValueError(f"{literal} is not valid JSON")


def json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        value = json.loads(body, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise MalformedBody("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedBody("the request body must be a JSON object")
    return value


def _fields(body: Mapping[str, Any], required: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(required))
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise ValidationError(f"unknown field(s): {names}")
    missing = [name for name in required if name not in body]
    if missing:
        raise ValidationError(f"missing field(s): {', '.join(missing)}")


@dataclass(frozen=True, slots=True)
class NewCustomer:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class NewDeposit:
    amount: int


@dataclass(frozen=True, slots=True)
class NewTransfer:
    from_account: int
    to_account: int
    amount: int


@dataclass(frozen=True, slots=True)
class PageRequest:
    page: int
    per_page: int


def new_customer(body: Mapping[str, Any]) -> NewCustomer:
    """``{"name": 1-100 characters, "email": an address}``."""
    _fields(body, ("name", "email"))
    return NewCustomer(name=rules.name(body["name"]), email=rules.email(body["email"]))


def new_deposit(body: Mapping[str, Any]) -> NewDeposit:
    """``{"amount": cents > 0}``."""
    _fields(body, ("amount",))
    return NewDeposit(amount=rules.amount(body["amount"]))


def new_transfer(body: Mapping[str, Any]) -> NewTransfer:
    """``{"from_account": id, "to_account": id, "amount": cents > 0}``."""
    _fields(body, ("from_account", "to_account", "amount"))
    return NewTransfer(
        from_account=rules.identifier(body["from_account"], "from_account"),
        to_account=rules.identifier(body["to_account"], "to_account"),
        amount=rules.amount(body["amount"]),
    )


def _query_int(args: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    # Only plain ASCII digits: int() would also accept " 7", "+7", "7_0" and "٧".
    if _DIGITS.fullmatch(raw) is None:
        raise ValidationError(f"{name} must be an integer from 1 to {maximum}")
    value = _parse_int(raw)
    return rules.integer(value, name, minimum=1, maximum=maximum)


def page_request(args: Mapping[str, str]) -> PageRequest:
    """``?page=`` (default 1) and ``?per_page=`` (1 to 100, default 20)."""
    return PageRequest(
        page=_query_int(args, "page", 1, PAGE_MAX),
        per_page=_query_int(args, "per_page", PER_PAGE_DEFAULT, PER_PAGE_MAX),
    )


def idempotency_key(header: str | None) -> str | None:
    """The ``Idempotency-Key`` header: absent, or 1 to 255 visible ASCII characters."""
    if header is None:
        return None
    if _IDEMPOTENCY_KEY.fullmatch(header) is None:
        raise ValidationError(
            "Idempotency-Key must be 1 to 255 visible ASCII characters, such as a UUID"
        )
    return header


# Shaping


def account(details: AccountDetails) -> dict[str, Any]:
    return {"id": details.id, "customer_id": details.customer_id, "balance": details.balance}


def account_balance(details: AccountDetails) -> dict[str, Any]:
    return {"id": details.id, "balance": details.balance}


def customer(details: CustomerDetails) -> dict[str, Any]:
    return {
        "id": details.id,
        "name": details.name,
        "email": details.email,
        "account": account_balance(details.account),
    }


def customer_page(page: CustomerPage) -> dict[str, Any]:
    return {
        "items": [customer(c) for c in page.items],
        "page": page.page,
        "per_page": page.per_page,
        "total": page.total,
    }


def transfer(details: TransferDetails) -> dict[str, Any]:
    return {
        "id": details.id,
        "from_account": details.from_account,
        "to_account": details.to_account,
        "amount": details.amount,
    }


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
