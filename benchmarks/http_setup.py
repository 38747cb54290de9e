"""What the HTTP benchmark runs: the apps, the endpoints, wrk, the servers in their own process
groups, the scratch data and a sampler of ``pg_stat_activity``."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import psycopg
import sqlalchemy as sa

import ledger.database  # noqa: F401 - adds the outbox's tables to Base.metadata
from ledger.models import Account, Base, Customer, Transfer
from tests.peer_apps.settings import variables

from ._common import ROOT

UOW, FSQLA, LITE = "flask-uow (ledger)", "Flask-SQLAlchemy", "Flask-SQLAlchemy-Lite"
AA, BARE = "Advanced Alchemy", "bare SQLAlchemy"
QUART_UOW, QUART_BARE = "flask-uow (Quart)", "bare AsyncSession (Quart)"
APPS = {  # contender -> its app, for gunicorn
    UOW: "tests.peer_apps.flask_apps:create_uow_app()",
    FSQLA: "benchmarks.peers:create_flask_sqlalchemy_app()",
    LITE: "benchmarks.peers:create_flask_sqlalchemy_lite_app()",
    AA: "benchmarks.peers:create_advanced_alchemy_app()",
    BARE: "tests.peer_apps.flask_apps:create_bare_app()",
}
QUART_APPS = {QUART_UOW: "tests.peer_apps.quart_apps:create_uow_app()",  # for hypercorn
              QUART_BARE: "tests.peer_apps.quart_apps:create_bare_app()"}
PEERS, SHORT_APPS = (FSQLA, LITE, AA, BARE), (UOW, BARE)  # SHORT_APPS serve /bench/hold-short


def application_name(name: str) -> str:
    """``application_name`` of an app's connections, to tell them apart in pg_stat_activity."""
    return "bench-" + re.sub(r"[^a-z]+", "-", name.lower()).strip("-")


QUART_TARGET = 0.90  # flask-uow's Quart app serves at least 90% of the bare one's requests/s
CUSTOMERS, SEEDED_TRANSFERS = 1000, 10_000
INITIAL_BALANCE = 10**12  # cents: no transfer of the benchmark ever runs out of money

HOT_GUNICORN = ("-w", "2", "--threads", "8", "-k", "gthread")
HOT_POOL_SIZE = 8  # one connection per thread, no overflow: never waiting for the pool
HOLD_GUNICORN = ("-w", "1", "--threads", "64", "-k", "gthread")
HOLD_POOL_SIZE, HOLD_CLIENTS = 5, 64
QUART_HYPERCORN = ("-w", "2", "-k", "asyncio")  # two workers as gunicorn's, one loop each
CONCURRENCY = (1, 8, 32, 64)


class Endpoint(NamedTuple):
    name: str
    writes: bool
    script: str  # the request function of wrk.lua that sends it


ENDPOINTS = (
    Endpoint("GET /customers/<id>", False, "customer"),
    Endpoint("POST /transfers", True, "transfer"),
    Endpoint("GET /accounts/<id>/transfers", False, "transfers"),
    Endpoint("GET /bench/noop (no database)", False, "noop"),
)
QUART_ENDPOINTS = ENDPOINTS[:3]  # those with a database
HOLD = Endpoint("POST /bench/hold/<id>", True, "hold")
HOLD_SHORT = Endpoint("POST /bench/hold-short/<id>", True, "hold-short")


# -- wrk -------------------------------------------------------------------------------------
def ensure_wrk(log: Callable[[str], None]) -> str:
    """The path of wrk, installing Debian's package when root and apt-get can."""
    if not shutil.which("wrk") and os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing; installing Debian's package: apt-get update && apt-get install wrk")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(
            "The HTTP benchmarks need wrk, the HTTP load generator. Install it with 'sudo apt-get "
            "install wrk' (Debian, Ubuntu) or 'brew install wrk' (macOS), then run again."
        )
    return wrk


def run_wrk(
    wrk: str, base_url: str, endpoint: Endpoint, connections: int, seconds: int
) -> dict[str, Any]:
    """One wrk run of ``wrk.lua``; requests/s, latency percentiles in ms and errors."""
    script = os.path.join(os.path.dirname(__file__), "wrk.lua")
    done = subprocess.run(
        [wrk, "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s",
         "--timeout", "10s", "-s", script, base_url, "--", endpoint.script, str(CUSTOMERS)],
        capture_output=True, text=True, check=False,
    )
    found = re.search(r"^WRK_RESULT (.*)$", done.stdout, re.M)
    if found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    raw = json.loads(found.group(1))
    seconds_run, status = raw["duration_us"] / 1e6, raw["status"]
    socket_errors = sum(raw[k] for k in ("connect", "read", "write", "timeout"))
    return {"rps": raw["requests"] / seconds_run if seconds_run else 0.0,
            "requests": raw["requests"], "errors": socket_errors + status,
            **{f"{p}_ms": raw[f"{p}_us"] / 1000 for p in ("p50", "p90", "p99", "max")}}


# -- the apps under gunicorn -----------------------------------------------------------------
class Server:
    """One app under gunicorn (a Quart app under hypercorn) on 127.0.0.1, in its own group."""

    def __init__(
        self, name: str, url: sa.URL, options: tuple[str, ...], pool_size: int, logs: str
    ) -> None:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            self.name, self.port = name, int(free.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(logs, f"{application_name(name)}-{self.port}.log")
        env = {**os.environ, "PYTHONPATH": ROOT,
               **variables(url, pool_size, application_name(name))}
        env.pop("DATABASE_URL", None)  # the ledger would prefer it to nothing; be explicit
        command = [
            sys.executable, "-m", "hypercorn" if name in QUART_APPS else "gunicorn", *options,
            "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
            "--error-logfile", self.log_path, "--graceful-timeout", "5",
            {**APPS, **QUART_APPS}[name],
        ]
        with open(self.log_path, "ab") as stderr:  # what the app logs goes to its log too
            self.process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True,
                                            stdout=subprocess.DEVNULL, stderr=stderr)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.base_url + "/bench/noop", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start; its log:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-30:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def servers(
    url: sa.URL, options: tuple[str, ...], pool_size: int, logs: str, names: Iterable[str] = APPS
) -> Iterator[dict[str, Server]]:
    running: dict[str, Server] = {}
    try:
        for name in names:
            running[name] = Server(name, url, options, pool_size, logs)
        for server in running.values():
            server.wait_ready()
        yield running
    finally:
        for server in running.values():
            server.stop()


# -- data ------------------------------------------------------------------------------------
def seed(engine: sa.Engine) -> None:
    """Every table of the ledger, customers with an account each, and past transfers."""
    Base.metadata.create_all(engine)
    rng = random.Random(2024)
    ids, pair = range(1, CUSTOMERS + 1), ("from_account_id", "to_account_id")
    with engine.begin() as conn:
        conn.execute(sa.insert(Customer), [{"name": f"Customer {i}",
                                            "email": f"customer{i}@example.com"} for i in ids])
        conn.execute(sa.insert(Account), [{"customer_id": i, "balance": INITIAL_BALANCE}
                                          for i in ids])
        rows = [dict(zip(pair, rng.sample(ids, 2), strict=True), amount=rng.randint(1, 100))
                for _ in range(SEEDED_TRANSFERS)]
        conn.execute(sa.insert(Transfer), rows)
    if engine.dialect.name == "postgresql":
        vacuum(engine)


def reset(engine: sa.Engine) -> None:
    """Undo a run's writes, once requests in flight and the outbox's in-process deliveries
    are done; accounts locked in id order, as transfers lock them, against deadlocks."""
    postgresql = engine.dialect.name == "postgresql"
    if postgresql:
        wait_until_quiet(engine)
    outbox = Base.metadata.tables["flask_uow_outbox"]
    undelivered = sa.select(sa.func.count()).where(outbox.c.published_at.is_(None),
                                                   outbox.c.parked.is_(False))
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while conn.execute(undelivered).scalar() and time.monotonic() < deadline:
            conn.rollback()
            time.sleep(0.05)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):  # the outbox, deliveries, keys
            if table.name not in ("customers", "accounts", "transfers"):
                conn.execute(table.delete())
        conn.execute(sa.delete(Transfer).where(Transfer.id > SEEDED_TRANSFERS))
        locked = sa.select(Account.id).order_by(Account.id).with_for_update()
        conn.execute(sa.update(Account).where(Account.id.in_(locked)).values(
            balance=INITIAL_BALANCE))
    if postgresql:
        vacuum(engine)


def check_connections(engine: sa.Engine) -> None:
    """Stop early when the server cannot take every app's pool at once: the apps would fail
    with "too many clients", and so would whoever else uses the server."""
    workers = int(HOT_GUNICORN[HOT_GUNICORN.index("-w") + 1])
    needed = len(APPS) * workers * HOT_POOL_SIZE + 10
    with engine.connect() as conn:
        limit = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
        used = int(conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity").scalar_one())
    if limit - used < needed:
        raise SystemExit(
            f"the HTTP benchmark needs {needed} PostgreSQL connections and the server has "
            f"{limit - used} free ({used} of max_connections = {limit} in use); stop other "
            "work on the server or raise max_connections"
        )


def wait_until_quiet(engine: sa.Engine, timeout: float = 30.0) -> None:
    """Wait until no app connection is running a statement or holding a transaction open."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'bench-%' AND state <> 'idle'"
    )
    deadline = time.monotonic() + timeout
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while conn.execute(query).scalar() and time.monotonic() < deadline:
            time.sleep(0.05)


def vacuum(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE accounts, transfers, customers")


# -- pg_stat_activity ------------------------------------------------------------------------
class ActivitySampler(threading.Thread):
    """Counts one app's connections by state in pg_stat_activity about every 10 ms."""

    QUERY = (
        "SELECT count(*) FILTER (WHERE state = 'active'), "
        "count(*) FILTER (WHERE state LIKE 'idle in transaction%%') "
        "FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
    )

    def __init__(self, url: sa.URL, name: str) -> None:
        super().__init__(daemon=True)
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.where = (url.database, application_name(name))
        self.samples: list[tuple[int, int]] = []
        self.stopping = threading.Event()
        self.start()

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            self.began = time.monotonic()
            while not self.stopping.is_set():
                row = conn.execute(self.QUERY, self.where).fetchone()
                assert row is not None
                self.samples.append((int(row[0]), int(row[1])))
                self.stopping.wait(0.01)
            self.seconds = time.monotonic() - self.began

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.join()
        in_use = [active + idle for active, idle in self.samples] or [0]
        idle = [idle for _, idle in self.samples] or [0]
        return {"peak_in_use": max(in_use), "mean_in_use": sum(in_use) / len(in_use),
                "mean_idle_in_transaction": sum(idle) / len(idle),
                "idle_in_transaction_connection_seconds": sum(idle) / len(idle) * self.seconds}
