"""Compare the hot paths of flask-uow at two git revisions, side by side on one machine.

    python benchmarks/compare_revisions.py OLD_REV [NEW_REV] [--rounds 9] [--url sqlite]

Each revision's ``src/`` is exported to a temporary folder (``git archive``); rounds
alternate between the two, each in a fresh interpreter, and every scenario reports the
median of the per-round ratios NEW/OLD with its spread (min..max). Both sides run the same
scenarios on the same database: an empty unit, a primary-key read in a read-write unit, the
same in a read-only unit, and an insert.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCENARIO_RUNNER = r"""
import json, sys, time
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from flask_uow import Database

class Base(DeclarativeBase):
    pass

class Row(Base):
    __tablename__ = "bench_row"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))

url, loops = sys.argv[1], int(sys.argv[2])
db = Database(url, metadata=Base.metadata)
db.drop_all()
db.create_all()
with db.unit_of_work():
    db.session.add(Row(id=1, name="one"))

def empty():
    with db.unit_of_work():
        pass

def get():
    with db.unit_of_work():
        db.session.get(Row, 1)

def get_read_only():
    with db.unit_of_work(read_only=True):
        db.session.get(Row, 1)

counter = iter(range(2, 10**9))
def insert():
    with db.unit_of_work():
        db.session.add(Row(id=next(counter), name="x"))

results = {}
for name, func in [("empty", empty), ("get", get), ("get_read_only", get_read_only),
                   ("insert", insert)]:
    for _ in range(loops // 10):
        func()
    start = time.perf_counter()
    for _ in range(loops):
        func()
    results[name] = (time.perf_counter() - start) / loops * 1e6
db.drop_all()
db.dispose()
print(json.dumps(results))
"""


def export(revision: str, into: Path) -> Path:
    """Write ``src/`` of ``revision`` into ``into`` and return the folder to put on sys.path."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", revision, "src"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_once(src: Path, url: str, loops: int) -> dict[str, float]:
    environment = {**os.environ, "PYTHONPATH": str(src)}
    output = subprocess.run(
        [sys.executable, "-c", SCENARIO_RUNNER, url, str(loops)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--loops", type=int, default=3000)
    parser.add_argument("--url", default="sqlite", help="a database URL, or 'sqlite'")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sides = {}
        for label, revision in (("old", options.old), ("new", options.new)):
            (Path(folder) / label).mkdir()
            sides[label] = export(revision, Path(folder) / label)
        url = options.url
        if url == "sqlite":
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
        ratios: dict[str, list[float]] = {}
        timings: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
        for number in range(options.rounds):
            order = ("old", "new") if number % 2 == 0 else ("new", "old")
            round_results = {label: run_once(sides[label], url, options.loops) for label in order}
            for scenario, new_time in round_results["new"].items():
                old_time = round_results["old"][scenario]
                ratios.setdefault(scenario, []).append(new_time / old_time)
                timings["old"].setdefault(scenario, []).append(old_time)
                timings["new"].setdefault(scenario, []).append(new_time)
    print(f"{options.old} -> {options.new} on {options.url}, {options.rounds} rounds")
    print(f"{'scenario':<15} {'old us':>8} {'new us':>8} {'new/old':>8}  spread")
    for scenario, values in ratios.items():
        old_median = statistics.median(timings["old"][scenario])
        new_median = statistics.median(timings["new"][scenario])
        print(
            f"{scenario:<15} {old_median:8.1f} {new_median:8.1f} "
            f"{statistics.median(values):8.3f}  {min(values):.3f}..{max(values):.3f}"
        )


if __name__ == "__main__":
    main()
