"""HTTP benchmarks: the ledger (flask-uow) and its twins on every peer library.

Each app (``benchmarks/peers/``) runs under gunicorn with the same settings, on one scratch
database seeded once (a SQLite file, then a PostgreSQL database), and ``wrk`` drives them in
turn: for every endpoint and concurrency, round by round, each app goes first in turn, and the
database is reset after every run that wrote. Ratios are medians of the per-round ratios with
a bootstrap 95% interval. On PostgreSQL a second scenario holds a connection-starved pool:
read, wait 50 ms on a simulated external service, write, with 5 connections and 64 clients,
while a thread samples ``pg_stat_activity``. A third, on both backends, serves the three hot
endpoints from two Quart apps under hypercorn (flask-uow's async units against a bare
``AsyncSession``), compared with each other only.

    python -m benchmarks.http [--quick] [--json FILE]

wrk comes from Debian's ``wrk`` package; when it is missing and this runs as root on a system
with apt-get, it is installed with ``apt-get install -y wrk``, otherwise the run stops and says
how to install it.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run as a file, this module shadows stdlib http
    sys.exit("run it from the repository root as: python -m benchmarks.http")

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa

from ledger.models import Account, Base, Customer, Transfer

from . import costs
from ._common import (
    ROOT,
    fmt_interval,
    markdown_table,
    median,
    ratio_interval,
    rotated,
    scratch_postgresql,
    verdict_at_least,
)

UOW = "flask-uow (ledger)"
FSQLA = "Flask-SQLAlchemy"
LITE = "Flask-SQLAlchemy-Lite"
AA = "Advanced Alchemy"
BARE = "bare SQLAlchemy"
APPS = {
    UOW: "benchmarks.peers.flask_uow_app:create_app()",
    FSQLA: "benchmarks.peers.flask_sqlalchemy_app:create_app()",
    LITE: "benchmarks.peers.flask_sqlalchemy_lite_app:create_app()",
    AA: "benchmarks.peers.advanced_alchemy_app:create_app()",
    BARE: "benchmarks.peers.sqlalchemy_app:create_app()",
}
"""Contender name -> gunicorn app spec."""
PEERS = (FSQLA, LITE, AA, BARE)
APP_NAMES = {
    UOW: "bench-flask-uow",
    FSQLA: "bench-flask-sqlalchemy",
    LITE: "bench-flask-sqlalchemy-lite",
    AA: "bench-advanced-alchemy",
    BARE: "bench-sqlalchemy",
}
"""``application_name`` of each app's connections, to tell them apart in pg_stat_activity."""
SHORT_APPS = (UOW, BARE)
"""The apps serving ``/bench/hold-short``: short units (transactions) around the wait."""

QUART_UOW = "flask-uow (Quart)"
QUART_BARE = "bare AsyncSession (Quart)"
QUART_APPS = {
    QUART_UOW: "benchmarks.peers.quart_uow_app:create_app()",
    QUART_BARE: "benchmarks.peers.quart_sqlalchemy_app:create_app()",
}
"""The async contenders, served by hypercorn and compared with each other only."""
APP_NAMES.update({QUART_UOW: "bench-quart-flask-uow", QUART_BARE: "bench-quart-sqlalchemy"})
QUART_TARGET = 0.90
"""flask-uow's Quart app serves at least 90% of the bare Quart app's requests per second."""

CUSTOMERS = 1000
SEEDED_TRANSFERS = 10_000
INITIAL_BALANCE = 10**12
"""Cents in every account: no transfer of the benchmark ever runs out of money."""

HOT_GUNICORN = ("-w", "2", "--threads", "8", "-k", "gthread")
HOT_POOL_SIZE = 8
"""One connection per gunicorn thread, no overflow: the hot endpoints never wait for the pool."""
HOLD_GUNICORN = ("-w", "1", "--threads", "64", "-k", "gthread")
HOLD_POOL_SIZE = 5
HOLD_CLIENTS = 64
QUART_HYPERCORN = ("-w", "2", "-k", "asyncio")
"""Two worker processes, like the hot gunicorn setting, each one event loop; with the same
pool of HOT_POOL_SIZE connections per worker."""
CONCURRENCY = (1, 8, 32, 64)


@dataclass(frozen=True)
class Endpoint:
    name: str
    writes: bool
    request_lua: str


ENDPOINTS = (
    Endpoint(
        "GET /customers/<id>",
        False,
        'return wrk.format("GET", "/customers/" .. math.random(1, N))',
    ),
    Endpoint(
        "POST /transfers",
        True,
        """local a = math.random(1, N)
  local b = math.random(1, N - 1)
  if b >= a then b = b + 1 end
  local body = string.format(
    '{"from_account": %d, "to_account": %d, "amount": %d}', a, b, math.random(1, 100))
  return wrk.format("POST", "/transfers", {["Content-Type"] = "application/json"}, body)""",
    ),
    Endpoint(
        "GET /accounts/<id>/transfers",
        False,
        'return wrk.format("GET", "/accounts/" .. math.random(1, N) .. "/transfers")',
    ),
    Endpoint("GET /bench/noop (no database)", False, 'return wrk.format("GET", "/bench/noop")'),
)
QUART_ENDPOINTS = ENDPOINTS[:3]
"""The hot endpoints with a database: GET by id, POST transfer, GET list."""
HOLD = Endpoint(
    "POST /bench/hold/<id>",
    True,
    'return wrk.format("POST", "/bench/hold/" .. math.random(1, N))',
)
HOLD_SHORT = Endpoint(
    "POST /bench/hold-short/<id>",
    True,
    'return wrk.format("POST", "/bench/hold-short/" .. math.random(1, N))',
)

LUA = """-- written by benchmarks/http.py
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(os.time() + 7919 * (seed or 0))
end
N = %(n)d
request = function()
  %(request)s
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: int
    """Length of one wrk run on a hot endpoint."""
    warmup_seconds: int
    hold_rounds: int
    hold_seconds: int
    warm_every_endpoint: bool
    concurrency: tuple[int, ...]
    sqlite: bool
    """Also run the hot endpoints on a SQLite file."""


FULL = Settings(
    rounds=5,
    seconds=3,
    warmup_seconds=2,
    hold_rounds=5,
    hold_seconds=5,
    warm_every_endpoint=True,
    concurrency=CONCURRENCY,
    sqlite=True,
)
QUICK = Settings(
    rounds=1,
    seconds=1,
    warmup_seconds=1,
    hold_rounds=1,
    hold_seconds=1,
    warm_every_endpoint=False,
    concurrency=(8,),
    sqlite=False,
)
"""wrk takes whole seconds."""


# -- wrk -------------------------------------------------------------------------------------


def ensure_wrk(log: Callable[[str], None]) -> str:
    """The path of wrk, installing Debian's package when root and apt-get can."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        return wrk
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing; installing Debian's package: apt-get update && apt-get install wrk")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        wrk = shutil.which("wrk")
        if wrk is not None:
            return wrk
    raise SystemExit(
        "The HTTP benchmarks need wrk, the HTTP load generator. Install it with "
        "'sudo apt-get install wrk' (Debian, Ubuntu) or 'brew install wrk' (macOS), "
        "then run again."
    )


def run_wrk(wrk: str, base_url: str, script: str, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run; requests/s, latency percentiles in ms and errors."""
    command = [
        wrk,
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "-s",
        script,
        base_url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            raw = json.loads(line.removeprefix("WRK_RESULT "))
            break
    else:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "timeout"))
    return {
        "rps": raw["requests"] / seconds_run if seconds_run else 0.0,
        "requests": raw["requests"],
        "seconds": seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors + raw["status"],
        "non_2xx": raw["status"],
        "socket_errors": errors,
    }


# -- the apps under gunicorn -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One app under gunicorn (or, for a Quart app, hypercorn) on 127.0.0.1, in its own
    process group."""

    def __init__(
        self, name: str, url: sa.URL, gunicorn: tuple[str, ...], pool_size: int, logs: str
    ) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(logs, f"{APP_NAMES[name]}-{self.port}.log")
        env = {
            **os.environ,
            "BENCH_DATABASE_URL": url.render_as_string(hide_password=False),
            "BENCH_POOL_SIZE": str(pool_size),
            "BENCH_APP_NAME": APP_NAMES[name],
            "PYTHONPATH": ROOT,
        }
        env.pop("DATABASE_URL", None)  # the ledger would prefer it to nothing; be explicit
        quart = name in QUART_APPS
        command = [
            sys.executable,
            "-m",
            "hypercorn" if quart else "gunicorn",
            *gunicorn,
            "--bind",
            f"127.0.0.1:{self.port}",
            *(() if quart else ("--chdir", ROOT)),
            "--log-level",
            "warning",
            "--error-logfile",
            self.log_path,
            "--graceful-timeout",
            "5",
            QUART_APPS[name] if quart else APPS[name],
        ]
        self.command = command
        self.env = env
        self.restarts = 0
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as stderr:  # what the app logs goes to its log too
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
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
    url: sa.URL,
    gunicorn: tuple[str, ...],
    pool_size: int,
    logs: str,
    names: tuple[str, ...] = tuple(APPS),
) -> Iterator[dict[str, Server]]:
    running: dict[str, Server] = {}
    try:
        for name in names:
            running[name] = Server(name, url, gunicorn, pool_size, logs)
        for server in running.values():
            server.wait_ready()
        yield running
    finally:
        for server in running.values():
            server.stop()


# -- data ------------------------------------------------------------------------------------


def seed(engine: sa.Engine) -> None:
    """1000 customers with an account each, and 10,000 past transfers between them."""
    Base.metadata.create_all(engine)
    rng = random.Random(2024)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Customer),
            [
                {"name": f"Customer {i}", "email": f"customer{i}@example.com"}
                for i in range(1, CUSTOMERS + 1)
            ],
        )
        conn.execute(
            sa.insert(Account),
            [{"customer_id": i, "balance": INITIAL_BALANCE} for i in range(1, CUSTOMERS + 1)],
        )
        rows = []
        for _ in range(SEEDED_TRANSFERS):
            a, b = rng.sample(range(1, CUSTOMERS + 1), 2)
            rows.append({"from_account_id": a, "to_account_id": b, "amount": rng.randint(1, 100)})
        conn.execute(sa.insert(Transfer), rows)
    if engine.dialect.name == "postgresql":
        vacuum(engine)


def reset(engine: sa.Engine) -> None:
    """Undo a run's writes: back to the seeded transfers and balances, tables vacuumed.

    Requests still in flight when wrk stops are let finish first, and accounts are locked in
    id order, as transfers lock them, so that the reset cannot deadlock with a straggler.
    """
    postgresql = engine.dialect.name == "postgresql"
    if postgresql:
        wait_until_quiet(engine)
    with engine.begin() as conn:
        conn.execute(sa.delete(Transfer).where(Transfer.id > SEEDED_TRANSFERS))
        locked = sa.select(Account.id).order_by(Account.id).with_for_update()
        conn.execute(
            sa.update(Account).where(Account.id.in_(locked)).values(balance=INITIAL_BALANCE)
        )
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
    """Counts one app's connections by state in pg_stat_activity every ``interval`` seconds."""

    QUERY = (
        "SELECT count(*) FILTER (WHERE state = 'active'), "
        "count(*) FILTER (WHERE state LIKE 'idle in transaction%%') "
        "FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
    )

    def __init__(self, url: sa.URL, application_name: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.database = url.database
        self.application_name = application_name
        self.interval = interval
        self.samples: list[tuple[int, int]] = []
        self.stopping = threading.Event()
        self.started_at = self.stopped_at = 0.0

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            self.started_at = time.monotonic()
            while not self.stopping.is_set():
                row = conn.execute(self.QUERY, (self.database, self.application_name)).fetchone()
                assert row is not None
                self.samples.append((int(row[0]), int(row[1])))
                self.stopping.wait(self.interval)
            self.stopped_at = time.monotonic()

    def stop(self) -> dict[str, float]:
        self.stopping.set()
        self.join()
        in_use = [active + idle for active, idle in self.samples]
        idle = [idle for _, idle in self.samples]
        seconds = self.stopped_at - self.started_at
        return {
            "samples": len(self.samples),
            "sample_interval_ms": 1000 * seconds / len(self.samples) if self.samples else 0.0,
            "peak_in_use": max(in_use, default=0),
            "mean_in_use": sum(in_use) / len(in_use) if in_use else 0.0,
            "mean_idle_in_transaction": sum(idle) / len(idle) if idle else 0.0,
            "idle_in_transaction_share": sum(idle) / sum(in_use) if sum(in_use) else 0.0,
            "idle_in_transaction_connection_seconds": (sum(idle) / len(idle) if idle else 0.0)
            * seconds,
        }


# -- the run ---------------------------------------------------------------------------------


def run(settings: Settings, *, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.monotonic()
    say = log
    log = lambda line: say(f"[{time.monotonic() - started:6.1f}s] {line}")  # noqa: E731
    wrk = ensure_wrk(log)
    results: dict[str, Any] = {
        "settings": settings.__dict__,
        "hot_gunicorn": " ".join(HOT_GUNICORN),
        "hot_pool_size": HOT_POOL_SIZE,
        "hold_gunicorn": " ".join(HOLD_GUNICORN),
        "hold_pool_size": HOLD_POOL_SIZE,
        "hold_clients": HOLD_CLIENTS,
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="flask_uow_bench_http_") as work:
        scripts = {}
        for endpoint in (*ENDPOINTS, HOLD, HOLD_SHORT):
            path = os.path.join(work, f"{len(scripts)}.lua")
            with open(path, "w", encoding="utf-8") as script:
                script.write(LUA % {"n": CUSTOMERS, "request": endpoint.request_lua})
            scripts[endpoint.name] = path
        if settings.sqlite:
            url = sa.make_url("sqlite:///" + os.path.join(work, "bench.db"))
            results["backends"]["SQLite file"] = _run_backend(
                settings, url, wrk, scripts, work, log
            )
        with scratch_postgresql() as url:
            results["backends"]["PostgreSQL"] = _run_backend(settings, url, wrk, scripts, work, log)
    return results


def _run_backend(
    settings: Settings,
    url: sa.URL,
    wrk: str,
    scripts: dict[str, str],
    work: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    out: dict[str, Any] = {"hot": {}, "hold": {}}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "postgresql":
        check_connections(engine)
    log(f"http: seeding {url.database}")
    seed(engine)

    log("http: per-request costs, counted in process")
    out["costs"] = costs.measure(APPS, [e.name for e in ENDPOINTS], url, customers=CUSTOMERS)
    out["quart_costs"] = costs.measure_quart(
        QUART_APPS, [e.name for e in QUART_ENDPOINTS], url, customers=CUSTOMERS
    )
    reset(engine)

    log(f"http: hot endpoints, gunicorn {' '.join(HOT_GUNICORN)}, pool {HOT_POOL_SIZE}")
    with servers(url, HOT_GUNICORN, HOT_POOL_SIZE, work) as running:
        out["hot"] = _hot(settings, ENDPOINTS, running, engine, wrk, scripts, log)

    log(f"http: Quart, hypercorn {' '.join(QUART_HYPERCORN)}, pool {HOT_POOL_SIZE}")
    with servers(url, QUART_HYPERCORN, HOT_POOL_SIZE, work, tuple(QUART_APPS)) as running:
        out["quart"] = _hot(settings, QUART_ENDPOINTS, running, engine, wrk, scripts, log)
        out["quart_restarts"] = {name: server.restarts for name, server in running.items()}

    if engine.dialect.name != "postgresql":
        engine.dispose()
        return out
    log(
        f"http: connection hold, gunicorn {' '.join(HOLD_GUNICORN)}, pool {HOLD_POOL_SIZE}, "
        f"{HOLD_CLIENTS} clients"
    )
    with servers(url, HOLD_GUNICORN, HOLD_POOL_SIZE, work) as running:
        for endpoint, names in ((HOLD, tuple(APPS)), (HOLD_SHORT, SHORT_APPS)):
            script = scripts[endpoint.name]
            for name in names:
                run_wrk(wrk, running[name].base_url, script, HOLD_CLIENTS, settings.warmup_seconds)
            reset(engine)
            hold: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for round_index in range(settings.hold_rounds):
                for name in rotated(list(names), round_index):
                    sampler = ActivitySampler(url, APP_NAMES[name])
                    sampler.start()
                    outcome = run_wrk(
                        wrk, running[name].base_url, script, HOLD_CLIENTS, settings.hold_seconds
                    )
                    outcome.update(sampler.stop())
                    hold[name].append(outcome)
                    reset(engine)
            out["hold"][endpoint.name] = hold
            _check_errors(endpoint.name, {HOLD_CLIENTS: hold}, running, log)
    engine.dispose()
    return out


def _hot(
    settings: Settings,
    endpoints: tuple[Endpoint, ...],
    running: dict[str, Server],
    engine: sa.Engine,
    wrk: str,
    scripts: dict[str, str],
    log: Callable[[str], None],
) -> dict[str, dict[int, dict[str, list[dict[str, Any]]]]]:
    """{endpoint: {connections: {app: [one wrk outcome per round]}}} for the running apps."""
    names = list(running)
    hot: dict[str, dict[int, dict[str, list[dict[str, Any]]]]] = {}
    turn = 0
    quart = any(name in QUART_APPS for name in names)

    def reset_after(ran: list[Server]) -> None:
        if quart:
            reset_quart(engine, ran, wrk, scripts, settings, log)
        else:
            reset(engine)

    for endpoint in endpoints:
        log(f"  {endpoint.name}")
        script = scripts[endpoint.name]
        if settings.warm_every_endpoint or endpoint is endpoints[0]:
            for server in running.values():  # warm up, filling every pool
                run_wrk(wrk, server.base_url, script, 64, settings.warmup_seconds)
        if endpoint.writes:
            reset_after(list(running.values()))
        cells: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for connections in settings.concurrency:
            cells[connections] = {name: [] for name in names}
            for _ in range(settings.rounds):
                for name in rotated(names, turn):
                    server = running[name]
                    outcome = run_wrk(wrk, server.base_url, script, connections, settings.seconds)
                    cells[connections][name].append(outcome)
                    if endpoint.writes:
                        reset_after([server])
                turn += 1
        hot[endpoint.name] = cells
        _check_errors(endpoint.name, cells, running, log)
    return hot


def reset_quart(
    engine: sa.Engine,
    ran: list[Server],
    wrk: str,
    scripts: dict[str, str],
    settings: Settings,
    log: Callable[[str], None],
) -> None:
    """``reset(engine)`` after a Quart app wrote; on SQLite, an app that keeps the file locked
    is restarted first (and warmed up again with reads).

    A safety net: when wrk stops, it drops the requests it has in flight, and a Quart request
    cancelled in the middle of a statement on aiosqlite can leave its sqlite3 connection
    closed but not finalized, holding the write lock for as long as the process lives (with
    a bare AsyncSession as with flask-uow). The apps let such requests finish instead
    (``peers._quart.FinishDisconnected``); should a lock outlive a run all the same, it would
    stall every later run on the file, so the process holding it is replaced and counted.
    """
    try:
        reset(engine)
        return
    except sa.exc.OperationalError as error:
        if engine.dialect.name != "sqlite" or "locked" not in str(error.orig):
            raise
    for server in ran:
        log(f"  ! {server.name} kept the SQLite file locked after wrk stopped: restarting it")
        server.restart()
        run_wrk(wrk, server.base_url, scripts[ENDPOINTS[0].name], 64, settings.warmup_seconds)
    reset(engine)


def _check_errors(
    endpoint: str,
    cells: dict[int, dict[str, list[dict[str, Any]]]],
    running: dict[str, Server],
    log: Callable[[str], None],
) -> None:
    for connections, by_app in cells.items():
        for name, outcomes in by_app.items():
            errors = sum(o["errors"] for o in outcomes)
            if errors:
                log(
                    f"  ! {name}: {errors} errors on {endpoint} at {connections} connections; "
                    f"server log:\n{running[name].log_tail()}"
                )


# -- the report ------------------------------------------------------------------------------


def _m(outcomes: list[dict[str, Any]], key: str) -> float:
    return median([o[key] for o in outcomes])


def _interval(
    a: list[dict[str, Any]], b: list[dict[str, Any]], key: str = "rps"
) -> tuple[float, float, float]:
    return ratio_interval([o[key] for o in a], [o[key] for o in b])


def hot_table(
    endpoint: str, cells: dict[int, dict[str, list[dict[str, Any]]]], reference: str = UOW
) -> str:
    rows = []
    for connections, by_app in sorted(cells.items(), key=lambda kv: int(kv[0])):
        u = by_app[reference]
        for name, outcomes in by_app.items():
            rows.append(
                [
                    str(connections) if name == reference else "",
                    name,
                    f"{_m(outcomes, 'rps'):.0f}",
                    "-" if name == reference else fmt_interval(_interval(u, outcomes)),
                    f"{_m(outcomes, 'p50_ms'):.1f}",
                    f"{_m(outcomes, 'p99_ms'):.1f}",
                    str(sum(o["errors"] for o in outcomes)),
                ]
            )
    return markdown_table(
        [
            f"`{endpoint}`: clients",
            "app",
            "req/s",
            f"{reference} / this app [95% interval]",
            "p50 ms",
            "p99 ms",
            "errors",
        ],
        rows,
    )


def idle_ms_per_request(outcomes: list[dict[str, Any]]) -> float:
    """Median over runs of idle-in-transaction connection time per request, in ms."""
    return median(
        [
            1000 * o["idle_in_transaction_connection_seconds"] / max(1, o["requests"])
            for o in outcomes
        ]
    )


def hold_table(hold: dict[str, list[dict[str, Any]]], reference: str) -> str:
    rows = []
    for name, outcomes in hold.items():
        rows.append(
            [
                name,
                f"{_m(outcomes, 'rps'):.0f}",
                fmt_interval(_interval(hold[reference], outcomes)) if name != reference else "-",
                f"{_m(outcomes, 'p50_ms'):.0f}",
                f"{_m(outcomes, 'p99_ms'):.0f}",
                f"{max(o['peak_in_use'] for o in outcomes)}",
                f"{_m(outcomes, 'mean_in_use'):.2f}",
                f"{_m(outcomes, 'mean_idle_in_transaction'):.2f}",
                f"{idle_ms_per_request(outcomes):.2f}",
                str(sum(o["errors"] for o in outcomes)),
            ]
        )
    return markdown_table(
        [
            "app",
            "req/s",
            f"{reference} / this app [95% interval]",
            "p50 ms",
            "p99 ms",
            "peak connections in use",
            "mean connections in use",
            "mean idle in transaction",
            "idle-in-transaction ms per request",
            "errors",
        ],
        rows,
    )


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, target with its measured figure, verdict) for the HTTP targets."""
    verdicts = []
    for backend, data in results["backends"].items():
        for endpoint, cells in data["hot"].items():
            if "noop" in endpoint:
                continue
            for connections, by_app in sorted(cells.items(), key=lambda kv: int(kv[0])):
                u = by_app[UOW]
                where = f"{backend}, `{endpoint}`, c={connections}"
                for peer in PEERS:
                    interval = _interval(u, by_app[peer])
                    verdicts.append(
                        (
                            where,
                            f"throughput >= {peer}: {fmt_interval(interval)}",
                            verdict_at_least(interval, 1.0),
                        )
                    )
                interval = _interval(u, by_app[BARE])
                verdicts.append(
                    (
                        where,
                        f"within 5% of bare: {fmt_interval(interval)}",
                        verdict_at_least(interval, 0.95),
                    )
                )
    return verdicts


def quart_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, target with its measured figure, verdict) for the Quart apps; none in results
    saved before they were measured."""
    verdicts = []
    for backend, data in results["backends"].items():
        for endpoint, cells in data.get("quart", {}).items():
            for connections, by_app in sorted(cells.items(), key=lambda kv: int(kv[0])):
                interval = _interval(by_app[QUART_UOW], by_app[QUART_BARE])
                verdicts.append(
                    (
                        f"Quart, {backend}, `{endpoint}`, c={connections}",
                        f"throughput within {100 - round(100 * QUART_TARGET)}% of bare "
                        f"AsyncSession: {fmt_interval(interval)}",
                        verdict_at_least(interval, QUART_TARGET),
                    )
                )
    return verdicts


def quart_markdown(results: dict[str, Any]) -> str:
    """The Quart tables, or an empty string for results saved before they were measured."""
    parts = []
    for backend, data in results["backends"].items():
        if not data.get("quart"):
            continue
        parts.append(f"### Quart, {backend}\n")
        restarts = {name: n for name, n in data.get("quart_restarts", {}).items() if n}
        if restarts:
            parts.append(
                "Restarted after a write run left the SQLite file locked (requests that wrk "
                "dropped in flight were cancelled mid-statement; see `reset_quart`): "
                + ", ".join(f"{name} {n} time(s)" for name, n in restarts.items())
                + ".\n"
            )
        if data.get("quart_costs"):
            parts.append(
                "Per request, counted (Quart's test client on one event loop; calls include "
                "resumed coroutines, round trips under the driver):\n"
            )
            parts.append(costs.markdown(data["quart_costs"], QUART_BARE))
            parts.append("")
        for endpoint, cells in data["quart"].items():
            parts.append(hot_table(endpoint, cells, QUART_UOW))
            parts.append("")
    if not parts:
        return ""
    parts.append("### Quart targets\n")
    parts.append(
        markdown_table(
            ["where", "target: measured [95% interval]", "verdict"], quart_targets(results)
        )
    )
    return "\n".join(parts) + "\n"


def markdown(results: dict[str, Any]) -> str:
    parts = []
    for backend, data in results["backends"].items():
        parts.append(f"### {backend}\n")
        if data.get("costs"):
            parts.append(
                "Per request, counted (Flask test client in one process; Python calls with "
                "`sys.setprofile`, round trips under the driver as in `tests/test_costs.py`; "
                "no timing, so no noise):\n"
            )
            parts.append(costs.markdown(data["costs"], BARE))
            parts.append("")
        for endpoint, cells in data["hot"].items():
            parts.append(hot_table(endpoint, cells))
            parts.append("")
        hold = data.get("hold", {})
        if HOLD.name in hold:
            parts.append(
                "#### Connection hold, like with like: read, wait 50 ms, write, one transaction "
                f"throughout in every app; pool size {results['hold_pool_size']}, "
                f"{results['hold_clients']} clients, gunicorn `{results['hold_gunicorn']}`\n"
            )
            parts.append(hold_table(hold[HOLD.name], UOW))
            parts.append("")
        if HOLD_SHORT.name in hold:
            parts.append(
                "#### Connection hold, short units around the external call (a different "
                "structure: a read-only unit to read, nothing open during the wait, a "
                "read-write unit to write), flask-uow and bare SQLAlchemy written the same "
                "way\n"
            )
            parts.append(hold_table(hold[HOLD_SHORT.name], UOW))
            parts.append("")
    parts.append("### HTTP targets\n")
    parts.append(
        "A tie within noise counts as *at least equal* in the issue's terms (the interval "
        "overlaps 1.0).\n"
    )
    parts.append(
        markdown_table(["where", "target: measured [95% interval]", "verdict"], targets(results))
    )
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round per cell")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    results = run(
        QUICK if args.quick else FULL, log=lambda s: print(s, file=sys.stderr, flush=True)
    )
    print(markdown(results))
    print(quart_markdown(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
