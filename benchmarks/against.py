"""What a unit costs in this tree against another git revision, with nothing enabled.

Both run in one process (the other revision's ``src/flask_uow`` as ``flask_uow_base``), on one
SQLite file, in alternating chunks of the thread's CPU time: an empty unit, and a read-only
unit running ``SELECT 1``. **base, again** (a second Database of the other revision) shows
the noise floor.

    python -m benchmarks.against b9db5bd [--rounds 41]
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from flask_uow import Database

from . import _common as c


def database_of_revision(revision: str) -> Any:
    """The ``Database`` class of ``src/flask_uow`` at ``revision``, as package flask_uow_base."""
    archive = subprocess.run(
        ["git", "-C", c.ROOT, "archive", revision, "src/flask_uow"], capture_output=True, check=True
    ).stdout
    folder = tempfile.mkdtemp(prefix="flask_uow_base_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    # flask-uow imports itself only relatively, so it runs under another package name.
    os.rename(os.path.join(folder, "src", "flask_uow"), os.path.join(folder, "flask_uow_base"))
    sys.path.insert(0, folder)
    return importlib.import_module("flask_uow_base").Database


def operations(db: Any) -> dict[str, Callable[[int], None]]:
    def empty(i: int) -> None:
        with db.unit_of_work():
            pass

    def select_one(i: int) -> None:
        with db.unit_of_work(read_only=True):
            db.session.execute(sa.text("SELECT 1"))

    return {"empty unit": empty, "read-only unit, SELECT 1": select_one}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args(argv)
    base_class = database_of_revision(args.revision)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        url = "sqlite:///" + os.path.join(folder, "against.db")
        databases = {"base": base_class(url), "base, again": base_class(url),
                     "this tree": Database(url)}
        for operation in operations(databases["this tree"]):
            cpu: dict[str, list[float]] = {}
            ops = {name: operations(db)[operation] for name, db in databases.items()}
            c.compare(ops, args.rounds, 0.02, 200, cpu)
            base = [ns / 1000 for ns in cpu["base"]]
            for name in ("base, again", "this tree"):
                pairs = [(ns / 1000, b) for ns, b in zip(cpu[name], base, strict=True)]
                rows.append([operation, name, f"{statistics.median(base):.2f}",
                             f"{statistics.median(v for v, _ in pairs):.2f}",
                             f"{statistics.median(v - b for v, b in pairs):+.2f}",
                             f"{statistics.median(v / b for v, b in pairs):.3f}x"])
        for db in databases.values():
            db.dispose()
    headers = ["operation", "contender", f"base {args.revision} CPU us", "contender CPU us"]
    print(c.markdown_table([*headers, "paired extra us", "paired ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
