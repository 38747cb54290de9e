"""``Idempotency-Key`` on ``POST /transfers``: one key, one transfer, the same answer."""

from __future__ import annotations

import pytest

from ledger.services.notifications import outbox
from ledger.testing import LedgerClient, error_code


def test_repeating_a_transfer_with_its_key_replays_the_first_response_and_moves_money_once(
    api: LedgerClient,
) -> None:
    alice, bob = api.open_account(1000), api.open_account()
    body = {"from_account": alice, "to_account": bob, "amount": 250}
    headers = {"Idempotency-Key": "3f1c9a2e-7b1d-4f5e-9c8a-1d2e3f4a5b6c"}

    first = api.post("/transfers", body, headers=headers)
    second = api.post("/transfers", body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert (api.balance(alice), api.balance(bob)) == (750, 250)
    assert len(api.transfers_of(alice)) == 1
    assert len(outbox.sent("transfer.completed")) == 1


def test_the_order_of_fields_in_the_body_does_not_matter_for_a_replay(api: LedgerClient) -> None:
    alice, bob = api.open_account(1000), api.open_account()
    headers = {"Idempotency-Key": "order"}
    raw_one = f'{{"from_account": {alice}, "to_account": {bob}, "amount": 5}}'.encode()
    raw_two = f'{{"amount": 5, "to_account": {bob}, "from_account": {alice}}}'.encode()

    first = api.post("/transfers", raw=raw_one, headers=headers)
    second = api.post("/transfers", raw=raw_two, headers=headers)

    assert first.get_json() == second.get_json()
    assert api.balance(alice) == 995


def test_reusing_a_key_with_another_body_is_a_conflict_and_changes_nothing(
    api: LedgerClient,
) -> None:
    alice, bob = api.open_account(1000), api.open_account()
    headers = {"Idempotency-Key": "pay-rent-2024-05"}
    api.post(
        "/transfers", {"from_account": alice, "to_account": bob, "amount": 100}, headers=headers
    )

    response = api.post(
        "/transfers", {"from_account": alice, "to_account": bob, "amount": 999}, headers=headers
    )

    assert response.status_code == 409
    assert error_code(response) == "idempotency_conflict"
    assert (api.balance(alice), api.balance(bob)) == (900, 100)


def test_different_keys_make_different_transfers(api: LedgerClient) -> None:
    alice, bob = api.open_account(1000), api.open_account()
    body = {"from_account": alice, "to_account": bob, "amount": 100}

    one = api.post("/transfers", body, headers={"Idempotency-Key": "one"})
    two = api.post("/transfers", body, headers={"Idempotency-Key": "two"})

    assert one.get_json()["id"] != two.get_json()["id"]
    assert api.balance(alice) == 800


def test_keys_are_case_sensitive_on_every_backend(api: LedgerClient) -> None:
    alice, bob = api.open_account(1000), api.open_account()

    lower = api.post(
        "/transfers",
        {"from_account": alice, "to_account": bob, "amount": 1},
        headers={"Idempotency-Key": "abc"},
    )
    upper = api.post(
        "/transfers",
        {"from_account": alice, "to_account": bob, "amount": 2},
        headers={"Idempotency-Key": "ABC"},
    )

    assert (lower.status_code, upper.status_code) == (201, 201)
    assert api.balance(bob) == 3


def test_a_failed_transfer_does_not_use_up_its_key(api: LedgerClient) -> None:
    alice, bob = api.open_account(50), api.open_account()
    body = {"from_account": alice, "to_account": bob, "amount": 80}
    headers = {"Idempotency-Key": "retry-me"}

    refused = api.post("/transfers", body, headers=headers)
    api.deposit(alice, 50)
    accepted = api.post("/transfers", body, headers=headers)

    assert refused.status_code == 409
    assert error_code(refused) == "insufficient_funds"
    assert accepted.status_code == 201
    assert (api.balance(alice), api.balance(bob)) == (20, 80)


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\xe9"], ids=repr)
def test_an_invalid_key_is_unprocessable_and_changes_nothing(api: LedgerClient, key: str) -> None:
    alice, bob = api.open_account(100), api.open_account()

    response = api.post(
        "/transfers",
        {"from_account": alice, "to_account": bob, "amount": 10},
        headers={"Idempotency-Key": key},
    )

    assert response.status_code == 422
    assert error_code(response) == "validation_error"
    assert api.balance(alice) == 100


def test_a_key_of_255_visible_characters_is_accepted(api: LedgerClient) -> None:
    alice, bob = api.open_account(100), api.open_account()

    response = api.post(
        "/transfers",
        {"from_account": alice, "to_account": bob, "amount": 10},
        headers={"Idempotency-Key": "~" * 255},
    )

    assert response.status_code == 201
