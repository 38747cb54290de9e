"""Exactly once over HTTP: clients resend transfers while the ledger's connections die.

The ledger runs under gunicorn (gthread workers) in a subprocess on 127.0.0.1, configured the
way it is deployed: ``DATABASE_URL`` in the environment, password included. Client threads
send each logical transfer with its own ``Idempotency-Key`` and resend it, with the same key,
on a timeout, a dropped connection or any 5xx, until it is answered 201. Meanwhile the app's
database connections are killed from outside (PostgreSQL, MariaDB) and gunicorn workers are
SIGKILLed mid-request (every backend). Each logical transfer must be applied exactly once.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ledger.database import db
from ledger.models import Account, IdempotencyKey
from ledger.services import accounts, customers

from ._faults import (
    Background,
    ConnectionKiller,
    admin_engine,
    lasting_open_transactions,
    stored_transfers,
)
from ._http import Gunicorn, Reply, call
from ._leaks import body_leaks
from ._scale import scaled, scaled_seconds
from .conftest import LedgerFactory, Target

LOGICAL_TRANSFERS = scaled(200, 5_000)
CLIENTS = scaled(8, 16)
ACCOUNTS = 6
OPENING_DEPOSIT = 1_000_000
MAX_ATTEMPTS = 60
REQUEST_TIMEOUT = 5.0
IMPATIENT_TIMEOUT = 0.02
"""First-attempt timeout of an impatient client: it resends while the original is in flight."""
DEADLINE = scaled_seconds(120, 1500)
WORKER_KILL_EVERY = (scaled_seconds(0.3, 1.0), scaled_seconds(0.8, 3.0))
"""Seconds between SIGKILLs of a gunicorn worker (uniformly)..."""
WORKER_KILLS = scaled(3, 100)
"""...and how many at most."""
APP_SPEC = (
    "ledger.app:create_app({'UOW_ENGINE_OPTIONS': "
    "{'pool_size': 4, 'max_overflow': 4, 'pool_timeout': 10}})"
)
"""gunicorn's app factory call; the database URL comes from DATABASE_URL, never argv."""


@dataclass(frozen=True, slots=True)
class Logical:
    """One transfer a client wants made once."""

    key: str
    source: int
    target: int
    amount: int


@dataclass
class Client:
    """What the clients saw, under one lock."""

    port: int
    password: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: dict[str, list[int]] = field(default_factory=dict)
    """Transfer ids of every 201 answer, by key."""
    events: Counter[str] = field(default_factory=Counter)
    leaks: list[tuple[int, list[str], bytes]] = field(default_factory=list)

    def note(self, event: str) -> None:
        with self.lock:
            self.events[event] += 1

    def send_once(
        self, transfer: Logical, rng: random.Random, deadline: float, *, impatient: bool = False
    ) -> int:
        """POST the transfer until it is answered 201; returns the transfer id.

        An impatient client gives up on its first attempt almost at once, so its resend races
        the original request, which the server is still running.
        """
        body = {
            "from_account": transfer.source,
            "to_account": transfer.target,
            "amount": transfer.amount,
        }
        for attempt in range(MAX_ATTEMPTS):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{transfer.key} not applied before the deadline")
            if attempt:
                time.sleep(min(0.5, 0.02 * 2**attempt) * rng.random())  # the client's backoff
            self.note("requests")
            try:
                reply = call(
                    self.port,
                    "POST",
                    "/transfers",
                    body=body,
                    headers={"Idempotency-Key": transfer.key},
                    timeout=IMPATIENT_TIMEOUT if impatient and not attempt else REQUEST_TIMEOUT,
                )
            except TimeoutError:
                self.note("resent after timeout")
                continue
            except (OSError, http.client.HTTPException):
                self.note("resent after a dropped connection")
                continue
            self.check_body(reply)
            if reply.status == 201:
                transfer_id = int(reply.json()["id"])
                with self.lock:
                    self.answers.setdefault(transfer.key, []).append(transfer_id)
                    if reply.headers.get("idempotent-replayed") == "true":
                        self.events["answered as a replay"] += 1
                return transfer_id
            if reply.status >= 500:
                self.note(f"resent after {reply.status}")
                continue
            raise AssertionError(f"{transfer.key}: unexpected {reply.status} {reply.body!r}")
        raise AssertionError(f"{transfer.key}: no 201 after {MAX_ATTEMPTS} attempts")

    def check_body(self, reply: Reply) -> None:
        found = body_leaks(reply.body, password=self.password)
        if found:
            with self.lock:
                self.leaks.append((reply.status, found, reply.body[:500]))


def plan(rng: random.Random, account_ids: list[int]) -> list[Logical]:
    transfers = []
    for n in range(LOGICAL_TRANSFERS):
        source, target = rng.sample(account_ids, 2)
        key = f"once-{n}-{uuid.uuid4()}"
        transfers.append(Logical(key, source, target, rng.randint(1, 500)))
    return transfers


def test_each_transfer_is_applied_exactly_once_despite_resends_and_kills(
    target: Target,
    ledger_app: LedgerFactory,
    figures: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Resent transfers under killed connections and workers: one application per key."""
    rng = random.Random(4242)
    app = ledger_app(target.url)
    with app.app_context():
        account_ids = []
        for n in range(ACCOUNTS):
            customer = customers.register_customer(f"Once {n}", f"once{n}@example.com")
            accounts.deposit(customer.account.id, OPENING_DEPOSIT)
            account_ids.append(customer.account.id)
        db.dispose()
    transfers = plan(rng, account_ids)
    queue = list(reversed(transfers))
    queue_lock = threading.Lock()

    application_name = f"flask_uow_rel_{uuid.uuid4().hex[:8]}"
    query = {"application_name": application_name} if target.backend == "postgresql" else {}
    server = Gunicorn(
        APP_SPEC,
        env={"DATABASE_URL": target.app_url(**query)},
        log_path=tmp_path / "gunicorn.log",
        worker_class="gthread",
        workers=2,
        threads=4,
    )
    killer: ConnectionKiller | None = None
    if target.backend != "sqlite":
        killer = ConnectionKiller(
            target.admin_url,
            database=target.database,
            application_name=application_name if target.backend == "postgresql" else None,
            seed=11,
        )
    errors: list[BaseException] = []
    started = time.monotonic()
    deadline = started + DEADLINE
    with server:
        client = Client(server.port, target.password)

        def work(index: int) -> None:
            client_rng = random.Random(index)
            try:
                while True:
                    with queue_lock:
                        if not queue:
                            return
                        transfer = queue.pop()
                    impatient = client_rng.random() < 0.1
                    first = client.send_once(transfer, client_rng, deadline, impatient=impatient)
                    if client_rng.random() < 0.15:  # a client that resends a success anyway
                        again = client.send_once(transfer, client_rng, deadline)
                        assert again == first, (transfer, first, again)
            except BaseException as error:  # re-raised in the test's thread
                errors.append(error)

        worker_rng = random.Random(5)

        def kill_a_worker() -> None:
            pids = server.worker_pids()
            if len(pids) == server.workers and server.workers_killed < WORKER_KILLS:
                server.kill_worker(worker_rng.choice(pids))

        worker_killer = Background(
            "worker-killer",
            kill_a_worker,
            pause=lambda: worker_rng.uniform(*WORKER_KILL_EVERY),
            seconds=DEADLINE,
            first=0.3,
        )
        connection_killer = (
            killer.in_background(every=(0.02, 0.15), seconds=DEADLINE)
            if killer is not None
            else Background("no-op", lambda: None, pause=lambda: 1.0, seconds=0)
        )
        threads = [threading.Thread(target=work, args=(i,)) for i in range(CLIENTS)]
        with worker_killer, connection_killer:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=DEADLINE + 60)
        seconds = time.monotonic() - started
        server.wait_ready(30)  # every worker back, so that no request is still in flight
        idle = lasting_open_transactions(
            target.admin_url,
            database=target.database,
            application_name=application_name if target.backend == "postgresql" else None,
        )
    exit_status = server.stop()
    if killer is not None:
        killer.close()
    if errors:
        raise errors[0]
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"

    books = admin_engine(target.admin_url)
    try:
        with books.connect() as conn:
            stored = stored_transfers(conn)
            keys = {
                key_hash: transfer_id
                for key_hash, transfer_id in conn.execute(
                    sa.select(IdempotencyKey.key_hash, IdempotencyKey.transfer_id)
                )
            }
            balances = {
                account_id: balance
                for account_id, balance in conn.execute(sa.select(Account.id, Account.balance))
            }
    finally:
        books.dispose()
    log = server.log()

    figures.update(
        backend=target.backend,
        logical_transfers=len(transfers),
        clients=CLIENTS,
        seconds=round(seconds, 1),
        http=dict(sorted(client.events.items())),
        faults_injected={
            "connections_killed": killer.kills if killer is not None else 0,
            "workers_killed": server.workers_killed,
        },
        transfers_stored=len(stored),
        idle_in_transaction=idle,
        gunicorn_exit_status=exit_status,
    )

    # Each logical transfer: answered with one id, stored once, as asked.
    assert set(client.answers) == {t.key for t in transfers}
    ids = {}
    for transfer in transfers:
        answered = set(client.answers[transfer.key])
        assert len(answered) == 1, (transfer, answered)
        ids[transfer.key] = answered.pop()
        assert keys[hashlib.sha256(transfer.key.encode()).hexdigest()] == ids[transfer.key]
        assert stored[ids[transfer.key]] == (transfer.source, transfer.target, transfer.amount)
    assert len(set(ids.values())) == len(transfers)
    assert len(stored) == len(transfers) == len(keys)
    # The books balance.
    moved: Counter[int] = Counter()
    for source, target_account, amount in stored.values():
        moved[source] -= amount
        moved[target_account] += amount
    assert balances == {a: OPENING_DEPOSIT + moved[a] for a in account_ids}
    # Nothing leaked, nothing left open.
    assert client.leaks == []
    if target.password:
        assert target.password not in log
    assert idle == 0
    assert exit_status == 0, log[-3000:]
    assert server.workers_killed > 0
    if killer is not None:
        assert killer.kills > 0
