"""Value rules shared by the HTTP schemas and the services: names, emails, ids, amounts.

Each function takes an untrusted value, returns it checked (and normalised, for emails) or
raises :class:`ledger.errors.ValidationError` with a message naming the field. Booleans are not
integers here, even though Python says ``isinstance(True, int)``.
"""

from __future__ import annotations

import re

from .errors import ValidationError
from .models import MAX_CENTS

MAX_ID = 2**31 - 1
"""Ids are INTEGER columns, signed 32-bit on every backend; a larger id cannot exist, and
PostgreSQL would refuse to even compare with it. (Amounts are 64-bit: see ``MAX_CENTS``.)"""
MAX_AMOUNT = MAX_CENTS
NAME_MAX_LENGTH = 100
EMAIL_MAX_LENGTH = 254

NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
"""At least one visible character and no control characters (also used in the OpenAPI document)."""

_EMAIL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(
    rf"{_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+", re.ASCII
)
_NAME = re.compile(NAME_PATTERN)


class OutOfRange:
    """Stands for a JSON integer too long to be worth parsing (see ``ledger.schemas``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<integer out of range>"


OUT_OF_RANGE = OutOfRange()


def integer(value: object, field: str, *, minimum: int, maximum: int) -> int:
    """An ``int`` (not a bool, not a float) with ``minimum <= value <= maximum``."""
    out_of_range = f"{field} must be an integer from {minimum} to {maximum}"
    if isinstance(value, OutOfRange):
        raise ValidationError(out_of_range)
    if type(value) is not int:  # also rejects bool, a subclass of int
        raise ValidationError(f"{field} must be an integer")
    if not minimum <= value <= maximum:
        raise ValidationError(out_of_range)
    return value


def amount(value: object, field: str = "amount") -> int:
    """A positive amount of cents that fits in a 64-bit column."""
    return integer(value, field, minimum=1, maximum=MAX_AMOUNT)


def identifier(value: object, field: str) -> int:
    """A positive database id."""
    return integer(value, field, minimum=1, maximum=MAX_ID)


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field} must be valid Unicode text") from None
    return value


def name(value: object, field: str = "name") -> str:
    """1 to 100 characters, not all whitespace, no control characters."""
    text = _text(value, field)
    if not 1 <= len(text) <= NAME_MAX_LENGTH:
        raise ValidationError(f"{field} must be 1 to {NAME_MAX_LENGTH} characters long")
    if _NAME.fullmatch(text) is None:
        raise ValidationError(f"{field} must contain a visible character and no control characters")
    return text


def email(value: object, field: str = "email") -> str:
    """An ASCII address ``local@domain.tld``, returned lower-cased.

    Addresses are compared case-insensitively: lower-casing them before storing makes the
    unique constraint mean the same on PostgreSQL, MariaDB and SQLite.
    """
    text = _text(value, field)
    if len(text) > EMAIL_MAX_LENGTH or _EMAIL.fullmatch(text) is None:
        raise ValidationError(f"{field} must be a valid email address")
    local = text.partition("@")[0]
    if len(local) > 64:
        raise ValidationError(f"{field} must be a valid email address")
    return text.lower()
