"""Registering, reading and listing customers over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.testing import UNKNOWN_ID, LedgerClient, error_code


def test_registering_a_customer_opens_an_account_with_a_zero_balance(api: LedgerClient) -> None:
    response = api.post("/customers", {"name": "Ada Lovelace", "email": "ada@example.com"})

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "name", "email", "account"}
    assert body["name"] == "Ada Lovelace"
    assert body["email"] == "ada@example.com"
    assert set(body["account"]) == {"id", "balance"}
    assert body["account"]["balance"] == 0
    assert response.headers["Location"] == f"/customers/{body['id']}"


def test_reading_a_customer_returns_what_registering_returned(api: LedgerClient) -> None:
    created = api.create_customer("Grace Hopper", "grace@example.com")

    response = api.get(f"/customers/{created['id']}")

    assert response.status_code == 200
    assert response.get_json() == created


def test_reading_an_unknown_customer_is_a_json_404(api: LedgerClient) -> None:
    response = api.get(f"/customers/{UNKNOWN_ID}")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


@pytest.mark.parametrize("path", ["/customers/0", "/customers/99999999999999999999999"])
def test_customer_ids_out_of_range_are_not_found(api: LedgerClient, path: str) -> None:
    response = api.get(path)

    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_registering_a_taken_email_is_a_conflict_and_writes_nothing(api: LedgerClient) -> None:
    api.create_customer("Ada", "ada@example.com")

    response = api.post("/customers", {"name": "Impostor", "email": "ada@example.com"})

    assert response.status_code == 409
    assert error_code(response) == "duplicate_email"
    assert api.get("/customers").get_json()["total"] == 1


def test_emails_are_compared_case_insensitively_and_stored_lower_cased(
    api: LedgerClient,
) -> None:
    created = api.create_customer("Ada", "Ada.Lovelace@Example.COM")

    response = api.post("/customers", {"name": "Ada", "email": "ada.lovelace@example.com"})

    assert created["email"] == "ada.lovelace@example.com"
    assert response.status_code == 409


def test_names_keep_unicode_and_may_be_exactly_100_characters(api: LedgerClient) -> None:
    name = "Zoë 🚀 " + "x" * 94

    created = api.create_customer(name)

    assert len(name) == 100
    assert api.get(f"/customers/{created['id']}").get_json()["name"] == name


INVALID_CUSTOMERS: list[Any] = [
    {"email": "a@example.com"},
    {"name": "Ada"},
    {"name": "", "email": "a@example.com"},
    {"name": "   ", "email": "a@example.com"},
    {"name": "x" * 101, "email": "a@example.com"},
    {"name": 123, "email": "a@example.com"},
    {"name": None, "email": "a@example.com"},
    {"name": True, "email": "a@example.com"},
    {"name": ["Ada"], "email": "a@example.com"},
    {"name": "Ada\x00Lovelace", "email": "a@example.com"},
    {"name": "Ada\nLovelace", "email": "a@example.com"},
    {"name": "Ada", "email": "not-an-email"},
    {"name": "Ada", "email": "ada@localhost"},
    {"name": "Ada", "email": "ada @example.com"},
    {"name": "Ada", "email": "ada@exa_mple.com"},
    {"name": "Ada", "email": "ádá@example.com"},
    {"name": "Ada", "email": "a" * 250 + "@example.com"},
    {"name": "Ada", "email": 42},
    {"name": "Ada", "email": "a@example.com", "admin": True},
]


@pytest.mark.parametrize("body", INVALID_CUSTOMERS)
def test_invalid_customers_are_unprocessable_and_not_stored(
    api: LedgerClient, body: dict[str, Any]
) -> None:
    response = api.post("/customers", body)

    assert response.status_code == 422
    assert error_code(response) == "validation_error"
    assert api.get("/customers").get_json()["total"] == 0


INVISIBLE_NAMES = [
    "\u200b",  # ZERO WIDTH SPACE
    "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (byte order mark)
    "\u2060\u2060",  # WORD JOINER
    "\u200b \u200c\u200d\u200e\u200f",  # zero width (non-)joiners, direction marks, a space
    "\u00ad",  # SOFT HYPHEN
    "\u202e\u2066\u2069",  # bidirectional overrides and isolates
    "\U000e0001\U000e0041",  # LANGUAGE TAG, TAG LATIN CAPITAL LETTER A
    "\u3164",  # HANGUL FILLER: a letter that shows nothing
    "\ufe0f\u034f",  # a variation selector, COMBINING GRAPHEME JOINER
]
"""Names that show nothing: format characters (Unicode category Cf) and other code points
that Unicode says to render as nothing (Default_Ignorable_Code_Point), with or without spaces."""

C1_CONTROL_NAMES = ["Ada\u0080Lovelace", "Ada\u0085", "\u009fAda", "Ada\u009b31m"]
"""Names holding C1 control characters (U+0080 to U+009F); U+009B is the terminal's CSI."""


@pytest.mark.parametrize("name", INVISIBLE_NAMES + C1_CONTROL_NAMES, ids=ascii)
def test_a_name_that_shows_nothing_or_holds_a_c1_control_is_unprocessable(
    api: LedgerClient, name: str
) -> None:
    response = api.post("/customers", {"name": name, "email": "a@example.com"})

    assert response.status_code == 422
    assert error_code(response) == "validation_error"
    assert "visible character" in response.get_json()["error"]["message"]
    assert api.get("/customers").get_json()["total"] == 0


@pytest.mark.parametrize(
    "name",
    [
        "Ada\u00adLovelace",  # a soft hyphen between letters
        "\U0001f469\u200d\U0001f52c",  # WOMAN SCIENTIST: two emoji joined by ZWJ
        "\u200fنور",  # a right-to-left mark before Arabic letters
        "\u00a0Ada\u3000",  # no-break and ideographic spaces around a name
    ],
    ids=ascii,
)
def test_format_characters_next_to_visible_ones_are_kept(api: LedgerClient, name: str) -> None:
    created = api.create_customer(name)

    assert api.get(f"/customers/{created['id']}").get_json()["name"] == name


def test_a_name_with_a_lone_surrogate_is_unprocessable(api: LedgerClient) -> None:
    raw = b'{"name": "Ada \\ud800", "email": "a@example.com"}'

    response = api.post("/customers", raw=raw)

    assert response.status_code == 422
    assert error_code(response) == "validation_error"


def test_customers_are_listed_in_id_order_a_page_at_a_time(api: LedgerClient) -> None:
    created = [api.create_customer(f"Customer {n}") for n in range(5)]

    response = api.get("/customers?page=2&per_page=2")

    assert response.status_code == 200
    assert response.get_json() == {
        "items": created[2:4],
        "page": 2,
        "per_page": 2,
        "total": 5,
    }


def test_listing_defaults_to_the_first_page_of_twenty(api: LedgerClient) -> None:
    created = [api.create_customer(f"Customer {n}") for n in range(3)]

    body = api.get("/customers").get_json()

    assert body == {"items": created, "page": 1, "per_page": 20, "total": 3}


def test_a_page_past_the_end_is_empty(api: LedgerClient) -> None:
    api.create_customer()

    body = api.get("/customers?page=3&per_page=100").get_json()

    assert body == {"items": [], "page": 3, "per_page": 100, "total": 1}


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1.5",
        "page=",
        "page=+2",
        "page=%201",
        "page=99999999999999999999999",
        "per_page=0",
        "per_page=101",
        "per_page=ten",
    ],
)
def test_invalid_paging_is_unprocessable(api: LedgerClient, query: str) -> None:
    response = api.get(f"/customers?{query}")

    assert response.status_code == 422
    assert error_code(response) == "validation_error"


def test_the_last_page_that_can_be_asked_for_is_empty_not_an_error(api: LedgerClient) -> None:
    api.create_customer()

    response = api.get("/customers?page=2147483647&per_page=100")

    assert response.status_code == 200
    assert response.get_json()["items"] == []
