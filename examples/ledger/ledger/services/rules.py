"""Value rules every service enforces: names, emails, ids, amounts (the HTTP layer checks them too).

Each function takes an untrusted value, returns it checked (and normalised, for emails) or
raises :class:`ledger.services.errors.ValidationError` with a message naming the field.
Booleans are not integers here, even though Python says ``isinstance(True, int)``.
"""

from __future__ import annotations

import bisect
import re

from ..models import MAX_CENTS
from .errors import ValidationError

MAX_ID = 2**31 - 1
"""Ids are INTEGER columns, signed 32-bit on every backend; a larger id cannot exist, and
PostgreSQL would refuse to even compare with it. (Amounts are 64-bit: see ``MAX_CENTS``.)"""
MAX_AMOUNT = MAX_CENTS
NAME_MAX_LENGTH = 100
EMAIL_MAX_LENGTH = 254

CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
"""C0 controls, DEL and C1 controls (Unicode category Cc), as a regular expression class body."""

INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # SOFT HYPHEN
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x0600, 0x0605),  # Arabic number signs (prepended concatenation marks)
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x06DD, 0x06DD),  # ARABIC END OF AYAH
    (0x070F, 0x070F),  # SYRIAC ABBREVIATION MARK
    (0x0890, 0x0891),  # Arabic pound and piastre marks above
    (0x08E2, 0x08E2),  # ARABIC DISPUTED END OF AYAH
    (0x115F, 0x1160),  # HANGUL CHOSEONG and JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ and AA
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),  # ZERO WIDTH SPACE, (NON-)JOINER, LEFT-TO-RIGHT and RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2060, 0x2064),  # WORD JOINER, invisible operators
    (0x2066, 0x206F),  # bidirectional isolates, deprecated format characters
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTORS
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE (byte order mark)
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFFF9, 0xFFFB),  # interlinear annotation characters
    (0x110BD, 0x110BD),  # KAITHI NUMBER SIGN
    (0x110CD, 0x110CD),  # KAITHI NUMBER SIGN ABOVE
    (0x13430, 0x1343F),  # Egyptian hieroglyph format controls
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol beams, ties and slurs
    (0xE0001, 0xE0001),  # LANGUAGE TAG
    (0xE0020, 0xE007F),  # TAG characters
    (0xE0100, 0xE01EF),  # VARIATION SELECTORS SUPPLEMENT
)
"""Code points that show nothing by themselves: every format character (Unicode category Cf,
such as U+200B, U+FEFF, U+2060) and the other default-ignorable ones (fillers, variation
selectors). They are allowed next to visible characters (a joiner inside an emoji, a mark
before Arabic text), but a name needs a character that is not one of them."""


def _class_body(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(
        f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges
    )


_BMP_INVISIBLE_RANGES = tuple((low, high) for low, high in INVISIBLE_RANGES if high <= 0xFFFF)

NAME_PATTERN = (
    f"^[^{CONTROL_CHARACTERS}]*"
    f"[^\\s{CONTROL_CHARACTERS}{_class_body(_BMP_INVISIBLE_RANGES)}]"
    f"[^{CONTROL_CHARACTERS}]*$"
)
"""At least one visible character and no control characters, C1 ones included: the pattern the
OpenAPI document publishes. It names the invisible characters up to U+FFFF only, because an
ECMAScript pattern (without the ``u`` flag) cannot hold a range of characters beyond it;
:func:`name` refuses names made only of the others too."""

_INVISIBLE_STARTS = [low for low, _ in INVISIBLE_RANGES]


def _is_visible(character: str) -> bool:
    if character.isspace():
        return False
    code_point = ord(character)
    index = bisect.bisect_right(_INVISIBLE_STARTS, code_point) - 1
    return index < 0 or code_point > INVISIBLE_RANGES[index][1]


_EMAIL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(
    rf"{_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+", re.ASCII
)
_NAME = re.compile(NAME_PATTERN)


def integer(value: object, field: str, *, minimum: int, maximum: int) -> int:
    """An ``int`` (not a bool, not a float) with ``minimum <= value <= maximum``."""
    if type(value) is not int:  # also rejects bool, a subclass of int
        raise ValidationError(f"{field} must be an integer")
    if not minimum <= value <= maximum:
        raise ValidationError(f"{field} must be an integer from {minimum} to {maximum}")
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
    """1 to 100 characters, at least one of them visible, none of them a control character.

    Whitespace and the characters of ``INVISIBLE_RANGES`` are not visible.
    """
    text = _text(value, field)
    if not 1 <= len(text) <= NAME_MAX_LENGTH:
        raise ValidationError(f"{field} must be 1 to {NAME_MAX_LENGTH} characters long")
    if _NAME.fullmatch(text) is None or not any(map(_is_visible, text)):
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
