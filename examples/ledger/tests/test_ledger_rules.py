"""The value rules on their own, where a table of characters must agree with Unicode."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from ledger.services import rules
from ledger.services.errors import ValidationError


def _invisible(code_point: int) -> bool:
    return any(low <= code_point <= high for low, high in rules.INVISIBLE_RANGES)


def test_every_format_character_of_this_python_counts_as_invisible() -> None:
    missing = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cf" and not _invisible(code)
    ]

    assert missing == [], f"add these format characters to rules.INVISIBLE_RANGES: {missing}"


@pytest.mark.parametrize(("low", "high"), rules.INVISIBLE_RANGES)
def test_a_name_made_only_of_invisible_characters_is_refused(low: int, high: int) -> None:
    for code_point in {low, (low + high) // 2, high}:
        with pytest.raises(ValidationError, match="visible character"):
            rules.name(chr(code_point) + " " + chr(code_point))


@pytest.mark.parametrize("code_point", [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)])
def test_a_control_character_anywhere_in_a_name_is_refused(code_point: int) -> None:
    with pytest.raises(ValidationError, match="no control characters"):
        rules.name(f"Ada{chr(code_point)}Lovelace")


def test_the_published_name_pattern_is_plain_ascii_with_escapes_up_to_u_ffff() -> None:
    """ECMAScript patterns without the u flag cannot hold ranges of characters past U+FFFF."""
    assert rules.NAME_PATTERN.isascii()
    assert "\\U" not in rules.NAME_PATTERN
    assert re.fullmatch(rules.NAME_PATTERN, "Ada Lovelace")
    assert not re.fullmatch(rules.NAME_PATTERN, "\u200b\ufeff")
