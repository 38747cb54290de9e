"""Per-test database isolation: flask_uow.testing.isolated() against recreating the tables.

The same small test runs N times in each mode. Two tests are measured:

- small: a service inserts a customer and two accounts in one unit of work; a read-only
  unit queries them; the test asserts it sees exactly its own rows.
- workflow: four units: a customer opens two accounts, deposits, a transfer fails and
  rolls back, a read-only unit checks the balance.

The two ways to give each test a clean database:

- isolated: the tables exist once; each test runs inside ``with isolated(db):``.
- recreate: each test runs ``db.create_all()`` before and ``db.drop_all()`` after.

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

from ._common import check_local, fmt_ratio, machine, markdown_table, median, paired_ratio

ISOLATED = "isolated()"
RECREATE = "drop/create tables"
MODES = (ISOLATED, RECREATE)


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


Test = Callable[[Services, int], None]
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


RUNNERS: dict[str, Callable[[Database, Services, Test, int], list[float]]] = {
    ISOLATED: run_isolated,
    RECREATE: run_recreate,
}


def compare(
    url: sa.URL, test: Test, *, tests: int, rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Time both modes on ``url`` in alternating rounds; seconds per N tests, by mode."""
    db = Database(url, metadata=Base.metadata)
    services = Services(db)
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_test: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        run_isolated(db, services, test, min(tests, 20))  # warm up pool, caches and the ORM
        run_recreate(db, services, test, min(tests, 5))
        for round_index in range(rounds):
            order = MODES if round_index % 2 == 0 else MODES[::-1]
            for mode in order:
                gc.collect()
                durations = RUNNERS[mode](db, services, test, tests)
                per_test[mode].extend(durations)
                elapsed = sum(durations)
                seconds[mode].append(elapsed)
                log(f"  round {round_index + 1}/{rounds}: {mode:<20} {elapsed:8.3f} s")
    finally:
        db.dispose()
    return {
        "tests": tests,
        "rounds": rounds,
        "seconds": seconds,
        "median_seconds": {mode: median(values) for mode, values in seconds.items()},
        "ratio": paired_ratio(seconds[RECREATE], seconds[ISOLATED]),
        "median_test_ms": {mode: median(values) * 1000 for mode, values in per_test.items()},
        "test_ratio": median(per_test[RECREATE]) / median(per_test[ISOLATED]),
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
        isolated_s = result["median_seconds"][ISOLATED]
        recreate_s = result["median_seconds"][RECREATE]
        rows.append(
            [
                key,
                f"{isolated_s:.3f} s",
                f"{recreate_s:.3f} s",
                fmt_ratio(result["ratio"]),
                f"{result['median_test_ms'][ISOLATED]:.2f} ms",
                f"{result['median_test_ms'][RECREATE]:.2f} ms",
                fmt_ratio(result["test_ratio"]),
            ]
        )
    tests = next(iter(results.values()))["tests"]
    rounds = next(iter(results.values()))["rounds"]
    headers = [
        "test, backend",
        f"{ISOLATED}, {tests} tests",
        f"{RECREATE}, {tests} tests",
        "faster by",
        f"{ISOLATED}, one test",
        f"{RECREATE}, one test",
        "faster by",
    ]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        markdown_table(headers, rows)
        + f"\n\nTime for {tests} tests: median over {rounds} rounds, and the median of each "
        "round's drop/create time over its isolated() time. One test: median over all "
        f"{tests * rounds} tests of each mode, and their ratio. Load average at the end "
        f"(1/5/15 min): {load} on {os.cpu_count()} cores."
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
