"""Per-test database isolation: flask_uow.testing.isolated() against recreating the tables.

The same small test runs N times in each mode. Two tests are measured:

- small: a service inserts a customer and two accounts in one unit of work; a read-only
  unit queries them; the test asserts it sees exactly its own rows.
- workflow: four units: a customer opens two accounts, deposits, a transfer fails and
  rolls back, a read-only unit checks the balance.

The ways to give each test a clean database:

- isolated: the tables exist once; each test runs inside ``with isolated(db):``.
- recreate: each test runs ``db.create_all()`` before and ``db.drop_all()`` after.
- TRUNCATE (PostgreSQL only): the tables exist once; after each test one
  ``TRUNCATE ... RESTART IDENTITY`` empties them all.
- DELETE: the tables exist once; after each test ``DELETE FROM`` each table, children first
  (on SQLite a DELETE without WHERE is its truncate).
- Flask-SQLAlchemy-Lite ``test_isolation()``: the same services written for
  Flask-SQLAlchemy-Lite (``db.session``, ``commit()``; ``rollback()`` when a transfer
  fails), each test in its own app context inside ``with db.test_isolation():``; on SQLite
  its engine gets SQLAlchemy's pysqlite recipe, as Lite's docs ask, so SAVEPOINTs work.

The modes alternate in rounds in one process (each going first in turn), on a SQLite file
and on a scratch PostgreSQL database ``flask_uow_bench_<random>`` that is dropped at the
end. Reported: the median over rounds of the time for N tests, and the paired ratio.

    python -m benchmarks.isolation [--tests 500] [--rounds 5] [--postgresql-url URL]
        [--skip-postgresql] [--scenario small|workflow] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database
from flask_uow.testing import isolated, scratch_database

from ._common import (
    check_local,
    fmt_interval,
    machine,
    markdown_table,
    median,
    ratio_interval,
    rotated,
)

ISOLATED = "isolated()"
RECREATE = "drop/create tables"
TRUNCATE = "TRUNCATE all"
DELETE = "DELETE all"
LITE = "Flask-SQLAlchemy-Lite test_isolation()"
MODES = (ISOLATED, RECREATE, TRUNCATE, DELETE, LITE)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "bench_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80), unique=True)


class Account(Base):
    __tablename__ = "bench_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("bench_customers.id"), index=True)
    balance: Mapped[int] = mapped_column(default=0)


class Entry(Base):
    __tablename__ = "bench_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("bench_accounts.id"), index=True)
    cents: Mapped[int]


class Services:
    """The code under test: service functions, each one unit of work."""

    def __init__(self, db: Database) -> None:
        self.db = db

        @db.transactional
        def open_customer(name: str) -> list[int]:
            customer = Customer(name=name)
            accounts = [Account(), Account()]
            db.session.add(customer)
            db.session.flush()
            for account in accounts:
                account.customer_id = customer.id
            db.session.add_all(accounts)
            db.session.flush()
            return [account.id for account in accounts]

        @db.transactional
        def deposit(account_id: int, cents: int) -> None:
            account = db.session.get_one(Account, account_id)
            account.balance += cents
            db.session.add(Entry(account_id=account_id, cents=cents))

        @db.transactional
        def transfer(source: int, target: int, cents: int) -> None:
            deposit(source, -cents)
            deposit(target, cents)
            if db.session.get_one(Account, source).balance < 0:
                raise ValueError("insufficient funds")

        @db.transactional(read_only=True)
        def summary() -> tuple[int, int, int]:
            customers = db.session.scalar(sa.select(sa.func.count()).select_from(Customer))
            entries = db.session.scalar(sa.select(sa.func.count()).select_from(Entry))
            total = db.session.scalar(sa.select(sa.func.sum(Account.balance)))
            return customers or 0, entries or 0, total or 0

        self.open_customer = open_customer
        self.deposit = deposit
        self.transfer = transfer
        self.summary = summary


class LiteServices:
    """The same services for Flask-SQLAlchemy-Lite: the request's session, commit by hand."""

    def __init__(self, url: sa.URL) -> None:
        from flask import Flask
        from flask_sqlalchemy_lite import SQLAlchemy

        self.app = Flask("isolation_lite")
        self.app.config["SQLALCHEMY_ENGINES"] = {
            "default": url.render_as_string(hide_password=False)
        }
        self.lite = lite = SQLAlchemy(session_options={"expire_on_commit": False})
        lite.init_app(self.app)
        with self.app.app_context():
            self.engine = lite.engine
        if url.get_backend_name() == "sqlite":  # the recipe Lite's docs point to
            sa.event.listen(self.engine, "connect", _no_driver_transactions)
            sa.event.listen(self.engine, "begin", lambda c: c.exec_driver_sql("BEGIN"))

        def open_customer(name: str) -> list[int]:
            session = lite.session
            customer = Customer(name=name)
            session.add(customer)
            session.flush()
            accounts = [Account(customer_id=customer.id), Account(customer_id=customer.id)]
            session.add_all(accounts)
            session.flush()
            ids = [account.id for account in accounts]
            session.commit()
            return ids

        def add_deposit(account_id: int, cents: int) -> None:
            account = lite.session.get_one(Account, account_id)
            account.balance += cents
            lite.session.add(Entry(account_id=account_id, cents=cents))

        def deposit(account_id: int, cents: int) -> None:
            add_deposit(account_id, cents)
            lite.session.commit()

        def transfer(source: int, target: int, cents: int) -> None:
            try:
                add_deposit(source, -cents)
                add_deposit(target, cents)
                if lite.session.get_one(Account, source).balance < 0:
                    raise ValueError("insufficient funds")
                lite.session.commit()
            except BaseException:
                lite.session.rollback()
                raise

        def summary() -> tuple[int, int, int]:
            session = lite.session
            customers = session.scalar(sa.select(sa.func.count()).select_from(Customer))
            entries = session.scalar(sa.select(sa.func.count()).select_from(Entry))
            total = session.scalar(sa.select(sa.func.sum(Account.balance)))
            session.commit()
            return customers or 0, entries or 0, total or 0

        self.open_customer = open_customer
        self.deposit = deposit
        self.transfer = transfer
        self.summary = summary


def _no_driver_transactions(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.isolation_level = None


def small_test(services: Services, i: int) -> None:
    """Insert a few rows through a service, query them, assert only this test's rows exist."""
    services.open_customer(f"customer {i}")
    assert services.summary() == (1, 0, 0), services.summary()


def workflow_test(services: Services, i: int) -> None:
    """Four units, one of which rolls back; the test sees only its own rows."""
    first, second = services.open_customer(f"customer {i}")
    services.deposit(first, 100)
    try:
        services.transfer(first, second, 500)
    except ValueError:
        pass
    else:  # pragma: no cover - the benchmark's own sanity check
        raise AssertionError("the transfer should have failed")
    assert services.summary() == (1, 1, 100), services.summary()


Test = Callable[[Any, int], None]
SCENARIOS: dict[str, Test] = {"small": small_test, "workflow": workflow_test}


def run_isolated(db: Database, services: Services, test: Test, tests: int) -> list[float]:
    """Seconds each test took, its isolation included."""
    db.create_all()
    durations = []
    try:
        for i in range(tests):
            start = time.perf_counter()
            with isolated(db):
                test(services, i)
            durations.append(time.perf_counter() - start)
        return durations
    finally:
        db.drop_all()


def run_recreate(db: Database, services: Services, test: Test, tests: int) -> list[float]:
    """Seconds each test took, creating and dropping the tables included."""
    durations = []
    for i in range(tests):
        start = time.perf_counter()
        db.create_all()
        try:
            test(services, i)
        finally:
            db.drop_all()
        durations.append(time.perf_counter() - start)
    return durations


def _run_emptying(
    db: Database, services: Services, test: Test, tests: int, empty: Callable[[], None]
) -> list[float]:
    db.create_all()
    durations = []
    try:
        for i in range(tests):
            start = time.perf_counter()
            try:
                test(services, i)
            finally:
                empty()
            durations.append(time.perf_counter() - start)
        return durations
    finally:
        db.drop_all()


def run_truncate(db: Database, services: Services, test: Test, tests: int) -> list[float]:
    """Seconds each test took, one TRUNCATE of every table after it included."""
    names = ", ".join(table.name for table in Base.metadata.sorted_tables)

    def empty() -> None:
        with db.engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")

    return _run_emptying(db, services, test, tests, empty)


def run_delete(db: Database, services: Services, test: Test, tests: int) -> list[float]:
    """Seconds each test took, a DELETE of every table (children first) after it included."""

    def empty() -> None:
        with db.engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())

    return _run_emptying(db, services, test, tests, empty)


def run_lite(db: Database, lite: LiteServices, test: Test, tests: int) -> list[float]:
    """Seconds each test took, in an app context inside Lite's ``test_isolation()``."""
    db.create_all()
    durations = []
    try:
        for i in range(tests):
            start = time.perf_counter()
            with lite.app.app_context(), lite.lite.test_isolation():
                test(lite, i)
            durations.append(time.perf_counter() - start)
        return durations
    finally:
        db.drop_all()


RUNNERS: dict[str, Callable[[Database, Any, Test, int], list[float]]] = {
    ISOLATED: run_isolated,
    RECREATE: run_recreate,
    TRUNCATE: run_truncate,
    DELETE: run_delete,
    LITE: run_lite,
}


def compare(
    url: sa.URL, test: Test, *, tests: int, rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Time every mode on ``url`` in rounds, each going first in turn; seconds per N tests."""
    db = Database(url, metadata=Base.metadata)
    services = Services(db)
    lite = LiteServices(url)
    modes = [m for m in MODES if not (m == TRUNCATE and url.get_backend_name() == "sqlite")]
    subject = {mode: lite if mode == LITE else services for mode in modes}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    per_test: dict[str, list[float]] = {mode: [] for mode in modes}
    failed: dict[str, str] = {}
    try:
        for mode in list(modes):  # warm up pools, caches and the ORM
            try:
                RUNNERS[mode](db, subject[mode], test, min(tests, 5))
            except RecursionError as error:
                # Flask-SQLAlchemy-Lite 0.2.1's test_isolation() recurses in begin_nested()
                # on SQLAlchemy 2.1; it works on 2.0. Report it rather than stop.
                failed[mode] = f"{type(error).__name__} on SQLAlchemy {sa.__version__}"
                modes.remove(mode)
                del seconds[mode], per_test[mode]
                db.drop_all()
        for round_index in range(rounds):
            for mode in rotated(modes, round_index):
                gc.collect()
                durations = RUNNERS[mode](db, subject[mode], test, tests)
                per_test[mode].extend(durations)
                elapsed = sum(durations)
                seconds[mode].append(elapsed)
                log(f"  round {round_index + 1}/{rounds}: {mode:<40} {elapsed:8.3f} s")
    finally:
        db.dispose()
        lite.engine.dispose()
    return {
        "tests": tests,
        "rounds": rounds,
        "failed": failed,
        "seconds": seconds,
        "median_seconds": {mode: median(values) for mode, values in seconds.items()},
        "ratios": {
            mode: ratio_interval(seconds[mode], seconds[ISOLATED])
            for mode in modes
            if mode != ISOLATED
        },
        "median_test_ms": {mode: median(values) * 1000 for mode, values in per_test.items()},
    }


@contextmanager
def backends(postgresql_url: str | None) -> Iterator[list[tuple[str, sa.URL]]]:
    """A SQLite file and, unless skipped, a scratch PostgreSQL database."""
    with tempfile.TemporaryDirectory(prefix="flask_uow_bench_") as folder:
        found = [("SQLite file", sa.make_url(f"sqlite:///{os.path.join(folder, 'bench.db')}"))]
        if postgresql_url is None:
            yield found
            return
        base = sa.make_url(postgresql_url)
        check_local(base)
        name = f"flask_uow_bench_{secrets.token_hex(5)}"
        with scratch_database(base, name) as url:
            yield [*found, ("PostgreSQL", url)]


def report(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for key, result in results.items():
        for mode, total in result["median_seconds"].items():
            rows.append(
                [
                    key if mode == ISOLATED else "",
                    mode,
                    f"{total:.3f} s",
                    f"{result['median_test_ms'][mode]:.2f} ms",
                    "-" if mode == ISOLATED else fmt_interval(result["ratios"][mode]),
                ]
            )
        for mode, why in result.get("failed", {}).items():
            rows.append(["", mode, f"failed: {why}", "-", "-"])
    tests = next(iter(results.values()))["tests"]
    rounds = next(iter(results.values()))["rounds"]
    headers = [
        "test, backend",
        "isolation",
        f"{tests} tests (median of rounds)",
        "one test (median)",
        "time / isolated() [95% interval]",
    ]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        markdown_table(headers, rows)
        + f"\n\nTime for {tests} tests: median over {rounds} rounds (modes in turn, each going "
        "first in turn); the ratio is the median of the per-round ratios with a bootstrap 95% "
        "interval. TRUNCATE runs on PostgreSQL only (SQLite has none: its DELETE without WHERE "
        f"is the truncate). Load average at the end (1/5/15 min): {load} on "
        f"{os.cpu_count()} cores."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tests", type=int, default=500, help="tests per round and mode")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both modes")
    parser.add_argument(
        "--postgresql-url",
        default=os.environ.get(
            "BENCH_POSTGRESQL_URL",
            os.environ.get(
                "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
            ),
        ),
        help="a local server where a scratch database may be created and dropped",
    )
    parser.add_argument("--skip-postgresql", action="store_true")
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        action="append",
        help="which test to measure (repeatable; default: both)",
    )
    parser.add_argument("--quick", action="store_true", help="100 tests, 3 rounds")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    tests, rounds = (100, 3) if args.quick else (args.tests, args.rounds)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results: dict[str, dict[str, Any]] = {}
    scenarios = args.scenario or list(SCENARIOS)
    with backends(None if args.skip_postgresql else args.postgresql_url) as found:
        for scenario in scenarios:
            for backend, url in found:
                key = f"{scenario}, {backend}"
                log(f"{key}: {tests} tests x {rounds} rounds per mode")
                results[key] = compare(
                    url, SCENARIOS[scenario], tests=tests, rounds=rounds, log=log
                )
    print(report(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"machine": machine(), "results": results}, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
