"""What every benchmark shares: scratch databases, round-robin timing, statistics, the machine."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL

T = TypeVar("T")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The repository root (the benchmarks run from here, so ``benchmarks`` is importable)."""

POSTGRESQL_URL = os.environ.get(
    "BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""A server where the benchmarks may create and drop scratch databases (superuser or CREATEDB)."""


def rotated(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` rotated by ``round_index``: each contender goes first in turn, round by round."""
    if not items:
        return []
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median over rounds of ``a[i] / b[i]``: each round's pair ran side by side, so slow
    stretches of a busy machine hit both sides of a pair alike."""
    return median([x / y for x, y in zip(a, b, strict=True) if y])


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


BOOTSTRAP_RESAMPLES = 2000
MIN_ROUNDS = 5
"""Fewest paired rounds that give an interval (and so a verdict) at all."""


def ratio_interval(
    a: Sequence[float], b: Sequence[float], *, seed: int = 12
) -> tuple[float, float, float]:
    """The paired ratio (median over rounds of ``a[i] / b[i]``) and its bootstrap 95% interval.

    The rounds' ratios are resampled with replacement; the interval holds the middle 95% of
    the resampled medians. Few rounds give a wide interval, which is the honest answer.
    """
    ratios = [x / y for x, y in zip(a, b, strict=True) if y]
    if not ratios:
        return float("nan"), float("nan"), float("nan")
    if len(ratios) < MIN_ROUNDS:
        return statistics.median(ratios), float("nan"), float("nan")
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(BOOTSTRAP_RESAMPLES)
    )
    low = medians[int(0.025 * (BOOTSTRAP_RESAMPLES - 1))]
    high = medians[int(0.975 * (BOOTSTRAP_RESAMPLES - 1))]
    return statistics.median(ratios), low, high


def fmt_interval(value: tuple[float, float, float]) -> str:
    """``1.03x [0.99, 1.07]``."""
    middle, low, high = value
    if math.isnan(middle):
        return "n/a"
    if math.isnan(low):
        return f"{middle:.2f}x [too few rounds]"
    return f"{middle:.2f}x [{low:.2f}, {high:.2f}]"


MET, MISSED, TIE = "met", "**missed**", "tie within noise"
NO_VERDICT = f"no verdict (fewer than {MIN_ROUNDS} rounds)"


def verdict_at_most(interval: tuple[float, float, float], target: float) -> str:
    """A ratio that should be at most ``target``: met when the whole interval is at or below
    it, missed when the whole interval is above it, otherwise a tie within noise."""
    _, low, high = interval
    if math.isnan(low):
        return NO_VERDICT
    if high <= target:
        return MET
    if low > target:
        return MISSED
    return TIE


def verdict_at_least(interval: tuple[float, float, float], target: float) -> str:
    """A ratio that should be at least ``target`` (a throughput ratio, say)."""
    _, low, high = interval
    if math.isnan(low):
        return NO_VERDICT
    if low >= target:
        return MET
    if high < target:
        return MISSED
    return TIE


# -- a quiet machine ------------------------------------------------------------------------

LOAD_FACTOR = 1.5
"""BENCHMARKS.md is written only if the 1-minute load average stayed under this many times the
number of usable cores, before and after the run (``--force`` writes it anyway)."""


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def too_busy(loads: Sequence[tuple[float, float, float]]) -> str | None:
    """Why the machine was too busy for publishable numbers, or None if it was quiet enough."""
    limit = LOAD_FACTOR * usable_cores()
    worst = max(load[0] for load in loads)
    if worst > limit:
        return (
            f"the 1-minute load average reached {worst:.2f}, above {limit:.1f} "
            f"({LOAD_FACTOR} x {usable_cores()} usable cores)"
        )
    return None


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; the first column is left-aligned, the rest right."""
    align = ["---", *["---:"] * (len(headers) - 1)]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- scratch databases ----------------------------------------------------------------------


def _admin_engine(url: URL) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def check_local(url: URL) -> None:
    """Refuse any server but this machine's: the benchmarks create and drop databases."""
    if url.host not in ("127.0.0.1", "localhost", None):
        raise SystemExit(
            f"benchmarks only run against a server on 127.0.0.1, not {url.host!r}; set "
            "BENCH_POSTGRESQL_URL to a local server"
        )


@contextlib.contextmanager
def scratch_postgresql(prefix: str = "flask_uow_bench") -> Iterator[URL]:
    """Create a database of our own on the PostgreSQL server, yield its URL, drop it after."""
    base = sa.make_url(POSTGRESQL_URL)
    check_local(base)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine(base)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as error:
        raise SystemExit(
            f"cannot create a scratch database on {base.render_as_string()}: {error.orig}\n"
            "Start PostgreSQL on 127.0.0.1:5432 or set BENCH_POSTGRESQL_URL."
        ) from None
    try:
        yield base.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# -- the machine ----------------------------------------------------------------------------


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def postgresql_version(url: URL | str) -> str:
    engine = _admin_engine(sa.make_url(url))
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    except sa.exc.SQLAlchemyError:
        return "unreachable"
    finally:
        engine.dispose()


def wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "not installed"
    result = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def source_revision() -> str:
    """The commit measured, and whether src/ or examples/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", ROOT, *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "src", "examples/ledger/ledger")
    return commit + (" + uncommitted changes in src/ or the ledger" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import sqlite3

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load average (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlalchemy": _version("SQLAlchemy"),
        "flask": _version("Flask"),
        "flask-sqlalchemy": _version("Flask-SQLAlchemy"),
        "flask-sqlalchemy-lite": _version("Flask-SQLAlchemy-Lite"),
        "advanced-alchemy": _version("advanced-alchemy"),
        "flask-uow": _version("flask-uow"),
        "flask-uow revision": source_revision(),
        "psycopg": _version("psycopg"),
        "gunicorn": _version("gunicorn"),
        "quart": _version("Quart"),
        "hypercorn": _version("Hypercorn"),
        "aiosqlite": _version("aiosqlite"),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgresql_version(POSTGRESQL_URL),
        "wrk": wrk_version(),
    }
