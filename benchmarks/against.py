"""What a unit costs in this tree against another git revision, with nothing enabled.

Both versions run in one process (the other revision's ``src/flask_uow`` imported as
``flask_uow_base``), on one SQLite file, in alternating chunks: an empty unit, and a
read-only unit running ``SELECT 1``. CPU time of the thread (``time.thread_time_ns``), so
that a busy machine's waits do not count. **base, again** is a second Database of the other
revision: its difference from **base** is the noise floor.

    python -m benchmarks.against b8bfd60 [--rounds 41]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from flask_uow import Database

from ._common import markdown_table
from .observability import database_of_revision

Op = Callable[[], None]


def operations(db: Any) -> dict[str, tuple[Op, int]]:
    def empty() -> None:
        with db.unit_of_work():
            pass

    def select_one() -> None:
        with db.unit_of_work(read_only=True):
            db.session.execute(sa.text("SELECT 1"))

    return {"empty unit": (empty, 5000), "read-only unit, SELECT 1": (select_one, 500)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args(argv)
    base_class = database_of_revision(args.revision)
    with tempfile.TemporaryDirectory() as folder:
        url = "sqlite:///" + os.path.join(folder, "against.db")
        databases = {
            "base": base_class(url),
            "base, again": base_class(url),
            "this tree": Database(url),
        }
        rows = []
        for operation in operations(databases["this tree"]):
            ops = {name: operations(db)[operation] for name, db in databases.items()}
            samples: dict[str, list[float]] = {name: [] for name in ops}
            for op, _ in ops.values():
                for _ in range(200):
                    op()
            for round_index in range(args.rounds):
                names = list(ops)
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    op, calls = ops[name]
                    gc.collect()
                    start = time.thread_time_ns()
                    for _ in range(calls):
                        op()
                    samples[name].append((time.thread_time_ns() - start) / calls / 1000)
            base = samples["base"]
            for name in ("base, again", "this tree"):
                values = samples[name]
                extra = statistics.median(v - b for v, b in zip(values, base, strict=True))
                ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
                rows.append(
                    [
                        operation,
                        name,
                        f"{statistics.median(base):.2f}",
                        f"{statistics.median(values):.2f}",
                        f"{extra:+.2f}",
                        f"{ratio:.3f}x",
                    ]
                )
        for db in databases.values():
            db.dispose()
    print(
        markdown_table(
            [
                "operation",
                "contender",
                f"base {args.revision} CPU us",
                "contender CPU us",
                "paired extra us",
                "paired ratio",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
