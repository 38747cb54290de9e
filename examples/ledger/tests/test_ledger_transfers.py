"""Moving money between accounts over HTTP, and listing an account's transfers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ledger.testing import UNKNOWN_ID, LedgerClient, error_code

MAX_CENTS = 2**63 - 1


def test_a_transfer_moves_money_between_accounts(api: LedgerClient) -> None:
    alice, bob = api.open_account(1000), api.open_account(50)

    response = api.post("/transfers", {"from_account": alice, "to_account": bob, "amount": 300})

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "from_account", "to_account", "amount"}
    assert body["from_account"] == alice
    assert body["to_account"] == bob
    assert body["amount"] == 300
    assert (api.balance(alice), api.balance(bob)) == (700, 350)


def test_a_transfer_of_the_whole_balance_leaves_zero(api: LedgerClient) -> None:
    alice, bob = api.open_account(1000), api.open_account()

    api.transfer(alice, bob, 1000)

    assert (api.balance(alice), api.balance(bob)) == (0, 1000)


def test_a_transfer_with_insufficient_funds_changes_nothing(api: LedgerClient) -> None:
    alice, bob = api.open_account(100), api.open_account(5)

    response = api.post("/transfers", {"from_account": alice, "to_account": bob, "amount": 101})

    assert response.status_code == 409
    assert error_code(response) == "insufficient_funds"
    assert (api.balance(alice), api.balance(bob)) == (100, 5)
    assert api.transfers_of(alice) == [] and api.transfers_of(bob) == []


def test_a_transfer_to_the_same_account_is_unprocessable(api: LedgerClient) -> None:
    alice = api.open_account(100)

    response = api.post("/transfers", {"from_account": alice, "to_account": alice, "amount": 1})

    assert response.status_code == 422
    assert error_code(response) == "same_account"
    assert api.balance(alice) == 100


@pytest.mark.parametrize("unknown_side", ["from_account", "to_account"])
def test_a_transfer_involving_an_unknown_account_is_not_found_and_changes_nothing(
    api: LedgerClient, unknown_side: str
) -> None:
    alice = api.open_account(100)
    body = {"from_account": alice, "to_account": alice, "amount": 10, unknown_side: UNKNOWN_ID}

    response = api.post("/transfers", body)

    assert response.status_code == 404
    assert error_code(response) == "not_found"
    assert api.balance(alice) == 100
    assert api.transfers_of(alice) == []


def test_a_transfer_that_would_overflow_the_credited_balance_changes_nothing(
    api: LedgerClient,
) -> None:
    rich, full = api.open_account(10), api.open_account(MAX_CENTS)

    response = api.post("/transfers", {"from_account": rich, "to_account": full, "amount": 1})

    assert response.status_code == 409
    assert error_code(response) == "balance_limit_exceeded"
    assert (api.balance(rich), api.balance(full)) == (10, MAX_CENTS)


INVALID_TRANSFERS: list[Callable[[int, int], dict[str, Any]]] = [
    lambda first, second: {"from_account": first, "to_account": second},
    lambda first, second: {"from_account": first, "amount": 5},
    lambda first, second: {"to_account": second, "amount": 5},
    lambda first, second: {"from_account": first, "to_account": second, "amount": 0},
    lambda first, second: {"from_account": first, "to_account": second, "amount": -1},
    lambda first, second: {"from_account": first, "to_account": second, "amount": True},
    lambda first, second: {"from_account": first, "to_account": second, "amount": 2.5},
    lambda first, second: {"from_account": first, "to_account": second, "amount": "5"},
    lambda first, second: {"from_account": first, "to_account": second, "amount": 2**63},
    lambda first, second: {"from_account": first, "to_account": second, "amount": 10**40},
    lambda first, second: {"from_account": True, "to_account": second, "amount": 5},
    lambda first, second: {"from_account": 0, "to_account": second, "amount": 5},
    lambda first, second: {"from_account": -1, "to_account": second, "amount": 5},
    lambda first, second: {"from_account": str(first), "to_account": second, "amount": 5},
    lambda first, second: {"from_account": first, "to_account": None, "amount": 5},
    lambda first, second: {"from_account": first, "to_account": 2**64, "amount": 5},
    lambda first, second: {
        "from_account": first,
        "to_account": second,
        "amount": 5,
        "memo": "rent",
    },
]
"""Bodies naming the test's two accounts, ``first`` and ``second``: ids keep growing from test
to test, so they are only known once the accounts exist."""


@pytest.mark.parametrize(
    "body", INVALID_TRANSFERS, ids=[f"body{n}" for n in range(len(INVALID_TRANSFERS))]
)
def test_an_invalid_transfer_is_unprocessable_and_changes_nothing(
    api: LedgerClient, body: Callable[[int, int], dict[str, Any]]
) -> None:
    first, second = api.open_account(100), api.open_account(100)

    response = api.post("/transfers", body(first, second))

    assert response.status_code == 422
    assert error_code(response) == "validation_error"
    assert (api.balance(first), api.balance(second)) == (100, 100)


def test_an_accounts_transfers_are_listed_newest_first_in_both_directions(
    api: LedgerClient,
) -> None:
    alice, bob, carol = api.open_account(1000), api.open_account(1000), api.open_account()
    first = api.transfer(alice, bob, 10)
    second = api.transfer(bob, alice, 20)
    api.transfer(bob, carol, 30)
    third = api.transfer(alice, carol, 40)

    response = api.get(f"/accounts/{alice}/transfers")

    assert response.status_code == 200
    assert response.get_json() == {"items": [third, second, first]}


def test_an_account_without_transfers_lists_none(api: LedgerClient) -> None:
    alice = api.open_account(100)

    assert api.get(f"/accounts/{alice}/transfers").get_json() == {"items": []}


def test_listing_transfers_of_an_unknown_account_is_not_found(api: LedgerClient) -> None:
    response = api.get(f"/accounts/{UNKNOWN_ID}/transfers")

    assert response.status_code == 404
    assert error_code(response) == "not_found"
