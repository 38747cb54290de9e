"""Isolation under concurrency: no request sees another request's objects or pending changes.

The ledger runs under gunicorn in a subprocess, with threaded (gthread) and with gevent
workers: one worker process serving 64 concurrent requests, so that every request shares the
process, the Database and the pool with 63 others. 64 clients, each a different customer, go
through the same steps in lockstep (a barrier before each step): register, deposit an amount
that only they use, read their account, read themselves, transfer to their own second account.
Every response must carry exactly the client's own data: a unit of work that handed out another
request's session, object or pending change would show up as a foreign name, id or balance.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._faults import lasting_open_transactions
from ._http import Gunicorn, Reply, call
from ._leaks import body_leaks
from ._scale import scaled, scaled_seconds
from .conftest import LedgerFactory, Target

CLIENTS = 64
ROUNDS = scaled(1, 15)
APP_SPEC = (
    "ledger.app:create_app({'UOW_ENGINE_OPTIONS': "
    "{'pool_size': 8, 'max_overflow': 8, 'pool_timeout': 60}})"
)
DEADLINE = scaled_seconds(120, 1200)


@dataclass(frozen=True, slots=True)
class Identity:
    """What one client is: its own name, email and amounts, unlike any other client's."""

    token: str
    round: int
    index: int

    @property
    def name(self) -> str:
        return f"Isolated {self.token} r{self.round}"

    @property
    def email(self) -> str:
        return f"iso-{self.token}-r{self.round}@example.com"

    @property
    def amount(self) -> int:
        return 100_000 + self.round * 1_000 + self.index


class Mismatch(AssertionError):
    """A response carried data that is not the client's own."""


class Client:
    """One client's steps through the API, each response checked against its identity."""

    def __init__(self, port: int, me: Identity, password: str | None) -> None:
        self.port = port
        self.me = me
        self.password = password
        self.customer_id = 0
        self.account_id = 0
        self.second_account_id = 0

    def _call(self, method: str, path: str, body: object = None) -> Any:
        for attempt in range(5):
            try:
                reply = call(self.port, method, path, body=body, timeout=60)
                break
            except (OSError, http.client.HTTPException):
                if attempt == 4:
                    raise
                time.sleep(0.1)  # a client's pause before retrying a failed connection
        self._check_clean(reply)
        return reply

    def _check_clean(self, reply: Reply) -> None:
        found = body_leaks(reply.body, password=self.password)
        if found or reply.status >= 500:
            raise Mismatch(f"{self.me}: {reply.status} {found} {reply.body[:300]!r}")

    def expect(self, ok: bool, what: str, reply: Reply) -> None:
        if not ok:
            raise Mismatch(f"{self.me}: {what}: {reply.status} {reply.body!r}")

    def register(self) -> None:
        me = self.me
        reply = self._call("POST", "/customers", {"name": me.name, "email": me.email})
        data = reply.json()
        self.expect(reply.status == 201, "register", reply)
        self.expect(data["name"] == me.name and data["email"] == me.email, "own name", reply)
        self.expect(data["account"]["balance"] == 0, "fresh account", reply)
        self.customer_id, self.account_id = data["id"], data["account"]["id"]
        second = self._call(
            "POST", "/customers", {"name": me.name + " bis", "email": "bis-" + me.email}
        )
        self.expect(second.status == 201, "register second", second)
        self.second_account_id = second.json()["account"]["id"]

    def deposit(self) -> None:
        reply = self._call(
            "POST", f"/accounts/{self.account_id}/deposits", {"amount": self.me.amount}
        )
        data = reply.json()
        self.expect(reply.status == 200, "deposit", reply)
        self.expect(
            data == {"id": self.account_id, "balance": self.me.amount}, "own balance", reply
        )

    def read_account(self) -> None:
        reply = self._call("GET", f"/accounts/{self.account_id}")
        expected = {
            "id": self.account_id,
            "customer_id": self.customer_id,
            "balance": self.me.amount,
        }
        self.expect(reply.status == 200 and reply.json() == expected, "own account", reply)

    def read_customer(self) -> None:
        reply = self._call("GET", f"/customers/{self.customer_id}")
        data = reply.json()
        self.expect(reply.status == 200, "read customer", reply)
        self.expect(
            (data["id"], data["name"], data["email"], data["account"])
            == (
                self.customer_id,
                self.me.name,
                self.me.email,
                {"id": self.account_id, "balance": self.me.amount},
            ),
            "own customer",
            reply,
        )

    def transfer(self) -> None:
        amount = self.me.index + 1
        reply = self._call(
            "POST",
            "/transfers",
            {
                "from_account": self.account_id,
                "to_account": self.second_account_id,
                "amount": amount,
            },
        )
        data = reply.json()
        self.expect(reply.status == 201, "transfer", reply)
        self.expect(
            (data["from_account"], data["to_account"], data["amount"])
            == (self.account_id, self.second_account_id, amount),
            "own transfer",
            reply,
        )
        statement = self._call("GET", f"/accounts/{self.second_account_id}/transfers")
        self.expect(
            [item["id"] for item in statement.json()["items"]] == [data["id"]],
            "own statement",
            statement,
        )

    STEPS = ("register", "deposit", "read_account", "read_customer", "transfer")


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_concurrent_requests_only_ever_see_their_own_data(
    target: Target,
    ledger_app: LedgerFactory,
    figures: dict[str, Any],
    tmp_path: Path,
    worker_class: str,
) -> None:
    """64 concurrent clients, one worker process: every response is the client's own."""
    ledger_app(target.url)  # fresh tables; the app under test is gunicorn's
    server = Gunicorn(
        APP_SPEC,
        env={"DATABASE_URL": target.url},
        log_path=tmp_path / "gunicorn.log",
        worker_class=worker_class,
        workers=1,
        threads=CLIENTS,
        worker_connections=CLIENTS * 2,
    )
    errors: list[BaseException] = []
    steps: Counter[str] = Counter()
    lock = threading.Lock()
    started = time.monotonic()
    with server:
        for round_number in range(ROUNDS):
            token = uuid.uuid4().hex[:10]
            sessions = [
                Client(server.port, Identity(f"{token}-{i}", round_number, i), target.password)
                for i in range(CLIENTS)
            ]
            barrier = threading.Barrier(CLIENTS)

            def run(session: Client, barrier: threading.Barrier = barrier) -> None:
                try:
                    for step in Client.STEPS:
                        barrier.wait(timeout=DEADLINE)
                        getattr(session, step)()
                        with lock:
                            steps[step] += 1
                except BaseException as error:  # re-raised in the test's thread
                    errors.append(error)
                    barrier.abort()

            threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=DEADLINE)
            assert not any(t.is_alive() for t in threads), "a client hung"
            if errors:
                break
        seconds = time.monotonic() - started
        idle = lasting_open_transactions(target.admin_url, database=target.database)
    log = server.log()
    mismatches = [e for e in errors if isinstance(e, Mismatch)]
    figures.update(
        backend=target.backend,
        worker_class=worker_class,
        concurrent_clients=CLIENTS,
        rounds=ROUNDS,
        requests=sum(steps.values()) + steps["register"] + steps["transfer"],
        responses_checked=dict(steps),
        mismatches=len(mismatches),
        seconds=round(seconds, 1),
        idle_in_transaction=idle,
    )
    if errors:
        raise errors[0]
    assert steps == {step: CLIENTS * ROUNDS for step in Client.STEPS}
    assert idle == 0
    if target.password:
        assert target.password not in log
    assert "Traceback" not in log, log[-3000:]
