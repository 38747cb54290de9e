"""Database outage: requests fail fast while PostgreSQL is unreachable, and the same app recovers.

The app reaches PostgreSQL through a TCP proxy on 127.0.0.1 that the test controls, so the
shared server keeps running for everyone else. Under steady load from client threads (Flask's
test client, in this process: health checks, transfers, account reads) the proxy first cuts
the path (connections dropped, new ones refused: a server that is down), then stalls it (new
connections accepted and never answered: a network that swallows packets, which only the
client's ``connect_timeout`` ends), then restores it. During the outage every request must
end within its timeout budget: ``/health`` with 503, the rest with a JSON 5xx that names no
SQL, driver or password. After the restore, the very same app object must serve again
without a restart.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ledger.database import db
from ledger.models import Account
from ledger.services import accounts, customers
from ledger.testing import wait_for_deliveries

from ._faults import admin_engine, checked_out, open_transactions, stored_transfers
from ._leaks import body_leaks
from ._proxy import TcpProxy
from ._scale import scaled, scaled_seconds
from .conftest import LedgerFactory, LogRecorder, Target

CONNECT_TIMEOUT = 2
"""Seconds libpq waits for a connection (``connect_timeout``)."""
STATEMENT_TIMEOUT_MS = 5000
SERVICE_RETRIES = 3
"""The ledger's transfer and deposit services retry transient errors this many times."""
REQUEST_BUDGET = (SERVICE_RETRIES + 1) * (CONNECT_TIMEOUT + 0.6) + 1.0
"""Longest a request may take during the outage: every attempt of the service may wait for
one connection timeout (plus its backoff). A request that waits longer hangs."""
HEALTH_BUDGET = CONNECT_TIMEOUT + 1.5
"""``/health`` makes one attempt: one connection timeout and a margin."""
RECOVERY_BUDGET = 10.0
"""Seconds after the restore within which ``/health`` must answer 200 again."""
CYCLES = scaled(1, 3)
CUT_SECONDS = scaled_seconds(2.5, 15)
STALL_SECONDS = scaled_seconds(3.0, 15)
HEALTHY_SECONDS = scaled_seconds(0.7, 5)
CLIENTS = 4

pytestmark = pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: in which phase it started and ended, what it got, how long it took."""

    started_in: str
    ended_in: str
    path: str
    status: int
    seconds: float
    leaks: tuple[str, ...]
    error_code: str | None


class Load:
    """Client threads sending a mix of requests until told to stop, noting each one."""

    def __init__(self, app: Flask, account_ids: list[int], password: str | None) -> None:
        self.app = app
        self.account_ids = account_ids
        self.password = password
        self.phase = "healthy"
        self.samples: list[Sample] = []
        self.created: list[tuple[int, int, int, int]] = []
        """(transfer id, source, target, amount) of every transfer answered 201."""
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_BUDGET + 30)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"
        if self.errors:
            raise self.errors[0]

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        client = self.app.test_client()
        deadline = time.monotonic() + 1800
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._one(client, rng)
                time.sleep(rng.uniform(0.005, 0.03))  # a client's think time between requests
        except BaseException as error:  # re-raised by stop()
            self.errors.append(error)

    def _one(self, client: Any, rng: random.Random) -> None:
        source, target = rng.sample(self.account_ids, 2)
        amount = rng.randint(1, 50)
        kind = rng.choice(["health", "transfer", "account"])
        started_in = self.phase
        started = time.monotonic()
        if kind == "health":
            path, response = "/health", client.get("/health")
        elif kind == "transfer":
            path = "/transfers"
            response = client.post(
                path,
                json={"from_account": source, "to_account": target, "amount": amount},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
        else:
            path = "/accounts/<id>"
            response = client.get(f"/accounts/{source}")
        seconds = time.monotonic() - started
        body = response.get_data()
        document = response.get_json(silent=True)
        error_code = None
        if isinstance(document, dict) and isinstance(document.get("error"), dict):
            error_code = str(document["error"].get("code"))
        sample = Sample(
            started_in,
            self.phase,
            path,
            response.status_code,
            seconds,
            tuple(body_leaks(body, password=self.password)),
            error_code,
        )
        with self._lock:
            self.samples.append(sample)
            if kind == "transfer" and response.status_code == 201 and isinstance(document, dict):
                self.created.append((int(document["id"]), source, target, amount))


def test_requests_fail_fast_during_an_outage_and_the_same_app_recovers(
    target: Target,
    ledger_app: LedgerFactory,
    figures: dict[str, Any],
    logs: LogRecorder,
) -> None:
    """Cut and stalled database path: bounded failures, clean errors, recovery in place."""
    server = sa.make_url(target.url)
    application_name = f"flask_uow_rel_{uuid.uuid4().hex[:8]}"
    with TcpProxy(server.port or 5432) as proxy:
        url = server.set(host="127.0.0.1", port=proxy.port)
        app = ledger_app(
            url.render_as_string(hide_password=False),
            admin_url=target.admin_url,
            engine_options={
                "pool_size": CLIENTS,
                "max_overflow": CLIENTS,
                "pool_timeout": 10,
                "connect_args": {
                    "connect_timeout": CONNECT_TIMEOUT,
                    "application_name": application_name,
                    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                },
            },
        )
        with app.app_context():
            account_ids = []
            for n in range(4):
                customer = customers.register_customer(f"Outage {n}", f"outage{n}@example.com")
                accounts.deposit(customer.account.id, 1_000_000)
                account_ids.append(customer.account.id)
        deposits_before = 4 * 1_000_000
        load = Load(app, account_ids, target.password)
        recoveries: list[float] = []
        load.start()
        try:
            # The phases last a set time on purpose: the load runs through each of them.
            time.sleep(HEALTHY_SECONDS)
            for _ in range(CYCLES):
                load.phase = "cut"
                proxy.cut()
                time.sleep(CUT_SECONDS)
                load.phase = "stalled"
                proxy.stall()
                time.sleep(STALL_SECONDS)
                load.phase = "restored"
                proxy.restore()
                recoveries.append(wait_for_health(app))
                load.phase = "healthy"
                time.sleep(HEALTHY_SECONDS)
        finally:
            proxy.restore()
            load.stop()
        # The outbox's in-process thread may still be marking the last transfers delivered.
        wait_for_deliveries(app)
        with app.app_context():
            pool_checked_out = checked_out(db.engine)
        proxied = proxy.connections

    books = admin_engine(target.admin_url)
    try:
        with books.connect() as conn:
            stored = stored_transfers(conn)
            total = conn.execute(sa.select(sa.func.sum(Account.balance))).scalar_one()
    finally:
        books.dispose()
    idle = open_transactions(
        target.admin_url, database=target.database, application_name=application_name
    )
    samples = load.samples
    during = [s for s in samples if {s.started_in, s.ended_in} <= {"cut", "stalled"}]
    steady = [s for s in samples if s.started_in == s.ended_in == "healthy"]

    figures.update(
        backend=target.backend,
        cycles=CYCLES,
        connect_timeout_seconds=CONNECT_TIMEOUT,
        requests=len(samples),
        requests_during_outage=len(during),
        statuses_during_outage=_count(during, lambda s: f"{s.path} {s.status} {s.error_code}"),
        slowest_during_outage_seconds={
            phase: round(max((s.seconds for s in during if s.ended_in == phase), default=0), 2)
            for phase in ("cut", "stalled")
        },
        request_budget_seconds=REQUEST_BUDGET,
        recovery_seconds=[round(r, 2) for r in recoveries],
        statuses_while_healthy=_count(steady, lambda s: str(s.status)),
        proxied_connections=proxied,
        transfers_created=len(load.created),
        pool_checked_out=pool_checked_out,
        idle_in_transaction=idle,
        log_records=logs.summary(),
    )

    # During the outage: fail, fast, and cleanly.
    assert during, "no request ran during the outage"
    for sample in during:
        if sample.path == "/health":
            assert sample.status == 503, sample
            assert sample.seconds <= HEALTH_BUDGET, sample
        else:
            assert sample.status >= 500 and sample.error_code is not None, sample
        assert sample.seconds <= REQUEST_BUDGET, sample
    assert all(not s.leaks for s in samples), [s for s in samples if s.leaks]
    # Before and after it: every request succeeds, on the same app object.
    assert steady and all(s.status < 400 for s in steady), _count(steady, lambda s: str(s.status))
    assert len(recoveries) == CYCLES and all(r <= RECOVERY_BUDGET for r in recoveries)
    # Nothing lost or doubled, nothing left open, no password in the logs.
    assert {t[0]: t[1:] for t in load.created}.items() <= stored.items()
    assert total == deposits_before  # transfers only move money
    assert pool_checked_out == 0
    assert idle == 0
    if target.password:
        assert target.password not in logs.text()


def wait_for_health(app: Flask) -> float:
    """Seconds until ``/health`` answers 200 after the restore (at most RECOVERY_BUDGET + 5)."""
    client = app.test_client()
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_BUDGET + 5:
        if client.get("/health").status_code == 200:
            return time.monotonic() - started
        time.sleep(0.05)  # poll interval
    return float("inf")


def _count(samples: list[Sample], key: Any) -> dict[str, int]:
    return dict(sorted(Counter(key(s) for s in samples).items()))
