"""The Quart apps the HTTP benchmark drives (tests/peer_apps): both answer the ledger's hot
endpoints alike, with the ledger's shapes and statuses, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

# The benchmark serves them on direct connections (PgBouncer would need its own settings).
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("backend_url", ["sqlite", "postgresql", "mariadb"], indirect=True),
]

BALANCE = 10**6
SEEDED_TRANSFERS = [
    {"from_account_id": 1 + i % 10, "to_account_id": 1 + (i + 1) % 10, "amount": 1}
    for i in range(30)
]
"""Ids 1 to 30, in this order."""


@pytest.fixture
def seeded(backend_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """10 customers with an account each and 30 transfers, on the ledger's tables."""
    # The ledger example is installed by `make test`, not in the SQLAlchemy 2.0 run.
    pytest.importorskip("ledger", reason="the ledger example is not installed")
    from ledger.models import Account, Customer, Transfer
    from ledger.models import Base as LedgerBase

    monkeypatch.setenv("BENCH_DATABASE_URL", backend_url)
    monkeypatch.setenv("BENCH_POOL_SIZE", "2")
    engine = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    LedgerBase.metadata.drop_all(engine)
    LedgerBase.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Customer),
            [{"name": f"Customer {i}", "email": f"c{i}@example.com"} for i in range(1, 11)],
        )
        connection.execute(
            sa.insert(Account), [{"customer_id": i, "balance": BALANCE} for i in range(1, 11)]
        )
        connection.execute(sa.insert(Transfer), SEEDED_TRANSFERS)
    yield engine
    LedgerBase.metadata.drop_all(engine)
    engine.dispose()


async def _answers(factory: str) -> list[tuple[int, Any]]:
    """Status and JSON of each request of one session against the app, in order."""
    from .peer_apps import quart_apps

    app = getattr(quart_apps, factory)()
    answers: list[tuple[int, Any]] = []
    async with app.test_app() as test_app:  # runs before_serving and after_serving
        client = test_app.test_client()
        for method, path, body in (
            ("GET", "/customers/3", None),
            ("GET", "/accounts/4/transfers", None),
            ("POST", "/transfers", {"from_account": 4, "to_account": 7, "amount": 25}),
            ("GET", "/customers/4", None),
            ("GET", "/customers/7", None),
            ("GET", "/accounts/4/transfers", None),
            ("GET", "/customers/999", None),
            ("POST", "/transfers", {"from_account": 4, "to_account": 7, "amount": 2 * BALANCE}),
            ("GET", "/bench/noop", None),
        ):
            reply = await client.open(path, method=method, json=body)
            answers.append((reply.status_code, await reply.get_json()))
    return answers


@pytest.mark.parametrize("factory", ["create_uow_app", "create_bare_app"])
async def test_a_quart_bench_app_reads_transfers_and_refuses_as_the_ledger_does(
    seeded: sa.Engine, factory: str
) -> None:
    from ledger.services import notifications

    notifications.outbox.clear()
    answers = await _answers(factory)

    customer_3, statement, transfer, customer_4, customer_7, after, missing, refused, noop = answers
    assert customer_3 == (
        200,
        {
            "id": 3,
            "name": "Customer 3",
            "email": "c3@example.com",
            "account": {"id": 3, "balance": BALANCE},
        },
    )
    status, body = statement
    assert status == 200
    assert body["items"] == [
        {
            "id": i,
            "from_account": t["from_account_id"],
            "to_account": t["to_account_id"],
            "amount": 1,
        }
        for i, t in reversed(list(enumerate(SEEDED_TRANSFERS, start=1)))
        if 4 in (t["from_account_id"], t["to_account_id"])
    ]
    assert len(body["items"]) == 6

    status, created = transfer
    assert status == 201
    assert created == {"id": 31, "from_account": 4, "to_account": 7, "amount": 25}
    assert customer_4[1]["account"] == {"id": 4, "balance": BALANCE - 25}
    assert customer_7[1]["account"] == {"id": 7, "balance": BALANCE + 25}
    assert after[1]["items"][0] == created  # newest first
    sent = notifications.outbox.sent("transfer.completed")
    assert [dict(n.payload) for n in sent] == [
        {"transfer_id": 31, "from_account": 4, "to_account": 7, "amount": 25}
    ]

    assert missing[0] == 404
    assert missing[1]["error"]["code"] == "not_found"
    assert refused[0] == 409
    assert refused[1]["error"]["code"] == "insufficient_funds"
    assert noop == (200, {"ok": True})
    with seeded.connect() as connection:  # the refused transfer changed nothing
        balance = connection.execute(sa.text("SELECT balance FROM accounts WHERE id = 4"))
        assert balance.scalar_one() == BALANCE - 25
