"""What an async unit of work costs per call, beside a bare AsyncSession and the async session
of Flask-SQLAlchemy-Lite, side by side on one event loop.

The contenders, each on its own async engine configured as its library's documentation says,
all with ``expire_on_commit=False`` and a pool of 10 (``overhead.POOL``):

- **bare AsyncSession**: ``async with AsyncSession(engine) as s, s.begin(): <body>`` on a stock
  ``create_async_engine``; read-only units on ``postgresql_readonly=True`` (PostgreSQL).
- **bare AsyncSession, same SQL** (SQLite only): stock aiosqlite, like stock pysqlite, sends
  only the SELECT of a read; this twin uses SQLAlchemy's documented aiosqlite recipe (driver
  transactions off, ``BEGIN`` from a ``begin`` listener) and sends what flask-uow sends:
  ``BEGIN IMMEDIATE`` for read-write units, ``BEGIN`` for read-only ones.
- **flask-uow**: ``async with db.unit_of_work(): <body with db.async_session>`` on a
  ``Database(url)`` with no app (its async engine is derived from the URL).
- **flask-uow, Quart app context**: the same unit on a Database given to a Quart app by
  ``init_app``, in that app's context (what a Quart view runs).
- **Flask-SQLAlchemy-Lite**: its documented async use: ``SQLALCHEMY_ASYNC_ENGINES`` in the
  config, ``db.async_session`` in an app context, ``await db.async_session.commit()``, the
  session closed by the extension's app-context teardown. The app context stays pushed for
  the run and each call ends by running the app's teardown functions, as popping the
  context at the end of a request does. (Popping it cannot be timed here: Flask runs an
  async teardown function through asgiref, which refuses to inside a running event loop.)

Rounds alternate the contenders (each going first in turn), every round timing a chunk of
calls; ratios are medians of the per-round ratios with a bootstrap 95% interval. Each row also
gives, counted rather than timed, the Python function calls (resumed coroutines included) and
the round trips one call makes.

    python -m benchmarks.overhead_async [--quick] [--sqlite-only] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask
from quart import Quart
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from flask_uow import Database

from ._common import fmt_interval, markdown_table, median, ratio_interval, rotated, verdict_at_most
from .overhead import FULL, POOL, QUICK, ROWS, Base, Item, Settings, backends

BARE = "bare AsyncSession"
BARE_SQL = "bare AsyncSession, same SQL"
UOW = "flask-uow"
UOW_QUART = "flask-uow, Quart app context"
LITE = "Flask-SQLAlchemy-Lite"

OPERATIONS = ("empty unit", "primary-key get", "insert", "read-only unit")
WORK = {
    "empty unit": "enter and leave a unit with no statement: flask-uow builds no session; "
    "the bare AsyncSession is built and begun; Flask-SQLAlchemy-Lite commits its (unused) "
    "session; nobody sends SQL",
    "primary-key get": "`await session.get(Item, i)` in a read-write unit, committed",
    "insert": "`session.add(Item(...))` in a read-write unit, committed",
    "read-only unit": "`await session.get(Item, i)` in a read-only transaction (flask-uow "
    "`read_only=True`; bare: `postgresql_readonly=True` on PostgreSQL, `BEGIN` rather than "
    "`BEGIN IMMEDIATE` on SQLite); Flask-SQLAlchemy-Lite has no read-only mode and commits",
}
Op = Callable[[int], Awaitable[object]]


def async_url(url: sa.URL) -> sa.URL:
    """The URL of the async driver each library's docs use: aiosqlite, psycopg (async mode)."""
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    return url  # postgresql+psycopg serves both modes


def aiosqlite_recipe(url: sa.URL) -> tuple[AsyncEngine, AsyncEngine]:
    """SQLAlchemy's documented aiosqlite recipe: (BEGIN IMMEDIATE engine, BEGIN engine), with
    the ``synchronous`` setting flask-uow gives a file in WAL mode."""
    engine = create_async_engine(url, **POOL)

    @event.listens_for(engine.sync_engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")  # as flask-uow's engine sets for WAL
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("bench_write_lock")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine.execution_options(bench_write_lock=True), engine


async def end_of_app_context(app: Flask) -> None:
    """Run what popping ``app``'s app context runs (its teardown functions, last registered
    first), awaiting the async ones in this loop instead of through asgiref."""
    for teardown in reversed(app.teardown_appcontext_funcs):
        result = teardown(None)
        if inspect.isawaitable(result):
            await result


class Contenders:
    """Every contender's engine (and app) on one database."""

    def __init__(self, url: sa.URL) -> None:
        from flask_sqlalchemy_lite import SQLAlchemy as Lite

        rendered = url.render_as_string(hide_password=False)
        aurl = async_url(url)
        self.is_sqlite = url.get_backend_name() == "sqlite"

        setup = sa.create_engine(url, poolclass=sa.pool.NullPool)
        Base.metadata.drop_all(setup)
        Base.metadata.create_all(setup)
        with setup.begin() as conn:  # ids 1..ROWS from the table's own sequence
            conn.execute(sa.insert(Item), [{"name": f"item {i}"} for i in range(ROWS)])
        self.setup = setup

        self.stock = create_async_engine(aurl, **POOL)
        self.stock_read_only = (
            self.stock if self.is_sqlite else self.stock.execution_options(postgresql_readonly=True)
        )
        self.engines = [self.stock]
        if self.is_sqlite:
            self.same_sql, self.same_sql_read_only = aiosqlite_recipe(aurl)
            self.engines.append(self.same_sql)

        self.plain = Database(rendered, engine_options=POOL)

        self.quart_app = Quart("flask_uow_quart")
        self.quart_app.config.update(UOW_DATABASE_URL=rendered, UOW_ENGINE_OPTIONS=POOL)
        self.quart_db = Database()
        self.quart_db.init_app(self.quart_app)

        self.lite_app = Flask("flask_sqlalchemy_lite")
        self.lite_app.config.update(
            SQLALCHEMY_ASYNC_ENGINES={
                "default": {"url": aurl.render_as_string(hide_password=False), **POOL}
            }
        )
        self.lite = Lite(session_options={"expire_on_commit": False})
        self.lite.init_app(self.lite_app)

    def reset(self) -> None:
        """Back to the seeded ROWS rows (the insert benchmark adds some)."""
        with self.setup.begin() as conn:
            conn.execute(sa.delete(Item).where(Item.id > ROWS))

    async def close(self) -> None:
        for engine in self.engines:
            await engine.dispose()
        await self.plain.dispose_async()
        await self.quart_db.dispose_async()
        await self.lite.async_engine.dispose()  # in the Flask app context run() pushed
        self.setup.dispose()

    def ops(self, name: str) -> dict[str, Op]:
        body = BODIES[name]
        read_only = name == "read-only unit"

        def bare(engine: AsyncEngine) -> Op:
            async def run(i: int) -> None:
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    async with session.begin():
                        await body(session, i)

            return run

        def unit(db: Database) -> Op:
            if name == "empty unit":

                async def run(i: int) -> None:
                    async with db.unit_of_work():
                        pass

                return run

            async def run_body(i: int) -> None:
                async with db.unit_of_work(read_only=read_only):
                    await body(db.async_session, i)

            return run_body

        lite, lite_app = self.lite, self.lite_app

        async def flask_sqlalchemy_lite(i: int) -> None:
            session = lite.async_session  # created on first use in the app context
            await body(session, i)
            await session.commit()
            await end_of_app_context(lite_app)  # the extension closes the session

        ops = {BARE: bare(self.stock_read_only if read_only else self.stock)}
        if self.is_sqlite:
            ops[BARE_SQL] = bare(self.same_sql_read_only if read_only else self.same_sql)
        ops[UOW] = unit(self.plain)
        ops[UOW_QUART] = unit(self.quart_db)
        ops[LITE] = flask_sqlalchemy_lite
        return ops


async def _nothing(session: AsyncSession, i: int) -> None:
    pass


async def _get(session: AsyncSession, i: int) -> None:
    await session.get(Item, i % ROWS + 1)


async def _insert(session: AsyncSession, i: int) -> None:
    session.add(Item(name="inserted"))


BODIES: dict[str, Callable[[AsyncSession, int], Awaitable[None]]] = {
    "empty unit": _nothing,
    "primary-key get": _get,
    "insert": _insert,
    "read-only unit": _get,
}


# -- timing and counting ---------------------------------------------------------------------


async def time_chunk(op: Op, calls: int, cpu: list[float] | None = None) -> float:
    """Wall-clock nanoseconds per call of ``op`` over ``calls`` calls; this thread's CPU
    nanoseconds per call are appended to ``cpu``."""
    gc.collect()
    start_cpu = time.thread_time_ns()
    start = time.perf_counter_ns()
    for i in range(calls):
        await op(i)
    wall = (time.perf_counter_ns() - start) / calls
    if cpu is not None:
        cpu.append((time.thread_time_ns() - start_cpu) / calls)
    return wall


async def compare(
    ops: dict[str, Op], settings: Settings, cpu: dict[str, list[float]]
) -> dict[str, list[float]]:
    """Nanoseconds per call of each contender, one sample per round, contenders alternating."""
    for op in ops.values():  # warm up: pool connections, compiled-statement cache, imports
        for i in range(10):
            await op(i)
    per_call = median([await time_chunk(op, 10) for op in ops.values()])
    calls = max(settings.min_calls, int(settings.chunk_seconds * 1e9 / per_call))
    names = list(ops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        cpu[name] = []
    for round_index in range(settings.rounds):
        for name in rotated(names, round_index):
            samples[name].append(await time_chunk(ops[name], calls, cpu[name]))
    return samples


async def counted(ops: dict[str, Op], wire: Any) -> dict[str, dict[str, int]]:
    """Python calls and round trips of one call of each contender (tests/test_costs.py)."""
    from tests.test_costs import count_calls_async

    out = {}
    for name, op in ops.items():

        def once(op: Op = op) -> Awaitable[object]:
            return op(7)

        out[name] = {
            "calls": await count_calls_async(once, warmup=5, samples=5),
            "round_trips": await wire.measure_async(once),
        }
    return out


# -- the run ---------------------------------------------------------------------------------


def run(
    settings: Settings, *, skip_postgresql: bool = False, log: Callable[[str], None]
) -> dict[str, Any]:
    from tests.test_costs import wire

    started = time.monotonic()
    say = log
    log = lambda line: say(f"[{time.monotonic() - started:6.1f}s] {line}")  # noqa: E731
    results: dict[str, Any] = {"settings": settings.__dict__, "backends": {}}
    with backends(skip_postgresql) as urls:
        for backend, url in urls:
            log(f"async overhead: {backend}")
            with wire() as counter:
                contenders = Contenders(url)
                # Pushed outside the event loop, so that popping it (after the loop) may run
                # the extension's async teardown through asgiref.
                with contenders.lite_app.app_context():
                    results["backends"][backend] = asyncio.run(
                        _run_backend(contenders, settings, counter, log)
                    )
    return results


async def _run_backend(
    c: Contenders, settings: Settings, counter: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        async with c.quart_app.app_context():
            gc.collect()
            gc.freeze()  # what exists now is never garbage: keep collections short
            try:
                for name in OPERATIONS:
                    log(f"  async units: {name}")
                    ops = c.ops(name)
                    cpu: dict[str, list[float]] = {}
                    out[name] = {
                        "samples": await compare(ops, settings, cpu),
                        "cpu": cpu,
                        "counts": await counted(ops, counter),
                    }
                    if name == "insert":
                        c.reset()
            finally:
                gc.unfreeze()
    finally:
        await c.close()
    return out


# -- the report ------------------------------------------------------------------------------


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f}"


def _reference(samples: dict[str, Any]) -> str:
    """The twin sending flask-uow's SQL: the recipe engine on SQLite, else the stock one."""
    return BARE_SQL if BARE_SQL in samples else BARE


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(backend, target with its measured figure, verdict) for the async unit targets."""
    out = []
    for backend, data in results["backends"].items():
        pk = data["primary-key get"]
        ref = _reference(pk["samples"])
        for what, figures in (("", pk["samples"]), (", client CPU time", pk["cpu"])):
            interval = ratio_interval(figures[UOW], figures[ref])
            out.append(
                (
                    backend,
                    f"async primary-key unit{what} <= 1.05x {ref}: {fmt_interval(interval)}",
                    verdict_at_most(interval, 1.05),
                )
            )
    return out


def _table(data: dict[str, Any]) -> str:
    rows = []
    for op, figures in data.items():
        samples, cpu, counts = figures["samples"], figures["cpu"], figures["counts"]
        ref = _reference(samples)
        for name in samples:
            rows.append(
                [
                    op if name == next(iter(samples)) else "",
                    name,
                    _us(median(samples[name])),
                    str(counts[name]["calls"]),
                    str(counts[name]["round_trips"]),
                    "-"
                    if name == ref
                    else fmt_interval(ratio_interval(samples[name], samples[ref])),
                    "-" if name == ref else fmt_interval(ratio_interval(cpu[name], cpu[ref])),
                    "-"
                    if name == UOW
                    else fmt_interval(ratio_interval(samples[UOW], samples[name])),
                ]
            )
    return markdown_table(
        [
            "unit",
            "contender",
            "median us per call",
            "Python calls per call",
            "round trips per call",
            "time / reference [95% interval]",
            "client CPU time / reference [95% interval]",
            "flask-uow time / this [95% interval]",
        ],
        rows,
    )


def markdown(results: dict[str, Any]) -> str:
    parts: list[str] = ["What each operation does:", ""]
    parts += [f"- **{op}**: {what}" for op, what in WORK.items()]
    parts += [
        "",
        "Python calls are counted with `sys.setprofile` around one awaited call, so they include "
        "what the event loop runs meanwhile and every resumption of a suspended coroutine "
        "(the smallest of 5 samples). *Client CPU time* is the event loop thread's CPU time; "
        "aiosqlite runs SQLite in a thread of its own, which it does not include.",
        "",
    ]
    for backend, data in results["backends"].items():
        ref = _reference(next(iter(data.values()))["samples"])
        parts.append(f"### {backend}\n")
        parts.append(
            f"Reference: **{ref}**"
            + (
                " (aiosqlite with SQLAlchemy's documented transaction recipe: the statements "
                "flask-uow sends). *bare AsyncSession* and Flask-SQLAlchemy-Lite on stock "
                "aiosqlite send a read's SELECT with no transaction around it: compare the "
                "round trips."
                if ref == BARE_SQL
                else " on a stock async engine."
            )
            + "\n"
        )
        parts.append(_table(data))
        parts.append("")
    parts.append("### Async targets\n")
    parts.append(
        markdown_table(["backend", "target: measured [95% interval]", "verdict"], targets(results))
    )
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter chunks")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--json", help="also write the raw samples to this file")
    args = parser.parse_args(argv)
    results = run(
        QUICK if args.quick else FULL,
        skip_postgresql=args.sqlite_only,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(markdown(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
