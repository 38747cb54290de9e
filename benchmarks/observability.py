"""What watching units costs per unit: idle warning, OpenTelemetry with and without an SDK.

Every contender is its own ``Database`` on the same database, doing the same read-only unit
(one primary-key ``session.get`` and one small ``SELECT``; read-only so that no disk write
adds noise), in the same rounds: round by round
the contenders take turns, each going first in turn, and each round times a chunk of
units. What is compared is the CPU time of the benchmark's thread (``time.thread_time_ns``):
the cost a contender adds is Python work in that thread, and CPU time does not count the
time a busy machine keeps the process waiting for a core (wall time does, and is shown
too). The table gives the median per unit, and for each contender the median over rounds
of (contender - off) and of contender / off, both of the same round. **off, again** is a
second Database with nothing registered: its difference from **off** is the noise floor.

Contenders:

- **off**: nothing registered (what every unit pays today); **off, again**: the same;
- **idle warning**: ``Database(warn_idle_ms=100)``, statement listeners on;
- **otel, API only**: ``flask_uow.otel.instrument(db)`` with no SDK configured (the API's
  no-op tracer and meter), as in an app that ships the extra but exports nothing;
- **otel, SDK to memory**: an SDK ``TracerProvider`` with a ``SimpleSpanProcessor`` into an
  in-memory exporter (cleared each chunk) and a ``MeterProvider`` with an in-memory reader;
- **lock_timeout**: each unit with ``lock_timeout=5`` (PostgreSQL: one more statement);
- with ``--against REV``, **base REV**: the flask-uow of git revision REV (``src/flask_uow``
  of that commit, imported in this process as ``flask_uow_base``), nothing registered: what
  **off** costs against the code before this work, side by side in the same rounds.

    python -m benchmarks.observability [--quick] [--postgresql] [--against b8bfd60]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import flask_uow.otel
from flask_uow import Database

from ._common import ROOT, markdown_table, rotated, scratch_postgresql

Op = Callable[[int], None]
ROWS = 100


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bench_observed"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def unit_op(db: Database, **options: object) -> Op:
    def run(i: int) -> None:
        with db.unit_of_work(read_only=True, **options):  # type: ignore[arg-type]
            db.session.get(Row, i % ROWS + 1)
            db.session.execute(sa.select(Row.name).where(Row.id == 1)).all()
            db.session.expunge_all()

    return run


def database_of_revision(revision: str) -> Any:
    """The ``Database`` class of ``src/flask_uow`` at ``revision``, as package flask_uow_base."""
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", revision, "src/flask_uow"],
        capture_output=True,
        check=True,
    ).stdout
    folder = tempfile.mkdtemp(prefix="flask_uow_base_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    # flask-uow imports itself only relatively, so it runs under another package name.
    os.rename(os.path.join(folder, "src", "flask_uow"), os.path.join(folder, "flask_uow_base"))
    sys.path.insert(0, folder)
    return importlib.import_module("flask_uow_base").Database


@contextlib.contextmanager
def contenders(
    url: str, against: str | None = None
) -> Iterator[tuple[dict[str, Op], list[Callable[[], None]]]]:
    setup = Database(url, metadata=Base.metadata)
    setup.drop_all()
    setup.create_all()
    with setup.unit_of_work():
        setup.session.add_all([Row(name=f"row {i}") for i in range(ROWS)])
    databases: dict[str, Database] = {
        "off": Database(url),
        "off, again": Database(url),
        "idle warning": Database(url, warn_idle_ms=100),
        "otel, API only": Database(url),
        "otel, SDK to memory": Database(url),
        "lock_timeout": Database(url),
    }
    flask_uow.otel.instrument(databases["otel, API only"])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    flask_uow.otel.instrument(
        databases["otel, SDK to memory"],
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    if against is not None:
        databases[f"base {against}"] = database_of_revision(against)(url)
    ops = {name: unit_op(db) for name, db in databases.items() if name != "lock_timeout"}
    ops["lock_timeout"] = unit_op(databases["lock_timeout"], lock_timeout=5)
    try:
        yield ops, [exporter.clear]
    finally:
        meter_provider.shutdown()
        tracer_provider.shutdown()
        for db in databases.values():
            db.dispose()
        setup.drop_all()
        setup.dispose()


def time_chunk(op: Op, calls: int) -> tuple[float, float]:
    """CPU and wall nanoseconds per call of ``op`` over ``calls`` calls."""
    gc.collect()
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for i in range(calls):
        op(i)
    return (time.thread_time_ns() - cpu) / calls, (time.perf_counter_ns() - wall) / calls


Samples = dict[str, list[tuple[float, float]]]


def compare(
    ops: dict[str, Op], cleanups: list[Callable[[], None]], rounds: int, calls: int
) -> Samples:
    for op in ops.values():
        for i in range(50):
            op(i)
    names = list(ops)
    samples: Samples = {name: [] for name in names}
    for round_index in range(rounds):
        for name in rotated(names, round_index):
            samples[name].append(time_chunk(ops[name], calls))
            for cleanup in cleanups:
                cleanup()
    return samples


def report(backend: str, samples: Samples, rounds: int, calls: int) -> str:
    off_cpu = [cpu for cpu, _ in samples["off"]]
    off_wall = [wall for _, wall in samples["off"]]
    rows = []
    for name, pairs in samples.items():
        cpu = [c for c, _ in pairs]
        wall = [w for _, w in pairs]
        extra = statistics.median(v - o for v, o in zip(cpu, off_cpu, strict=True))
        ratio = statistics.median(v / o for v, o in zip(cpu, off_cpu, strict=True))
        wall_ratio = statistics.median(v / o for v, o in zip(wall, off_wall, strict=True))
        quartiles = statistics.quantiles(cpu, n=4)
        first = name == "off"
        rows.append(
            [
                name,
                f"{statistics.median(cpu) / 1000:.1f}",
                f"{(quartiles[2] - quartiles[0]) / 1000:.1f}",
                "-" if first else f"{extra / 1000:+.1f}",
                "-" if first else f"{ratio:.3f}x",
                f"{statistics.median(wall) / 1000:.1f}",
                "-" if first else f"{wall_ratio:.3f}x",
            ]
        )
    title = f"{backend}: {rounds} rounds of {calls} units each (2 statements per unit)"
    table = markdown_table(
        [
            "contender",
            "CPU us per unit",
            "IQR",
            "paired extra CPU us vs off",
            "paired CPU ratio",
            "wall us per unit",
            "paired wall ratio",
        ],
        rows,
    )
    return f"### {title}\n\n{table}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument(
        "--postgresql", action="store_true", help="also on a scratch PostgreSQL database"
    )
    parser.add_argument(
        "--against", metavar="REV", help="also the flask-uow of this git revision, nothing on"
    )
    args = parser.parse_args(argv)
    rounds, calls = (5, 100) if args.quick else (31, 300)
    out = []
    with tempfile.TemporaryDirectory() as folder:
        url = "sqlite:///" + os.path.join(folder, "bench.db")
        with contenders(url, args.against) as (ops, cleanups):
            out.append(report("SQLite file", compare(ops, cleanups, rounds, calls), rounds, calls))
    if args.postgresql:
        with scratch_postgresql() as pg_url, contenders(
            pg_url.render_as_string(hide_password=False), args.against
        ) as (ops, cleanups):
            out.append(report("PostgreSQL", compare(ops, cleanups, rounds, calls), rounds, calls))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
