"""What a unit of work costs per call, side by side with bare SQLAlchemy and Flask-SQLAlchemy.

Every contender uses one engine (one pool) on each backend, runs inside the same Flask app
context, and runs in the same rounds: round by round the contenders take turns, each going
first in turn, and each round times many calls with ``time.perf_counter_ns``. Tables give the
median over rounds and ratios of medians; absolute numbers only mean something next to them.

    python -m benchmarks.overhead [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import flask_uow
from flask_uow import Database, Propagation
from flask_uow._engines import WRITE_LOCK_OPTION, EngineVariants

from ._common import (
    fmt_ratio,
    markdown_table,
    median,
    paired_ratio,
    ratio,
    rotated,
    scratch_postgresql,
)

PACKAGE_DIR = os.path.dirname(os.path.abspath(flask_uow.__file__))
ROWS = 1000
"""Rows seeded for primary-key reads; call ``i`` reads row ``i % ROWS + 1``."""

BARE = "bare SQLAlchemy"
UOW = "flask-uow"
UOW_PLAIN = "flask-uow, no Flask app"
FSQLA = "Flask-SQLAlchemy"
BARE_READ_ONLY = "bare SQLAlchemy, postgresql_readonly=True"
BARE_IMMEDIATE = "bare SQLAlchemy, BEGIN IMMEDIATE"
UOW_READ_ONLY = "flask-uow read_only=True"
READ_ONLY_GET = "primary-key get, read_only=True unit"
ORDER = (BARE, BARE_IMMEDIATE, BARE_READ_ONLY, UOW, UOW_PLAIN, UOW_READ_ONLY, FSQLA)
"""Column order of the tables."""

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
    """Rounds for the three basic operations."""
    sweep_rounds: int
    """Rounds for each point of the nesting, thread and hook sweeps."""
    chunk_seconds: float
    """About how long one contender's timed chunk of calls lasts in one round."""
    profile_units: int


FULL = Settings(rounds=41, sweep_rounds=21, chunk_seconds=0.08, profile_units=3000)
QUICK = Settings(rounds=7, sweep_rounds=3, chunk_seconds=0.012, profile_units=200)


# -- the contenders ------------------------------------------------------------------------


class Contenders:
    """One Flask app and one engine, used by bare SQLAlchemy, flask-uow and Flask-SQLAlchemy.

    The engine is flask-uow's (it carries flask-uow's per-dialect event listeners, so bare
    SQLAlchemy and Flask-SQLAlchemy pay for them too, and only the unit itself is compared).
    Flask-SQLAlchemy's own engine is swapped for it, and a second flask-uow ``Database``
    without a Flask app shares it as well.
    """

    def __init__(self, url: sa.URL) -> None:
        rendered = url.render_as_string(hide_password=False)
        self.app = app = Flask(__name__)
        app.config.update(
            UOW_DATABASE_URL=rendered,
            UOW_ENGINE_OPTIONS={"pool_size": 10, "max_overflow": 0},
            SQLALCHEMY_DATABASE_URI=rendered,
        )
        self.uow = Database(metadata=Base.metadata)
        self.uow.init_app(app)
        self.fsqla = SQLAlchemy(metadata=Base.metadata)
        self.fsqla.init_app(app)
        self._context = app.app_context()
        self._context.push()
        self.engine = self.uow.engine
        own = self.fsqla.engines[None]
        self.fsqla._app_engines[app][None] = self.engine  # one pool for everyone
        own.dispose()
        self.plain = Database(url)
        self.plain._default = EngineVariants(self.engine)
        Base.metadata.drop_all(self.engine)
        Base.metadata.create_all(self.engine)
        with self.engine.begin() as conn:  # ids 1..ROWS from the table's own sequence
            conn.execute(sa.insert(Item), [{"name": f"item {i}"} for i in range(ROWS)])

    def reset(self) -> None:
        """Back to the seeded ROWS rows (the insert benchmark adds some)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(Item).where(Item.id > ROWS))

    def close(self) -> None:
        self._context.pop()
        self.engine.dispose()

    # Operations: each takes the call's index and does one unit (or cycle) of work.

    def basic(self) -> dict[str, dict[str, Op]]:
        """The three operations of the issue, plus a read-only unit, per contender."""
        engine, uow, plain, fsqla = self.engine, self.uow, self.plain, self.fsqla

        def bare(body: Callable[[Session, int], object], bind: sa.Engine = engine) -> Op:
            def run(i: int) -> None:
                with Session(bind) as session, session.begin():
                    body(session, i)

            return run

        def unit(db: Database, body: Callable[[Session, int], object], **options: Any) -> Op:
            def run(i: int) -> None:
                with db.unit_of_work(**options):
                    body(db.session, i)

            return run

        def cycle(body: Callable[[Session, int], object]) -> Op:
            def run(i: int) -> None:
                body(fsqla.session, i)
                fsqla.session.commit()
                fsqla.session.remove()

            return run

        def nothing(session: Session, i: int) -> None:
            pass

        def get(session: Session, i: int) -> None:
            session.get(Item, i % ROWS + 1)

        def insert(session: Session, i: int) -> None:
            session.add(Item(name="inserted"))

        def empty_unit(db: Database) -> Op:
            def run(i: int) -> None:
                with db.unit_of_work():
                    pass

            return run

        operations: dict[str, dict[str, Op]] = {}
        for name, body in (("empty unit", nothing), ("primary-key get", get), ("insert", insert)):
            operations[name] = {
                BARE: bare(body),
                UOW: empty_unit(uow) if body is nothing else unit(uow, body),
                UOW_PLAIN: empty_unit(plain) if body is nothing else unit(plain, body),
                FSQLA: cycle(body),
            }
            if engine.dialect.name == "sqlite" and body is not nothing:
                # flask-uow begins read-write units on SQLite with BEGIN IMMEDIATE (the write
                # lock up front); this twin does the same by hand, to tell the library's own
                # cost from that of its locking policy.
                immediate = engine.execution_options(**{WRITE_LOCK_OPTION: True})
                operations[name][BARE_IMMEDIATE] = bare(body, immediate)
        read_only = {
            BARE: bare(get),
            UOW: unit(uow, get, read_only=True),
            UOW_PLAIN: unit(plain, get, read_only=True),
        }
        if engine.dialect.name == "postgresql":
            # What a read-only transaction costs done by hand: psycopg sends BEGIN READ ONLY.
            read_only_engine = engine.execution_options(postgresql_readonly=True)

            def bare_read_only(i: int) -> None:
                with Session(read_only_engine) as session, session.begin():
                    get(session, i)

            read_only[BARE_READ_ONLY] = bare_read_only
        operations[READ_ONLY_GET] = read_only
        return operations

    def nesting(self, depth: int, propagation: Propagation) -> dict[str, Op]:
        """An outermost unit with ``depth - 1`` units inside, each in its own function call.

        Bare SQLAlchemy's twin passes its session down the same calls (joined) or opens a
        ``begin_nested()`` SAVEPOINT in each (NESTED).
        """
        engine, db = self.engine, self.uow
        savepoints = propagation is Propagation.NESTED

        def bare_inner(session: Session, levels: int) -> None:
            if levels:
                if savepoints:
                    with session.begin_nested():
                        bare_inner(session, levels - 1)
                else:
                    bare_inner(session, levels - 1)

        def bare(i: int) -> None:
            with Session(engine) as session, session.begin():
                bare_inner(session, depth - 1)

        def uow_inner(levels: int) -> None:
            if levels:
                with db.unit_of_work(propagation=propagation):
                    uow_inner(levels - 1)

        def uow(i: int) -> None:
            with db.unit_of_work():
                uow_inner(depth - 1)

        return {BARE: bare, UOW: uow}

    def hooks(self, count: int) -> dict[str, Op]:
        """An empty unit registering ``count`` on_commit callbacks, and the same by hand."""
        engine, db = self.engine, self.uow

        def callback() -> None:
            pass

        def bare(i: int) -> None:
            after_commit: list[Callable[[], object]] = []
            with Session(engine) as session, session.begin():
                for _ in range(count):
                    after_commit.append(callback)
            for hook in after_commit:
                hook()

        def uow(i: int) -> None:
            with db.unit_of_work() as unit:
                for _ in range(count):
                    unit.on_commit(callback)

        return {BARE: bare, UOW: uow}


# -- timing ----------------------------------------------------------------------------------


def time_chunk(op: Op, calls: int) -> float:
    """Nanoseconds per call of ``op`` over ``calls`` calls."""
    gc.collect()
    start = time.perf_counter_ns()
    for i in range(calls):
        op(i)
    return (time.perf_counter_ns() - start) / calls


def calibrate(ops: dict[str, Op], seconds: float) -> int:
    """Calls per chunk so that an average contender's chunk lasts about ``seconds``."""
    for op in ops.values():  # warm up: pool connections, compiled-statement cache, imports
        for i in range(10):
            op(i)
    per_call = median([time_chunk(op, 20) for op in ops.values()])
    return max(20, int(seconds * 1e9 / per_call))


def compare(ops: dict[str, Op], rounds: int, seconds: float) -> dict[str, list[float]]:
    """Nanoseconds per call of each contender, one sample per round, contenders alternating."""
    calls = calibrate(ops, seconds)
    names = list(ops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in rotated(names, round_index):
            samples[name].append(time_chunk(ops[name], calls))
    return samples


def time_threaded(app: Flask, op: Op, threads: int, calls: int) -> float:
    """Wall-clock nanoseconds per call with ``threads`` threads each making ``calls`` calls."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        with app.app_context():
            barrier.wait()
            for i in range(calls):
                op(i)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    gc.collect()
    barrier.wait()
    start = time.perf_counter_ns()
    for worker in workers:
        worker.join()
    return (time.perf_counter_ns() - start) / (threads * calls)


def compare_threaded(
    app: Flask, ops: dict[str, Op], thread_counts: tuple[int, ...], rounds: int, seconds: float
) -> dict[int, dict[str, list[float]]]:
    calls = calibrate(ops, seconds)
    names = list(ops)
    samples = {t: {name: [] for name in names} for t in thread_counts}
    for round_index in range(rounds):
        for threads in thread_counts:
            for name in rotated(names, round_index):
                per_thread = max(10, calls // threads)
                samples[threads][name].append(time_threaded(app, ops[name], threads, per_thread))
    return samples


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Intercept, slope and R² of the least-squares line through the points."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return intercept, slope, 1 - residual / total if total else 1.0


def profile_share(op: Op, calls: int) -> dict[str, Any]:
    """Run ``op`` under cProfile; how much of the time is flask-uow's own code (self time)."""
    for i in range(100):
        op(i)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        op(i)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    own = [
        (tt, f"{os.path.basename(file)}:{line} {name}", calls_)
        for (file, line, name), (_, calls_, tt, _, _) in entries.items()
        if file.startswith(PACKAGE_DIR)
    ]
    own_total = sum(tt for tt, _, _ in own)
    top = sorted(own, reverse=True)[:8]
    function_calls = sum(n for (_, n, _, _, _) in entries.values())
    return {
        "function_calls_per_unit": function_calls / calls,
        "share": own_total / total if total else 0.0,
        "total_seconds": total,
        "top": [
            {"function": where, "calls_per_unit": n / calls, "share": tt / total}
            for tt, where, n in top
        ],
    }


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


def _summary(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: median(values) for name, values in samples.items()}


def run(settings: Settings, *, skip_postgresql: bool = False, log: Callable[[str], None]) -> dict:
    started = time.monotonic()
    say = log
    log = lambda line: say(f"[{time.monotonic() - started:6.1f}s] {line}")  # noqa: E731
    results: dict[str, Any] = {"settings": settings.__dict__, "backends": {}}
    with backends(skip_postgresql) as urls:
        for backend, url in urls:
            log(f"overhead: {backend}")
            contenders = Contenders(url)
            try:
                results["backends"][backend] = _run_backend(contenders, settings, log)
            finally:
                contenders.close()
    return results


def _run_backend(c: Contenders, settings: Settings, log: Callable[[str], None]) -> dict:
    out: dict[str, Any] = {}
    basic = {}
    for name, ops in c.basic().items():
        log(f"  {name}")
        basic[name] = compare(ops, settings.rounds, settings.chunk_seconds)
        if name == "insert":
            c.reset()
    out["basic"] = basic

    depths = (1, 2, 4, 8)
    nesting: dict[str, dict[int, dict[str, list[float]]]] = {}
    for propagation in (Propagation.REQUIRED, Propagation.NESTED):
        log(f"  nesting, {propagation.name}")
        nesting[propagation.name] = {}
        ops_by_depth = {d: c.nesting(d, propagation) for d in depths}
        calls = {d: calibrate(ops, settings.chunk_seconds) for d, ops in ops_by_depth.items()}
        samples = {d: {name: [] for name in ops} for d, ops in ops_by_depth.items()}
        for round_index in range(settings.sweep_rounds):  # depths and contenders interleaved
            for depth in rotated(depths, round_index):
                for name, op in rotated(list(ops_by_depth[depth].items()), round_index):
                    samples[depth][name].append(time_chunk(op, calls[depth]))
        nesting[propagation.name] = samples
    out["nesting"] = nesting

    log("  threads")
    out["threads"] = compare_threaded(
        c.app,
        {
            **{k: v for k, v in c.basic()["primary-key get"].items() if k != UOW_PLAIN},
            UOW_READ_ONLY: c.basic()[READ_ONLY_GET][UOW],
        },
        (1, 2, 4, 8),
        settings.sweep_rounds,
        settings.chunk_seconds,
    )

    log("  hooks")
    counts = (0, 1, 10, 100)
    hook_ops = {k: c.hooks(k) for k in counts}
    calls_h = {k: calibrate(ops, settings.chunk_seconds) for k, ops in hook_ops.items()}
    hook_samples = {k: {name: [] for name in ops} for k, ops in hook_ops.items()}
    for round_index in range(settings.sweep_rounds):
        for k in rotated(counts, round_index):
            for name, op in rotated(list(hook_ops[k].items()), round_index):
                hook_samples[k][name].append(time_chunk(op, calls_h[k]))
    out["hooks"] = hook_samples

    log("  profile")
    basic_ops = c.basic()
    out["profile"] = {
        f"{name}, {contender}": profile_share(basic_ops[name][contender], settings.profile_units)
        for name in ("empty unit", "primary-key get", READ_ONLY_GET)
        for contender in (BARE, UOW, FSQLA, BARE_READ_ONLY)
        if contender in basic_ops[name]
    }
    return out


# -- the report ------------------------------------------------------------------------------


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f}"


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """(backend, what, met) for each of issue #2's targets."""
    verdicts = []
    for backend, data in results["backends"].items():
        basic = {op: _summary(s) for op, s in data["basic"].items()}
        empty = basic["empty unit"]
        pk_samples = data["basic"]["primary-key get"]
        r_bare = paired_ratio(pk_samples[UOW], pk_samples[BARE])
        r_fsqla = paired_ratio(pk_samples[UOW], pk_samples[FSQLA])
        verdicts.append(
            (backend, f"primary-key unit <= 1.05x bare SQLAlchemy ({r_bare:.3f}x)", r_bare <= 1.05)
        )
        verdicts.append(
            (
                backend,
                f"primary-key unit faster than Flask-SQLAlchemy ({r_fsqla:.3f}x)",
                r_fsqla < 1,
            )
        )
        verdicts.append(
            (
                backend,
                f"empty unit under 5 us (Flask app: {_us(empty[UOW])} us, "
                f"no app: {_us(empty[UOW_PLAIN])} us)",
                empty[UOW] < 5000,
            )
        )
        levels = _per_level(data["nesting"]["REQUIRED"])
        flat = levels[8] <= 1.25 * levels[2] + 100  # 0.1 us of slack for timer noise
        verdicts.append(
            (
                backend,
                f"joined-unit cost flat in depth ({_us(levels[2])} us per level at depth 2, "
                f"{_us(levels[8])} us at depth 8)",
                flat,
            )
        )
        threads = data["threads"]
        one = paired_ratio(threads[1][UOW], threads[1][BARE])
        eight = paired_ratio(threads[8][UOW], threads[8][BARE])
        verdicts.append(
            (
                backend,
                f"per-unit cost flat in threads (vs bare: {one:.2f}x at 1 thread, "
                f"{eight:.2f}x at 8)",
                eight <= one * 1.10,
            )
        )
        _, slope, r2 = _hook_fit(data["hooks"], UOW)
        verdicts.append((backend, f"linear in hooks (R^2 = {r2:.4f})", r2 >= 0.99))
    return verdicts


def _per_level(samples: dict[int, dict[str, list[float]]]) -> dict[int, float]:
    """flask-uow's extra nanoseconds per level beyond the outermost unit, by depth."""
    base = median(samples[1][UOW])
    return {d: (median(s[UOW]) - base) / (d - 1) for d, s in samples.items() if d > 1}


def _hook_fit(samples: dict[int, dict[str, list[float]]], name: str) -> tuple[float, float, float]:
    counts = sorted(samples)
    return linear_fit([float(k) for k in counts], [median(samples[k][name]) for k in counts])


def comparison_table(title: str, rows: dict[str, dict[str, list[float]]]) -> str:
    """Medians of every contender present, then flask-uow's paired ratio to each peer."""
    names = [n for n in ORDER if any(n in samples for samples in rows.values())]
    peers = [n for n in names if n not in (UOW, UOW_PLAIN, UOW_READ_ONLY)]
    table = []
    for label, samples in rows.items():
        cells: list[str] = [label]
        cells += [_us(median(samples[n])) if n in samples else "-" for n in names]
        cells += [
            fmt_ratio(paired_ratio(samples[UOW], samples[p])) if p in samples else "-"
            for p in peers
        ]
        table.append(cells)
    headers = [title, *names, *(f"flask-uow / {p}" for p in peers)]
    return markdown_table(headers, table)


def markdown(results: dict) -> str:
    parts: list[str] = []
    for backend, data in results["backends"].items():
        parts.append(f"### {backend}\n")
        basic = {op: v for op, v in data["basic"].items() if op != READ_ONLY_GET}
        parts.append(comparison_table("operation (median us per call)", basic))
        parts.append("")

        rows = []
        for propagation, by_depth in data["nesting"].items():
            for depth, samples in sorted(by_depth.items()):
                m = _summary(samples)
                base = median(by_depth[1][UOW])
                per_level = "-" if depth == 1 else _us((m[UOW] - base) / (depth - 1))
                rows.append(
                    [
                        f"{propagation}, depth {depth}",
                        _us(m[BARE]),
                        _us(m[UOW]),
                        fmt_ratio(paired_ratio(samples[UOW], samples[BARE])),
                        per_level,
                    ]
                )
        parts.append(
            markdown_table(
                [
                    "nesting (empty body; median us per outermost unit)",
                    "bare (session passed down / begin_nested)",
                    UOW,
                    "flask-uow / bare",
                    "flask-uow us per extra level",
                ],
                rows,
            )
        )
        parts.append("")

        threads = {
            f"{n} thread{'s' if n > 1 else ''}": v for n, v in sorted(data["threads"].items())
        }
        parts.append(comparison_table("primary-key unit in threads (wall us per unit)", threads))
        parts.append("")

        rows = []
        for k, samples in sorted(data["hooks"].items()):
            m = _summary(samples)
            rows.append(
                [
                    f"{k} on_commit hooks",
                    _us(m[BARE]),
                    _us(m[UOW]),
                    fmt_ratio(paired_ratio(samples[UOW], samples[BARE])),
                ]
            )
        _, uow_slope, uow_r2 = _hook_fit(data["hooks"], UOW)
        _, bare_slope, bare_r2 = _hook_fit(data["hooks"], BARE)
        rows.append(
            [
                "slope: us per hook (R^2)",
                f"{_us(bare_slope)} ({bare_r2:.4f})",
                f"{_us(uow_slope)} ({uow_r2:.4f})",
                fmt_ratio(ratio(uow_slope, bare_slope)),
            ]
        )
        parts.append(
            markdown_table(
                [
                    "empty unit + hooks (median us per unit)",
                    "bare + list of callbacks run by hand",
                    UOW,
                    "flask-uow / bare",
                ],
                rows,
            )
        )
        parts.append("")

        samples = data["basic"][READ_ONLY_GET]
        m = _summary(samples)
        has_pg = BARE_READ_ONLY in m
        rows = [
            [
                "primary-key get",
                _us(m[BARE]),
                _us(m[BARE_READ_ONLY]) if has_pg else "-",
                _us(m[UOW]),
                _us(m[UOW_PLAIN]),
                fmt_ratio(paired_ratio(samples[UOW], samples[BARE])),
                fmt_ratio(paired_ratio(samples[UOW], samples[BARE_READ_ONLY])) if has_pg else "-",
            ]
        ]
        parts.append(
            markdown_table(
                [
                    "read-only unit (median us per call)",
                    "bare SQLAlchemy (read-write)",
                    "bare, postgresql_readonly=True",
                    f"{UOW} read_only=True",
                    f"{UOW_PLAIN} read_only=True",
                    "flask-uow / bare",
                    "flask-uow / bare read-only",
                ],
                rows,
            )
        )
        parts.append("")

        samples = data["basic"]["primary-key get"]
        extra = paired_ratio(samples[UOW], samples[BARE]) - 1
        rows = []
        for what, prof in data["profile"].items():
            top = ", ".join(f"`{t['function']}` {t['share']:.1%}" for t in prof["top"][:3])
            share = f"{prof['share']:.1%}" if UOW in what.split(", ")[-1:] else "-"
            rows.append([what, f"{prof['function_calls_per_unit']:.0f}", share, top or "-"])
        parts.append(
            markdown_table(
                [
                    "cProfile, per unit",
                    "Python function calls",
                    "self time in flask_uow",
                    "largest flask_uow functions",
                ],
                rows,
            )
        )
        parts.append(
            f"\nTimed rather than profiled, a primary-key unit of flask-uow takes {extra:+.1%} "
            "against bare SQLAlchemy doing the same work (cProfile inflates pure-Python code, "
            "so its share is an upper bound; function calls are exact and noise-free).\n"
        )

    rows = [
        (backend, what, "met" if met else "**missed**") for backend, what, met in targets(results)
    ]
    parts.append("### Targets (issue #2)\n")
    parts.append(markdown_table(["backend", "target (measured)", "verdict"], rows))
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
