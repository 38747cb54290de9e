"""SQLite under concurrency: 8 threads of read units while one thread writes.

Each configuration gets its own database file with 1000 rows and flask-uow's engine
(``flask_uow._engines.create_engine`` and ``EngineVariants``, the engine a ``Database``
makes), and runs for the same time: 8 reader threads each loop over units reading one row
by primary key, one writer thread loops over units updating one row. Configurations:

- **rollback journal**: ``sqlite_wal=False``, the journal SQLite uses unless told otherwise
  (flask-uow's default before WAL);
- **WAL**: write-ahead logging and ``synchronous=NORMAL``, flask-uow's default for files;

each with readers in read-only units (deferred ``BEGIN``), in read-write units
(``BEGIN IMMEDIATE``: what a per-request unit gives a GET today) and, for the decision of
how a read-write unit that only reads should begin, in read-write units beginning deferred.
Configurations alternate in rounds (each going first in turn); ratios are paired by round
with a bootstrap 95% interval.

    python -m benchmarks.sqlite_concurrency [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_uow._engines import EngineVariants, create_engine

from ._common import fmt_interval, markdown_table, median, ratio_interval, rotated, verdict_at_least

ROWS = 1000
READERS = 8


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bench_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]
    label: Mapped[str] = mapped_column(String(40))


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: float


FULL = Settings(rounds=7, seconds=3.0)
QUICK = Settings(rounds=5, seconds=0.3)

JOURNAL = "rollback journal"
WAL = "WAL"
READ_ONLY = "read-only units"
IMMEDIATE = "read-write units (BEGIN IMMEDIATE)"
DEFERRED = "read-write units, deferred BEGIN"
CONFIGS = [
    (JOURNAL, READ_ONLY),
    (WAL, READ_ONLY),
    (JOURNAL, IMMEDIATE),
    (WAL, IMMEDIATE),
    (WAL, DEFERRED),
]


def prepare(directory: str, journal: str) -> EngineVariants:
    path = os.path.join(directory, f"{journal.replace(' ', '_')}.db")
    engine = create_engine(
        f"sqlite:///{path}", {"pool_size": READERS + 2}, sqlite_wal=journal == WAL
    )
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(sa.insert(Row), [{"value": 0, "label": f"row {i}"} for i in range(ROWS)])
    return EngineVariants(engine)


def mix(variants: EngineVariants, readers: str, seconds: float) -> dict[str, float]:
    """Read units per second (all readers), write units per second, and errors."""
    if readers == READ_ONLY:
        read_bind = variants.for_unit(read_only=True, isolation_level=None)
    elif readers == IMMEDIATE:
        read_bind = variants.for_unit(read_only=False, isolation_level=None)
    else:
        read_bind = variants.engine  # the stock path: a deferred BEGIN
    write_bind = variants.for_unit(read_only=False, isolation_level=None)
    stop = threading.Event()
    start = threading.Barrier(READERS + 2)
    counts = {"reads": 0, "writes": 0, "errors": 0}
    lock = threading.Lock()

    def loop(work: Callable[[random.Random], None], key: str, seed: int) -> None:
        rng = random.Random(seed)
        done = errors = 0
        start.wait()
        while not stop.is_set():
            try:
                work(rng)
                done += 1
            except sa.exc.OperationalError:
                errors += 1
        with lock:
            counts[key] += done
            counts["errors"] += errors

    def read(rng: random.Random) -> None:
        with Session(read_bind, expire_on_commit=False) as session, session.begin():
            session.get(Row, rng.randint(1, ROWS))

    def write(rng: random.Random) -> None:
        with Session(write_bind, expire_on_commit=False) as session, session.begin():
            row = session.get(Row, rng.randint(1, ROWS))
            assert row is not None
            row.value += 1

    threads = [threading.Thread(target=loop, args=(read, "reads", i)) for i in range(READERS)]
    threads.append(threading.Thread(target=loop, args=(write, "writes", 99)))
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)  # the measured stretch
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {
        "reads_per_s": counts["reads"] / elapsed,
        "writes_per_s": counts["writes"] / elapsed,
        "errors": counts["errors"],
    }


def run(settings: Settings, *, log: Callable[[str], None]) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {f"{j}, {r}": [] for j, r in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="flask_uow_bench_sqlite_") as directory:
        variants = {journal: prepare(directory, journal) for journal in (JOURNAL, WAL)}
        for round_index in range(settings.rounds):
            log(f"sqlite concurrency: round {round_index + 1} of {settings.rounds}")
            for journal, readers in rotated(CONFIGS, round_index):
                outcome = mix(variants[journal], readers, settings.seconds)
                samples[f"{journal}, {readers}"].append(outcome)
        for v in variants.values():
            v.engine.dispose()
    return {"settings": settings.__dict__, "samples": samples}


def _series(results: dict[str, Any], config: str, key: str) -> list[float]:
    return [o[key] for o in results["samples"][config]]


def target(results: dict[str, Any]) -> tuple[str, str]:
    """(what, verdict) for the issue's target: WAL reads >= 3x the rollback journal's."""
    interval = ratio_interval(
        _series(results, f"{WAL}, {READ_ONLY}", "reads_per_s"),
        _series(results, f"{JOURNAL}, {READ_ONLY}", "reads_per_s"),
    )
    return (
        f"8 read-only units while writing, WAL / rollback journal >= 3x: {fmt_interval(interval)}",
        verdict_at_least(interval, 3.0),
    )


def markdown(results: dict[str, Any]) -> str:
    base = f"{JOURNAL}, {READ_ONLY}"
    rows = []
    for config in results["samples"]:
        rows.append(
            [
                config,
                f"{median(_series(results, config, 'reads_per_s')):.0f}",
                f"{median(_series(results, config, 'writes_per_s')):.0f}",
                "-"
                if config == base
                else fmt_interval(
                    ratio_interval(
                        _series(results, config, "reads_per_s"),
                        _series(results, base, "reads_per_s"),
                    )
                ),
                "-"
                if config == base
                else fmt_interval(
                    ratio_interval(
                        _series(results, config, "writes_per_s"),
                        _series(results, base, "writes_per_s"),
                    )
                ),
                str(int(sum(_series(results, config, "errors")))),
            ]
        )
    table = markdown_table(
        [
            "journal, readers in",
            "read units/s (8 threads)",
            "write units/s (1 thread)",
            f"reads / {base} [95% interval]",
            "writes / same",
            "errors",
        ],
        rows,
    )
    what, verdict = target(results)
    return f"{table}\n\nTarget: {what}: {verdict}.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else FULL, log=lambda s: print(s, file=sys.stderr))
    print(markdown(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
