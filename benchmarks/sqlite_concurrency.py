"""SQLite under concurrency: 8 threads of read units while one thread writes, rollback journal
against WAL, on flask-uow's engine (BENCHMARKS.md section 2)."""

from __future__ import annotations

import os
import random
import tempfile
import threading
from collections import Counter, namedtuple
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_uow._engines import EngineVariants, create_engine

from . import _common as c

READERS = 8
Settings = namedtuple("Settings", "rounds seconds")
FULL = Settings(rounds=7, seconds=3.0)
QUICK = Settings(rounds=5, seconds=0.3)

JOURNAL, WAL, READ_ONLY = "rollback journal", "WAL", "read-only units"
IMMEDIATE = "read-write units (BEGIN IMMEDIATE)"
DEFERRED = "read-write units, deferred BEGIN"
CONFIGS = [(JOURNAL, READ_ONLY), (WAL, READ_ONLY), (JOURNAL, IMMEDIATE), (WAL, IMMEDIATE),
           (WAL, DEFERRED)]


def prepare(directory: str, journal: str) -> EngineVariants:
    path = os.path.join(directory, f"{journal.replace(' ', '_')}.db")
    engine = create_engine(
        f"sqlite:///{path}", {"pool_size": READERS + 2}, sqlite_wal=journal == WAL
    )
    c.seed_items(engine)
    return EngineVariants(engine)


def mix(variants: EngineVariants, readers: str, seconds: float) -> dict[str, float]:
    """Read units per second (all readers), write units per second, and errors."""
    binds = {READ_ONLY: variants.for_unit(read_only=True, isolation_level=None),
             IMMEDIATE: variants.for_unit(read_only=False, isolation_level=None),
             DEFERRED: variants.engine}  # the stock path: a deferred BEGIN
    read_bind, write_bind = binds[readers], binds[IMMEDIATE]
    counts, lock = Counter[str](), threading.Lock()

    def looping(work: Callable[[random.Random], None], key: str, seed: int) -> Any:
        rng = random.Random(seed)

        def loop(stop: threading.Event) -> None:
            done = Counter[str]()
            while not stop.is_set():
                try:
                    work(rng)
                    done[key] += 1
                except sa.exc.OperationalError:
                    done["errors"] += 1
            with lock:
                counts.update(done)

        return loop

    def read(rng: random.Random) -> None:
        with Session(read_bind, expire_on_commit=False) as session, session.begin():
            session.get(c.Item, rng.randint(1, c.ROWS))

    def write(rng: random.Random) -> None:
        with Session(write_bind, expire_on_commit=False) as session, session.begin():
            row = session.get(c.Item, rng.randint(1, c.ROWS))
            assert row is not None
            row.name = f"written {rng.random():.6f}"

    loops = [looping(read, "reads", i) for i in range(READERS)]
    elapsed = c.in_threads(seconds, [*loops, looping(write, "writes", 99)])
    return {"reads_per_s": counts["reads"] / elapsed, "writes_per_s": counts["writes"] / elapsed,
            "errors": counts["errors"]}


def run(settings: Settings, *, log: Callable[[str], None]) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {f"{j}, {r}": [] for j, r in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="flask_uow_bench_sqlite_") as directory:
        variants = {journal: prepare(directory, journal) for journal in (JOURNAL, WAL)}
        for round_index in range(settings.rounds):
            log(f"sqlite concurrency: round {round_index + 1} of {settings.rounds}")
            for journal, readers in c.rotated(CONFIGS, round_index):
                outcome = mix(variants[journal], readers, settings.seconds)
                samples[f"{journal}, {readers}"].append(outcome)
        for v in variants.values():
            v.engine.dispose()
    return {"settings": settings._asdict(), "samples": samples}


def _series(results: dict[str, Any], config: str, key: str) -> list[float]:
    return [o[key] for o in results["samples"][config]]


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 12's target (WAL reads >= 3x the rollback journal's) and issue 22's (on WAL,
    read-only units read at least as fast as default, read-write units)."""
    def reads(config: str) -> list[float]:
        return _series(results, config, "reads_per_s")

    return [
        c.target("SQLite file", "8 read-only units while writing, WAL / rollback journal >= 3x",
                 c.ratio_interval(reads(f"{WAL}, {READ_ONLY}"), reads(f"{JOURNAL}, {READ_ONLY}")),
                 3.0, at_least=True),
        c.target("SQLite file", "WAL, 8 readers while writing, read-only units / default "
                 "(read-write) units >= 1.0x",
                 c.ratio_interval(reads(f"{WAL}, {READ_ONLY}"), reads(f"{WAL}, {IMMEDIATE}")),
                 1.0, at_least=True),
    ]


def markdown(results: dict[str, Any]) -> str:
    base = f"{JOURNAL}, {READ_ONLY}"
    reads, writes = ({config: _series(results, config, key) for config in results["samples"]}
                     for key in ("reads_per_s", "writes_per_s"))
    rows = [[config, f"{c.median(reads[config]):.0f}", f"{c.median(writes[config]):.0f}",
             c.ratio(reads[config], reads[base]), c.ratio(writes[config], writes[base]),
             int(sum(_series(results, config, "errors")))] for config in results["samples"]]
    table = c.markdown_table(["journal, readers in", "read units/s (8 threads)",
                              "write units/s (1 thread)", f"reads / {base} [95% interval]",
                              "writes / same", "errors"], rows)
    verdicts = "\n".join(f"- {what}: {verdict}" for _, what, verdict in targets(results))
    return f"{table}\n\nTargets:\n\n{verdicts}\n"


if __name__ == "__main__":
    c.cli(__doc__, run, markdown, FULL, QUICK)
