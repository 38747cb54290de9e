"""What every benchmark shares: scratch databases, round-robin timing, statistics, the machine."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from importlib import metadata
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import String
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.peer_apps.settings import sqlite_transactions

T = TypeVar("T")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSTGRESQL_URL = os.environ.get("BENCH_POSTGRESQL_URL",
                                "postgresql+psycopg://postgres@127.0.0.1:5432/test")
"""A server where the benchmarks may create and drop scratch databases (superuser or CREATEDB)."""


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` rotated by ``round_index``: each contender goes first in turn, round by round."""
    shift = round_index % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


BOOTSTRAP_RESAMPLES, MIN_ROUNDS = 2000, 5  # fewer rounds give no interval, so no verdict


def bootstrap(values: Sequence[float], *, seed: int = 12) -> tuple[float, float, float]:
    """The median of ``values`` (one per paired round) and its bootstrap 95% interval: the
    middle 95% of the medians of resamples drawn with replacement."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    if len(values) < MIN_ROUNDS:
        return statistics.median(values), float("nan"), float("nan")
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP_RESAMPLES)
    )
    low = medians[int(0.025 * (BOOTSTRAP_RESAMPLES - 1))]
    high = medians[int(0.975 * (BOOTSTRAP_RESAMPLES - 1))]
    return statistics.median(values), low, high


def ratio_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """The paired ratio (median over rounds of ``a[i] / b[i]``) and its bootstrap interval."""
    return bootstrap([x / y for x, y in zip(a, b, strict=True) if y])


def ratio(a: Any, b: Any, interval: Callable[..., Any] = ratio_interval) -> str:
    """The paired ratio of ``a`` to ``b`` with its interval, as a table shows it (``interval``
    computes it), or ``-`` for a contender against itself."""
    return "-" if a is b else fmt_interval(interval(a, b))


def fmt_interval(value: tuple[float, float, float], unit: str = "x", digits: int = 2) -> str:
    """``1.03x [0.99, 1.07]`` (or ``+0.41 us [0.12, 0.80]`` with ``unit=" us"``)."""
    middle, low, high = value
    sign = "+" if unit != "x" else ""
    if math.isnan(middle):
        return "n/a"
    if math.isnan(low):
        return f"{middle:{sign}.{digits}f}{unit} [too few rounds]"
    return f"{middle:{sign}.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}]"


MET, MISSED, TIE = "met", "**missed**", "tie within noise"
NO_VERDICT = f"no verdict (fewer than {MIN_ROUNDS} rounds)"


def verdict(
    interval: tuple[float, float, float],
    target: float,
    at_least: bool = False,
    ceiling: float | None = None,
) -> str:
    """Met when the whole interval is on the right side of ``target`` (at or below it, or with
    ``at_least`` at or above it), missed when it is wholly on the wrong side, else a tie. With
    ``ceiling`` (an "at most" target), met instead when the median is at most ``target`` and
    the interval's high end at most ``ceiling``."""
    middle, low, high = interval
    if math.isnan(low):
        return NO_VERDICT
    if ceiling is not None and middle <= target and high <= ceiling:
        return MET
    if ceiling is None and ((low >= target) if at_least else (high <= target)):
        return MET
    if (high < target) if at_least else (low > target):
        return MISSED
    return TIE


def target(
    where: str, what: str, interval: tuple[float, float, float], limit: float, **how: Any
) -> tuple[str, str, str]:
    """A row of a targets table: (where, the target with its measured figure, verdict);
    ``how`` takes ``at_least``, ``ceiling`` and ``unit`` (``" us"``, default ``"x"``)."""
    unit = how.pop("unit", "x")
    return where, f"{what}: {fmt_interval(interval, unit)}", verdict(interval, limit, **how)


def counted_target(where: str, what: str, ours: int, reference: int, percent: float) -> tuple[
    str, str, str
]:
    """A row for a counted target (no noise, so met or missed): ``ours`` at most
    ``reference`` plus ``percent`` %."""
    extra = 100 * (ours - reference) / reference
    return (where, f"{what}: {ours} against {reference} ({extra:+.1f}%)",
            MET if extra <= percent else MISSED)


def targets_table(rows: Sequence[Sequence[object]], where: str = "where") -> str:
    return markdown_table([where, "target: measured [95% interval]", "verdict"], rows)


# -- a quiet machine ------------------------------------------------------------------------
LOAD_FACTOR = 1.5
"""BENCHMARKS.md is written only if the 1-minute load average stayed under this x usable cores."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def too_busy(loads: Sequence[tuple[float, float, float]]) -> str | None:
    """Why the machine was too busy for publishable numbers, or None if it was quiet enough."""
    limit, worst = LOAD_FACTOR * usable_cores(), max(load[0] for load in loads)
    if worst <= limit:
        return None
    return (f"the 1-minute load average reached {worst:.2f}, above {limit:.1f} "
            f"({LOAD_FACTOR} x {usable_cores()} usable cores)")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; the first column is left-aligned, the rest right."""
    align = ["---", *["---:"] * (len(headers) - 1)]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def grouped_table(headers: Sequence[str], groups: Any, cells: Callable[..., list[object]]) -> str:
    """A row per (group, contender), the group named on its first row only: ``groups`` yields
    (group, contenders, figures), ``cells(figures, contender)`` gives a row's other cells."""
    return markdown_table(headers, [[group if i == 0 else "", name, *cells(figures, name)]
                                    for group, names, figures in groups
                                    for i, name in enumerate(names)])


def report(results: dict[str, Any], body: Callable[[Any], list[str]], title: str,
           rows: Sequence[Sequence[object]], where: str = "where", prefix: str = "") -> str:
    """``body(data)`` under ``### backend`` for every backend it has tables for, then the
    targets table under ``### title``; empty without tables."""
    parts = [part for backend, data in results["backends"].items() if (tables := body(data))
             for part in (f"### {prefix}{backend}\n", *tables)]
    return "\n".join([*parts, f"### {title}\n", targets_table(rows, where)]) + "\n" if parts else ""


# -- timing ---------------------------------------------------------------------------------
Op = Callable[[int], object]  # one call of a contender: takes the call's index, does one unit


def time_chunk(op: Op, calls: int, cpu: list[float] | None = None) -> float:
    """Wall-clock ns per call of ``op`` over ``calls`` calls; the thread's CPU ns go to ``cpu``."""
    gc.collect()
    start_cpu, start = time.thread_time_ns(), time.perf_counter_ns()
    for i in range(calls):
        op(i)
    wall = (time.perf_counter_ns() - start) / calls
    if cpu is not None:
        cpu.append((time.thread_time_ns() - start_cpu) / calls)
    return wall


Chunk = Callable[..., float]  # time_chunk or its like: (op, calls, cpu list or None) -> ns


def calibrate(ops: dict[str, Any], seconds: float, least: int = 20, chunk: Chunk = time_chunk
              ) -> int:
    """Calls per chunk so that an average contender's chunk lasts about ``seconds``."""
    for op in ops.values():  # warm up: pool connections, compiled-statement cache, imports
        chunk(op, 10)
    per_call = median([chunk(op, 10) for op in ops.values()])
    return max(least, int(seconds * 1e9 / per_call))


def compare(ops: dict[str, Any], rounds: int, seconds: float, least: int, cpu: Any,
            chunk: Chunk = time_chunk) -> Any:
    """Nanoseconds per call of each contender, one sample per round, contenders alternating;
    CPU nanoseconds of this thread per call go to ``cpu``, by contender."""
    calls = calibrate(ops, seconds, least, chunk)
    samples: dict[str, list[float]] = {name: [] for name in ops}
    cpu.update({name: [] for name in ops})
    for round_index in range(rounds):
        for name in rotated(list(ops), round_index):
            samples[name].append(chunk(ops[name], calls, cpu[name]))
    return samples


def in_threads(seconds: float, loops: Sequence[Callable[[threading.Event], None]]) -> float:
    """Each loop in its own thread, all let go at once, until ``seconds`` have passed (then the
    event each is given is set); the seconds from the start to the last join."""
    stop, start = threading.Event(), threading.Barrier(len(loops) + 1)

    def run(loop: Callable[[threading.Event], None]) -> None:
        start.wait()
        loop(stop)

    threads = [threading.Thread(target=run, args=(loop,)) for loop in loops]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)  # the measured stretch
    stop.set()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def counted(ops: dict[str, Callable[[], object]], wire: Any, warmup: int = 5, samples: int = 3
            ) -> dict[str, dict[str, int]]:
    """Python calls and round trips of one call of each operation (tests/counting.py)."""
    from tests.counting import count_calls

    return {name: {"calls": count_calls(op, warmup=warmup, samples=samples),
                   "round_trips": wire.measure(op)} for name, op in ops.items()}


async def acounted(ops: dict[str, Callable[[], Awaitable[object]]], wire: Any, warmup: int = 5,
                   samples: int = 5) -> dict[str, dict[str, int]]:
    """:func:`counted` for async operations, awaited on the running loop."""
    from tests.counting import count_calls_async

    out = {}
    for name, op in ops.items():  # not a comprehension: its frame would count on resumption
        out[name] = {"calls": await count_calls_async(op, warmup=warmup, samples=samples),
                     "round_trips": await wire.measure_async(op)}
    return out


def seventh(ops: dict[str, Any]) -> dict[str, Any]:
    """Each op as one call with index 7: what :func:`counted` counts of a timed op."""
    return {name: lambda op=op: op(7) for name, op in ops.items()}


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """What exists now is never garbage: keep the collections in the block short."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def clocked(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` with the seconds since now in front of every line."""
    started = time.monotonic()
    return lambda line: log(f"[{time.monotonic() - started:6.1f}s] {line}")


# -- the table every unit benchmark reads ---------------------------------------------------
ROWS = 1000  # rows seeded for primary-key reads; call i reads row i % ROWS + 1


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


POOL = {"pool_size": 10, "max_overflow": 0}  # every contender's pool


def same_sql_listeners(engine: sa.Engine) -> None:
    """SQLite's transaction recipe with flask-uow's WAL ``synchronous``: the SQL flask-uow sends."""
    sqlite_transactions(engine, "synchronous = NORMAL")


def sqlite_recipe(url: sa.URL) -> tuple[sa.Engine, sa.Engine]:
    """(BEGIN IMMEDIATE engine, BEGIN engine) on one pool, with :func:`same_sql_listeners`."""
    engine = sa.create_engine(url, **POOL)
    same_sql_listeners(engine)
    return engine.execution_options(bench_write_lock=True), engine


def seed_items(engine: sa.Engine) -> None:
    """The table, emptied, with ids 1..ROWS from its own sequence."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Item), [{"name": f"item {i}"} for i in range(ROWS)])


@contextlib.contextmanager
def backends(skip_sqlite: bool = False) -> Iterator[list[tuple[str, URL]]]:
    """A SQLite file (unless skipped) and a scratch PostgreSQL database on ``POSTGRESQL_URL``,
    made and dropped by :func:`flask_uow.testing.scratch_database`."""
    from flask_uow.testing import scratch_database

    base = sa.make_url(POSTGRESQL_URL)
    if base.host not in ("127.0.0.1", "localhost", None):
        raise SystemExit(f"benchmarks only run against a server on 127.0.0.1, not {base.host!r}; "
                         "set BENCH_POSTGRESQL_URL to a local server")  # it creates databases
    with contextlib.ExitStack() as stack:
        urls = [] if skip_sqlite else [
            ("SQLite file", stack.enter_context(scratch_database("sqlite:///bench.db", "bench")))]
        try:
            name = f"flask_uow_bench_{uuid.uuid4().hex[:10]}"
            urls.append(("PostgreSQL", stack.enter_context(scratch_database(base, name))))
        except sa.exc.OperationalError as error:
            raise SystemExit(
                f"cannot create a scratch database on {base.render_as_string()}: {error.orig}\n"
                "Start PostgreSQL on 127.0.0.1:5432 or set BENCH_POSTGRESQL_URL."
            ) from None
        yield urls


# -- the machine and the command line ----------------------------------------------------
def _output(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip() if done.returncode == 0 else ""


def postgresql_version(url: URL | str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    except sa.exc.SQLAlchemyError:
        return "unreachable"
    finally:
        engine.dispose()


def source_revision() -> str:
    """The commit measured, and whether src/ or examples/ had uncommitted changes."""
    commit = _output("git", "-C", ROOT, "rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = _output("git", "-C", ROOT, "status", "--porcelain", "--", "src", "examples/ledger")
    return commit + (" + uncommitted changes in src/ or the ledger" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import sqlite3

    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    cpu = re.search(r"model name\s*:\s*(.*)", info)
    wrk = _output("wrk", "--version") if shutil.which("wrk") else ""
    about: dict[str, Any] = {
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "usable cores": usable_cores(),
        "load average (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
    }
    for name in ("SQLAlchemy", "Flask", "Flask-SQLAlchemy", "Flask-SQLAlchemy-Lite",
                 "advanced-alchemy", "flask-uow", "psycopg", "gunicorn", "Quart", "Hypercorn",
                 "aiosqlite"):
        try:
            about[name.lower()] = metadata.version(name)
        except metadata.PackageNotFoundError:
            about[name.lower()] = "not installed"
        if name == "flask-uow":
            about["flask-uow revision"] = source_revision()
    about["sqlite"] = sqlite3.sqlite_version
    about["postgresql"] = postgresql_version(POSTGRESQL_URL)
    about["wrk"] = wrk.splitlines()[0].split(" Copyright")[0] if wrk else "not installed"
    return about


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cli(doc: str | None, run: Callable[..., Any], markdown: Callable[[Any], str], full: Any,
        quick: Any) -> None:
    """The command line every benchmark program shares: ``python -m benchmarks.<name>
    [--quick] [--rounds N] [--json FILE]``, the tables in Markdown on stdout."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter chunks")
    parser.add_argument("--rounds", type=int, help="paired rounds per row")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    settings = quick if args.quick else full
    results = run(settings._replace(rounds=args.rounds or settings.rounds), log=log)
    print(markdown(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1, default=str)
