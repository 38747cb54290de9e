"""Reading accounts and depositing money over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.testing import UNKNOWN_ID, LedgerClient, error_code

MAX_CENTS = 2**63 - 1


def test_reading_an_account_shows_its_owner_and_balance(api: LedgerClient) -> None:
    customer = api.create_customer()
    account_id = customer["account"]["id"]

    response = api.get(f"/accounts/{account_id}")

    assert response.status_code == 200
    assert response.get_json() == {"id": account_id, "customer_id": customer["id"], "balance": 0}


def test_reading_an_unknown_account_is_a_json_404(api: LedgerClient) -> None:
    response = api.get(f"/accounts/{UNKNOWN_ID}")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_a_deposit_adds_to_the_balance(api: LedgerClient) -> None:
    account_id = api.open_account()

    first = api.post(f"/accounts/{account_id}/deposits", {"amount": 1500})
    second = api.post(f"/accounts/{account_id}/deposits", {"amount": 250})

    assert first.status_code == 200
    assert first.get_json() == {"id": account_id, "balance": 1500}
    assert second.get_json() == {"id": account_id, "balance": 1750}
    assert api.balance(account_id) == 1750


def test_a_deposit_into_an_unknown_account_is_not_found(api: LedgerClient) -> None:
    response = api.post(f"/accounts/{UNKNOWN_ID}/deposits", {"amount": 100})

    assert response.status_code == 404
    assert error_code(response) == "not_found"


INVALID_AMOUNTS: list[Any] = [
    0,
    -5,
    1.5,
    1.0,
    "100",
    True,
    False,
    None,
    [100],
    {"cents": 100},
    MAX_CENTS + 1,
    2**64,
    10**30,
]


@pytest.mark.parametrize("amount", INVALID_AMOUNTS, ids=repr)
def test_a_deposit_of_an_invalid_amount_is_unprocessable_and_changes_nothing(
    api: LedgerClient, amount: Any
) -> None:
    account_id = api.open_account(100)

    response = api.post(f"/accounts/{account_id}/deposits", {"amount": amount})

    assert response.status_code == 422
    assert error_code(response) == "validation_error"
    assert api.balance(account_id) == 100


@pytest.mark.parametrize(
    "body", [{}, {"amount": 5, "currency": "EUR"}, {"Amount": 5}], ids=["empty", "extra", "case"]
)
def test_a_deposit_with_missing_or_unknown_fields_is_unprocessable(
    api: LedgerClient, body: dict[str, Any]
) -> None:
    account_id = api.open_account()

    response = api.post(f"/accounts/{account_id}/deposits", body)

    assert response.status_code == 422
    assert error_code(response) == "validation_error"


def test_an_integer_literal_thousands_of_digits_long_is_unprocessable(api: LedgerClient) -> None:
    account_id = api.open_account()

    response = api.post(f"/accounts/{account_id}/deposits", raw=b'{"amount": ' + b"9" * 5000 + b"}")

    assert response.status_code == 422
    assert error_code(response) == "validation_error"


def test_the_largest_balance_is_accepted_and_one_cent_more_is_a_conflict(
    api: LedgerClient,
) -> None:
    account_id = api.open_account()

    full = api.post(f"/accounts/{account_id}/deposits", {"amount": MAX_CENTS})
    over = api.post(f"/accounts/{account_id}/deposits", {"amount": 1})

    assert full.status_code == 200
    assert full.get_json()["balance"] == MAX_CENTS
    assert over.status_code == 409
    assert error_code(over) == "balance_limit_exceeded"
    assert api.balance(account_id) == MAX_CENTS
