"""Overhead of async units against a bare AsyncSession, paired, in one process.

Each row times the same body two ways on the same async engine (same pool):

- bare: ``async with AsyncSession(engine) as s, s.begin(): <body>``
- uow: ``async with db.unit_of_work(): <body with db.session>``

Rounds alternate the two contenders, each round timing a chunk of calls; the table
reports the median time per call of each and the median of the per-round ratios.

    python benchmarks/overhead_async.py [--quick] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database

ROWS = 1000

Op = Callable[[int], Awaitable[object]]


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bench_async_row"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


def contenders(db: Database) -> dict[str, dict[str, Op]]:
    engine = db.async_engine

    async def bare_get(i: int) -> object:
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            return await session.get(Row, i % ROWS + 1)

    async def uow_get(i: int) -> object:
        async with db.unit_of_work():
            return await db.async_session.get(Row, i % ROWS + 1)

    async def bare_read_only(i: int) -> object:
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            result = await session.get(Row, i % ROWS + 1)
            await session.rollback()
            return result

    async def uow_read_only(i: int) -> object:
        async with db.unit_of_work(read_only=True):
            return await db.async_session.get(Row, i % ROWS + 1)

    async def bare_empty(i: int) -> None:
        async with AsyncSession(engine) as session, session.begin():
            pass

    async def uow_empty(i: int) -> None:
        async with db.unit_of_work():
            pass

    return {
        "primary-key get, read-write": {"bare": bare_get, "uow": uow_get},
        "primary-key get, read-only": {"bare": bare_read_only, "uow": uow_read_only},
        "empty unit (no SQL)": {"bare": bare_empty, "uow": uow_empty},
    }


async def time_chunk(op: Op, calls: int) -> float:
    start = time.perf_counter_ns()
    for i in range(calls):
        await op(i)
    return (time.perf_counter_ns() - start) / calls


async def compare(ops: dict[str, Op], rounds: int, calls: int) -> dict[str, list[float]]:
    for op in ops.values():
        await time_chunk(op, calls)  # warm up: pool filled, statements cached
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for round_number in range(rounds):
        names = list(ops) if round_number % 2 == 0 else list(reversed(ops))
        for name in names:
            samples[name].append(await time_chunk(ops[name], calls))
    return samples


async def bench(url: str, rounds: int, calls: int) -> list[tuple[str, float, float, float]]:
    db = Database(url, metadata=Base.metadata)
    db.drop_all()
    db.create_all()
    with db.unit_of_work():
        db.session.add_all(Row(name=f"row-{i}") for i in range(ROWS))
    rows = []
    try:
        for label, ops in contenders(db).items():
            samples = await compare(ops, rounds, calls)
            ratios = [uow / bare for uow, bare in zip(samples["uow"], samples["bare"], strict=True)]
            rows.append(
                (
                    label,
                    statistics.median(samples["bare"]) / 1000,
                    statistics.median(samples["uow"]) / 1000,
                    statistics.median(ratios),
                )
            )
    finally:
        await db.dispose_async()
        db.drop_all()
        db.dispose()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter chunks")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL and MariaDB")
    args = parser.parse_args(argv)
    rounds, calls = (6, 200) if args.quick else (20, 500)
    urls = {"sqlite": f"sqlite:///{tempfile.mkdtemp()}/bench.db"}
    if not args.sqlite_only:
        urls["postgresql"] = os.environ.get(
            "BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        urls["mariadb"] = os.environ.get(
            "BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
        )
    print("| backend | body | bare AsyncSession (µs) | async unit (µs) | ratio |")
    print("|---|---|---:|---:|---:|")
    for backend, url in urls.items():
        for label, bare, uow, ratio in asyncio.run(bench(url, rounds, calls)):
            print(f"| {backend} | {label} | {bare:.1f} | {uow:.1f} | {ratio:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
