"""What a unit of work costs per call, beside bare SQLAlchemy and the Flask extensions.

Every contender runs on its own engine, configured the way its library's documentation says
(flask-uow on the engine it makes; bare SQLAlchemy on ``sqlalchemy.create_engine``; the
extensions from their own config), all with ``expire_on_commit=False`` as flask-uow has, and
the same pool size. Round by round the contenders take turns (each going first in turn); each
round times a chunk of calls with ``time.perf_counter_ns``. Ratios are medians of the per-round
ratios with a bootstrap 95% interval. Each row also gives, counted rather than timed, the
Python function calls and the round trips one call makes, so that the work is on the page.

Two groups of rows:

- **units** (the targets): flask-uow against bare SQLAlchemy doing the same work, in one
  pushed Flask app context. On SQLite, stock pysqlite sends only the SELECT of a read (it
  begins a transaction before DML only), so a second twin, *bare, same SQL*, uses
  SQLAlchemy's documented pysqlite recipe and sends what flask-uow sends
  (``BEGIN IMMEDIATE`` for read-write units, ``BEGIN`` for read-only ones).
- **peers**: every call pushes its app context and pops it, as a request would, for
  flask-uow, Flask-SQLAlchemy, Flask-SQLAlchemy-Lite, Advanced Alchemy and bare SQLAlchemy.

    python -m benchmarks.overhead [--quick] [--sqlite-only] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy import String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_uow import Database, Propagation

from ._common import (
    fmt_interval,
    markdown_table,
    median,
    ratio_interval,
    rotated,
    scratch_postgresql,
    verdict_at_most,
)

ROWS = 1000
"""Rows seeded for primary-key reads; call ``i`` reads row ``i % ROWS + 1``."""
POOL = {"pool_size": 10, "max_overflow": 0}

BARE = "bare SQLAlchemy"
BARE_SQL = "bare SQLAlchemy, same SQL"
UOW = "flask-uow"
UOW_PLAIN = "flask-uow, no Flask app"
UOW_READ_WRITE = "flask-uow, the same read in a read-write unit"
FSQLA = "Flask-SQLAlchemy"
LITE = "Flask-SQLAlchemy-Lite"
AA = "Advanced Alchemy"

OPERATIONS = ("empty unit", "primary-key get", "insert", "read-only unit")
WORK = {
    "empty unit": "enter and leave a unit with no statement: flask-uow builds no Session; "
    "bare SQLAlchemy builds one and begins it; the extensions commit their (unused) session; "
    "nobody sends SQL",
    "primary-key get": "`session.get(Item, i)` in a read-write unit, committed",
    "insert": "`session.add(Item(...))` in a read-write unit, committed",
    "read-only unit": "`session.get(Item, i)` in a read-only transaction (flask-uow "
    "`read_only=True`; bare: `postgresql_readonly=True` on PostgreSQL, `BEGIN` rather than "
    "`BEGIN IMMEDIATE` on SQLite); the extensions have no read-only mode and run their read",
}
Op = Callable[[int], object]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


@dataclass(frozen=True)
class Settings:
    rounds: int
    """Paired rounds per row."""
    sweep_rounds: int
    """Rounds per point of the nesting and hook sweeps."""
    chunk_seconds: float
    """About how long one contender's timed chunk of calls lasts in one round."""

    min_calls: int
    """Fewest calls in a chunk."""


FULL = Settings(rounds=31, sweep_rounds=15, chunk_seconds=0.06, min_calls=20)
QUICK = Settings(rounds=5, sweep_rounds=0, chunk_seconds=0.004, min_calls=3)


# -- engines -------------------------------------------------------------------------------


def sqlite_recipe(url: sa.URL) -> tuple[sa.Engine, sa.Engine]:
    """SQLAlchemy's documented pysqlite recipe: (BEGIN IMMEDIATE engine, BEGIN engine), with
    the ``synchronous`` setting flask-uow gives a file in WAL mode."""
    engine = sa.create_engine(url, **POOL)

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON").close()
        # As flask-uow's engine sets for a file in WAL mode, so that a commit costs the same.
        dbapi_connection.execute("PRAGMA synchronous = NORMAL").close()

    @event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("bench_write_lock")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine.execution_options(bench_write_lock=True), engine


class Contenders:
    """Every library's app and engine on one database."""

    def __init__(self, url: sa.URL) -> None:
        from advanced_alchemy.config import SyncSessionConfig
        from advanced_alchemy.extensions.flask import (
            AdvancedAlchemy,
            EngineConfig,
            SQLAlchemySyncConfig,
        )
        from flask_sqlalchemy import SQLAlchemy as FlaskSQLAlchemy
        from flask_sqlalchemy_lite import SQLAlchemy as Lite

        rendered = url.render_as_string(hide_password=False)
        self.is_sqlite = url.get_backend_name() == "sqlite"
        self.disposers: list[Callable[[], None]] = []

        self.bare_app = Flask("bare")
        self.stock = sa.create_engine(url, **POOL)
        self.stock_read_only = (
            self.stock if self.is_sqlite else self.stock.execution_options(postgresql_readonly=True)
        )
        self.disposers.append(self.stock.dispose)
        if self.is_sqlite:
            self.same_sql, self.same_sql_read_only = sqlite_recipe(url)
            self.disposers.append(self.same_sql.dispose)

        self.uow_app = Flask("flask_uow")
        self.uow_app.config.update(UOW_DATABASE_URL=rendered, UOW_ENGINE_OPTIONS=POOL)
        self.uow = Database(metadata=Base.metadata)
        self.uow.init_app(self.uow_app)
        self.plain = Database(rendered, engine_options=POOL)
        self.disposers.append(self.plain.dispose)

        self.fsqla_app = Flask("flask_sqlalchemy")
        self.fsqla_app.config.update(
            SQLALCHEMY_DATABASE_URI=rendered, SQLALCHEMY_ENGINE_OPTIONS=POOL
        )
        self.fsqla = FlaskSQLAlchemy(
            metadata=Base.metadata, session_options={"expire_on_commit": False}
        )
        self.fsqla.init_app(self.fsqla_app)

        self.lite_app = Flask("flask_sqlalchemy_lite")
        self.lite_app.config.update(SQLALCHEMY_ENGINES={"default": {"url": rendered, **POOL}})
        self.lite = Lite(session_options={"expire_on_commit": False})
        self.lite.init_app(self.lite_app)

        self.aa_app = Flask("advanced_alchemy")
        self.aa = AdvancedAlchemy(
            config=SQLAlchemySyncConfig(
                connection_string=rendered,
                engine_config=EngineConfig(**POOL),
                session_config=SyncSessionConfig(expire_on_commit=False),
            ),
            app=self.aa_app,
        )

        self._context = self.uow_app.app_context()
        self._context.push()
        self.disposers.append(self.uow.dispose)
        with self.fsqla_app.app_context():
            self.disposers.append(self.fsqla.engine.dispose)
        with self.lite_app.app_context():
            self.disposers.append(self.lite.engine.dispose)
        self.disposers.append(self.aa.config[0].get_engine().dispose)

        Base.metadata.drop_all(self.stock)
        Base.metadata.create_all(self.stock)
        with self.stock.begin() as conn:  # ids 1..ROWS from the table's own sequence
            conn.execute(sa.insert(Item), [{"name": f"item {i}"} for i in range(ROWS)])

    def reset(self) -> None:
        """Back to the seeded ROWS rows (the insert benchmark adds some)."""
        with self.stock.begin() as conn:
            conn.execute(sa.delete(Item).where(Item.id > ROWS))

    def close(self) -> None:
        self._context.pop()
        for dispose in self.disposers:
            dispose()

    # Each operation takes the call's index and does one unit of work.

    def units(self, name: str) -> dict[str, Op]:
        """The target group: flask-uow and bare SQLAlchemy, in the pushed app context."""
        body = BODIES[name]
        read_only = name == "read-only unit"

        def bare(engine: sa.Engine) -> Op:
            def run(i: int) -> None:
                with Session(engine, expire_on_commit=False) as session, session.begin():
                    body(session, i)

            return run

        def unit(db: Database) -> Op:
            if name == "empty unit":

                def run(i: int) -> None:
                    with db.unit_of_work():
                        pass

                return run

            def run_body(i: int) -> None:
                with db.unit_of_work(read_only=read_only):
                    body(db.session, i)

            return run_body

        ops = {
            BARE: bare(self.stock_read_only if read_only else self.stock),
            UOW: unit(self.uow),
            UOW_PLAIN: unit(self.plain),
        }
        if self.is_sqlite:
            ops[BARE_SQL] = bare(self.same_sql_read_only if read_only else self.same_sql)
        if read_only:  # the same read in a read-write unit, paired round by round
            db = self.uow

            def read_write(i: int) -> None:
                with db.unit_of_work():
                    _get(db.session, i)

            ops[UOW_READ_WRITE] = read_write
        return ops

    def peers(self, name: str) -> dict[str, Op]:
        """The peer group: each call pushes and pops its library's app context."""
        body = BODIES[name]
        read_only = name == "read-only unit"
        stock = self.stock_read_only if read_only else self.stock
        fsqla, lite, aa = self.fsqla, self.lite, self.aa

        def bare(i: int) -> None:
            with self.bare_app.app_context():
                with Session(stock, expire_on_commit=False) as session, session.begin():
                    body(session, i)

        def uow(i: int) -> None:
            with self.uow_app.app_context():
                with self.uow.unit_of_work(read_only=read_only):
                    if name != "empty unit":
                        body(self.uow.session, i)

        def flask_sqlalchemy(i: int) -> None:
            with self.fsqla_app.app_context():  # the session is removed at teardown
                body(fsqla.session, i)
                fsqla.session.commit()

        def flask_sqlalchemy_lite(i: int) -> None:
            with self.lite_app.app_context():  # the session is closed at teardown
                body(lite.session, i)
                lite.session.commit()

        def advanced_alchemy(i: int) -> None:
            with self.aa_app.app_context():  # the session is closed at teardown
                session = aa.get_sync_session()
                body(session, i)
                session.commit()

        return {
            BARE: bare,
            UOW: uow,
            FSQLA: flask_sqlalchemy,
            LITE: flask_sqlalchemy_lite,
            AA: advanced_alchemy,
        }

    def nesting(self, depth: int, propagation: Propagation) -> dict[str, Op]:
        """An outermost unit with ``depth - 1`` units inside, each in its own function call.

        Bare SQLAlchemy passes its session down the same calls (joined) or opens a
        ``begin_nested()`` SAVEPOINT in each (NESTED), on the engine sending flask-uow's SQL.
        """
        engine = self.same_sql if self.is_sqlite else self.stock
        db = self.uow
        savepoints = propagation is Propagation.NESTED

        def bare_inner(session: Session, levels: int) -> None:
            if levels:
                if savepoints:
                    with session.begin_nested():
                        bare_inner(session, levels - 1)
                else:
                    bare_inner(session, levels - 1)

        def bare(i: int) -> None:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                bare_inner(session, depth - 1)

        def uow_inner(levels: int) -> None:
            if levels:
                with db.unit_of_work(propagation=propagation):
                    uow_inner(levels - 1)

        def uow(i: int) -> None:
            with db.unit_of_work():
                uow_inner(depth - 1)

        return {BARE: bare, UOW: uow}


def _nothing(session: Session, i: int) -> None:
    pass


def _get(session: Session, i: int) -> None:
    session.get(Item, i % ROWS + 1)


def _insert(session: Session, i: int) -> None:
    session.add(Item(name="inserted"))


BODIES: dict[str, Callable[[Session, int], None]] = {
    "empty unit": _nothing,
    "primary-key get": _get,
    "insert": _insert,
    "read-only unit": _get,
}


# -- timing and counting ---------------------------------------------------------------------


def time_chunk(op: Op, calls: int, cpu: list[float] | None = None) -> float:
    """Wall-clock nanoseconds per call of ``op`` over ``calls`` calls; the thread's CPU
    nanoseconds per call are appended to ``cpu``."""
    gc.collect()
    start_cpu = time.thread_time_ns()
    start = time.perf_counter_ns()
    for i in range(calls):
        op(i)
    wall = (time.perf_counter_ns() - start) / calls
    if cpu is not None:
        cpu.append((time.thread_time_ns() - start_cpu) / calls)
    return wall


def calibrate(ops: dict[str, Op], seconds: float, least: int = 20) -> int:
    """Calls per chunk so that an average contender's chunk lasts about ``seconds``."""
    for op in ops.values():  # warm up: pool connections, compiled-statement cache, imports
        for i in range(10):
            op(i)
    per_call = median([time_chunk(op, 10) for op in ops.values()])
    return max(least, int(seconds * 1e9 / per_call))


def compare(
    ops: dict[str, Op],
    rounds: int,
    seconds: float,
    least: int = 20,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Nanoseconds per call of each contender, one sample per round, contenders alternating;
    CPU nanoseconds of this thread per call go to ``cpu``, by contender."""
    calls = calibrate(ops, seconds, least)
    names = list(ops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        if cpu is not None:
            cpu[name] = []
    for round_index in range(rounds):
        for name in rotated(names, round_index):
            samples[name].append(time_chunk(ops[name], calls, None if cpu is None else cpu[name]))
    return samples


def counted(ops: dict[str, Op], wire: Any) -> dict[str, dict[str, int]]:
    """Python calls and round trips of one call of each contender (tests/test_costs.py)."""
    from tests.test_costs import count_calls

    out = {}
    for name, op in ops.items():
        out[name] = {
            "calls": count_calls(lambda op=op: op(7), warmup=5, samples=3),  # type: ignore[misc]
            "round_trips": wire.measure(lambda op=op: op(7)),  # type: ignore[misc]
        }
    return out


# -- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def backends(skip_postgresql: bool) -> Iterator[list[tuple[str, sa.URL]]]:
    with tempfile.TemporaryDirectory(prefix="flask_uow_bench_") as directory:
        sqlite = sa.make_url("sqlite:///" + os.path.join(directory, "bench.db"))
        if skip_postgresql:
            yield [("SQLite file", sqlite)]
            return
        with scratch_postgresql() as postgresql:
            yield [("SQLite file", sqlite), ("PostgreSQL", postgresql)]


def run(settings: Settings, *, skip_postgresql: bool = False, log: Callable[[str], None]) -> dict:
    from tests.test_costs import wire

    started = time.monotonic()
    say = log
    log = lambda line: say(f"[{time.monotonic() - started:6.1f}s] {line}")  # noqa: E731
    results: dict[str, Any] = {"settings": settings.__dict__, "backends": {}}
    with backends(skip_postgresql) as urls:
        for backend, url in urls:
            log(f"overhead: {backend}")
            with wire() as counter:
                contenders = Contenders(url)
                gc.collect()
                gc.freeze()  # what exists now is never garbage: keep collections short
                try:
                    results["backends"][backend] = _run_backend(contenders, settings, counter, log)
                finally:
                    gc.unfreeze()
                    contenders.close()
    return results


def _run_backend(
    c: Contenders, settings: Settings, counter: Any, log: Callable[[str], None]
) -> dict:
    out: dict[str, Any] = {"units": {}, "peers": {}}
    for group in ("units", "peers"):
        for name in OPERATIONS:
            log(f"  {group}: {name}")
            ops = getattr(c, group)(name)
            cpu: dict[str, list[float]] = {}
            out[group][name] = {
                "samples": compare(
                    ops, settings.rounds, settings.chunk_seconds, settings.min_calls, cpu
                ),
                "cpu": cpu,
                "counts": counted(ops, counter),
            }
            if name == "insert":
                c.reset()

    if not settings.sweep_rounds:
        return out
    log("  nesting")
    depths = (1, 2, 4, 8)
    nesting: dict[str, dict[int, dict[str, list[float]]]] = {}
    for propagation in (Propagation.REQUIRED, Propagation.NESTED):
        ops_by_depth = {d: c.nesting(d, propagation) for d in depths}
        calls = {
            d: calibrate(ops, settings.chunk_seconds, settings.min_calls)
            for d, ops in ops_by_depth.items()
        }
        samples: dict[int, dict[str, list[float]]] = {
            d: {name: [] for name in ops} for d, ops in ops_by_depth.items()
        }
        for round_index in range(settings.sweep_rounds):
            for depth in rotated(depths, round_index):
                for name, op in rotated(list(ops_by_depth[depth].items()), round_index):
                    samples[depth][name].append(time_chunk(op, calls[depth]))
        nesting[propagation.name] = samples
    out["nesting"] = nesting
    return out


# -- the report ------------------------------------------------------------------------------


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f}"


def _reference(samples: dict[str, list[float]]) -> str:
    """The twin sending flask-uow's SQL: bare on the recipe engine on SQLite, else stock."""
    return BARE_SQL if BARE_SQL in samples else BARE


def targets(results: dict) -> list[tuple[str, str, str]]:
    """(backend, target with its measured figure, verdict) for the unit targets."""
    out = []
    for backend, data in results["backends"].items():
        pk = data["units"]["primary-key get"]["samples"]
        ref = _reference(pk)
        interval = ratio_interval(pk[UOW], pk[ref])
        out.append(
            (
                backend,
                f"primary-key unit <= 1.05x {ref}: {fmt_interval(interval)}",
                verdict_at_most(interval, 1.05),
            )
        )
        cpu = data["units"]["primary-key get"].get("cpu")
        if cpu:
            interval = ratio_interval(cpu[UOW], cpu[ref])
            out.append(
                (
                    backend,
                    f"primary-key unit, client CPU time <= 1.05x {ref}: {fmt_interval(interval)}",
                    verdict_at_most(interval, 1.05),
                )
            )
        ro = data["units"]["read-only unit"]["samples"]
        interval = ratio_interval(ro[UOW], ro[UOW_READ_WRITE])
        out.append(
            (
                backend,
                f"flask-uow read-only unit no slower than read-write: {fmt_interval(interval)}",
                verdict_at_most(interval, 1.0),
            )
        )
    return out


def _group_table(group: dict[str, Any], title: str, reference: str) -> str:
    rows = []
    for op, data in group.items():
        samples, counts = data["samples"], data["counts"]
        cpu = data.get("cpu") or {}
        ref = _reference(samples) if reference == "twin" else reference
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
                    "-"
                    if name == ref or name not in cpu
                    else fmt_interval(ratio_interval(cpu[name], cpu[ref])),
                ]
            )
    return markdown_table(
        [
            title,
            "contender",
            "median us per call",
            "Python calls per call",
            "round trips per call",
            "time / reference [95% interval]",
            "client CPU time / reference [95% interval]",
        ],
        rows,
    )


def markdown(results: dict) -> str:
    parts: list[str] = ["What each operation does:", ""]
    parts += [f"- **{op}**: {what}" for op, what in WORK.items()]
    parts += [
        "",
        "*Client CPU time* is the measuring thread's CPU time (`time.thread_time_ns`): the "
        "Python work of a call without the wait for the server. Where both sides send the "
        "same statements it is the library's own cost, and it is far less disturbed by other "
        "work on the machine than wall time.",
        "",
    ]
    for backend, data in results["backends"].items():
        parts.append(f"### {backend}\n")
        ref = BARE_SQL if backend.startswith("SQLite") else BARE
        parts.append(
            f"Units, one pushed app context for the run; reference: **{ref}**"
            + (
                " (pysqlite with SQLAlchemy's documented transaction recipe: the statements "
                "flask-uow sends, and flask-uow's `synchronous = NORMAL`). *bare SQLAlchemy* "
                "on stock pysqlite sends only the SELECT of a read, outside any transaction. "
                "The file is in WAL mode for everyone (the mode is stored in the file); stock "
                "engines keep SQLite's `synchronous = FULL`, a disk flush per commit, which "
                "is most of their insert time."
                if ref == BARE_SQL
                else " on a stock engine."
            )
            + "\n"
        )
        parts.append(_group_table(data["units"], "unit", "twin"))
        parts.append("")
        parts.append(
            "Peers, each call in its own app context (pushed and popped as a request would); "
            "reference: **flask-uow**. Each library on its own stock engine as its docs "
            "configure it (on SQLite the extensions, like stock pysqlite, send a read's SELECT "
            "with no transaction around it: compare the round trips).\n"
        )
        parts.append(_group_table(data["peers"], "operation", UOW))
        parts.append("")
        rows = []
        for propagation, by_depth in data.get("nesting", {}).items():
            base = median(by_depth[1][UOW])
            for depth, samples in sorted(by_depth.items()):
                m = median(samples[UOW])
                rows.append(
                    [
                        f"{propagation}, depth {depth}",
                        _us(median(samples[BARE])),
                        _us(m),
                        fmt_interval(ratio_interval(samples[UOW], samples[BARE])),
                        "-" if depth == 1 else _us((m - base) / (depth - 1)),
                    ]
                )
        parts.append(
            ""
            if not rows
            else markdown_table(
                [
                    "nesting (empty body; us per outermost unit)",
                    "bare (session passed down / begin_nested)",
                    UOW,
                    "flask-uow / bare [95% interval]",
                    "flask-uow us per extra level",
                ],
                rows,
            )
        )
        parts.append("")
    rows = [list(t) for t in targets(results)]
    parts.append("### Targets\n")
    parts.append(markdown_table(["backend", "target: measured [95% interval]", "verdict"], rows))
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
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
