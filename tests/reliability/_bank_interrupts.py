"""Transfers of the async bank test whose COMMIT a real loop shutdown or a real SIGINT hits.

Each episode runs in a process of its own (``python -m tests.reliability._bank_interrupts``),
whose main thread runs ``asyncio.run()``, so that the SIGINT is a real one, handled as
asyncio handles it, and the shutdown is the real one of ``asyncio.run()``:

- ``shutdown``: ``main()`` starts the transfers in tasks and returns once a COMMIT has reached
  the database; ``asyncio.run()`` then cancels every task left, the one awaiting COMMIT's
  answer included;
- ``sigint``: ``main()`` awaits the transfers; a SIGINT arrives once a COMMIT has reached the
  database; asyncio cancels ``main()``, raises KeyboardInterrupt and cancels every task left.

COMMIT's answer is held back meanwhile: by a proxy in front of the server, or on SQLite by a
``commit`` listener that commits and then awaits. The episode reads the ops from stdin as
JSON and writes what happened to each (its units' outcomes and hooks, what its caller saw)
to stdout as JSON. ``run_episode()`` is the parent's side.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.util import await_only

from flask_uow import Database, UnitState

from .._interrupt import (
    HOLD_SECONDS,
    after_sqlite_commit,
    holding_proxy,
    sigint_main_thread,
)

ROOT = Path(__file__).resolve().parents[2]
MODES = ("shutdown", "sigint")


@dataclass(frozen=True, slots=True)
class Interrupted:
    """What happened to one transfer of an episode."""

    op: dict[str, Any]
    """The ``Op``'s fields."""
    outcomes: list[str | None]
    """The outcome of each attempt's outermost unit, in order."""
    hooks: list[list[str]]
    """The hooks each of those units ran."""
    ended: bool
    """Every unit ended."""
    raised: str | None
    result: str | None
    wrote: bool


async def _episode(bank: Any, ops: list[Any], mode: str, reached: threading.Event) -> None:
    tasks = [asyncio.get_running_loop().create_task(bank.run(op)) for op in ops]
    if mode == "shutdown":
        while not reached.is_set() and not all(task.done() for task in tasks):
            await asyncio.sleep(0.005)
        return  # asyncio.run() cancels every task left, the one awaiting COMMIT included
    await asyncio.gather(*tasks)  # a SIGINT cancels this; asyncio.run() then the others


def main() -> None:
    """The episode's process: ops in (stdin), what happened out (stdout)."""
    from .test_bank_async import Bank, Op

    spec = json.load(sys.stdin)
    mode: str = spec["mode"]
    ops = [Op(**fields) for fields in spec["ops"]]
    reached = threading.Event()
    with _commit_held(spec["url"], spec["backend"], reached, mode) as (url, prepare, release):
        db = Database(url, engine_options=spec["engine_options"])
        prepare(db)
        bank = Bank(db, spec["levels"], spec["lock_timeout"])
        try:
            asyncio.run(_episode(bank, ops, mode, reached))
        except KeyboardInterrupt:
            assert mode == "sigint"
        release()
        asyncio.run(db.dispose_async())
        db.dispose()
    results = [
        Interrupted(
            op=asdict(run.op),
            outcomes=[unit.outcome.value if unit.outcome else None for unit in run.units],
            hooks=[bank.hooks.get(unit, []) for unit in run.units],
            ended=all(unit.state is UnitState.ENDED for unit in run.units),
            raised=run.raised,
            result=run.result,
            wrote=run.wrote,
        )
        for run in bank.runs  # the ops that started (all of them, unless shut down first)
    ]
    json.dump({"reached": reached.is_set(), "runs": [asdict(r) for r in results]}, sys.stdout)


@contextmanager
def _commit_held(url: str, backend: str, reached: threading.Event, mode: str) -> Iterator[Any]:
    """The URL to use, a ``prepare(db)`` and a ``release()``: COMMIT's answers are held back
    from when the episode starts until ``release()``; ``reached`` is set once one COMMIT
    landed, and in ``sigint`` mode a SIGINT goes to the main thread then."""

    def landed() -> None:
        if not reached.is_set():
            reached.set()
            if mode == "sigint":
                sigint_main_thread()

    if backend == "sqlite":

        def wait() -> None:
            landed()
            await_only(asyncio.sleep(HOLD_SECONDS))

        with_listener: list[Any] = []

        def prepare(db: Database) -> None:
            listener = after_sqlite_commit(db.async_engine.sync_engine, wait)
            listener.__enter__()
            with_listener.append(listener)

        def release() -> None:
            for listener in with_listener:
                listener.__exit__(None, None, None)

        yield url, prepare, release
        return
    with holding_proxy(url) as (proxied, proxy):
        proxy.holding = True

        def watch() -> None:
            if proxy.commit_sent.wait(HOLD_SECONDS):
                landed()
                # psycopg answers a cancellation by waiting for the statement's answer: let
                # it come once the loop has stopped (no outcome depends on this delay; it
                # only spares the wait for HOLD_SECONDS).
                time.sleep(0.5)
                proxy.release()

        threading.Thread(target=watch, daemon=True).start()
        yield proxied, lambda db: None, proxy.release


async def run_episode(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one episode in a process of its own (``spec``: mode, ops, url, ...); its report."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.reliability._bank_interrupts",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate(json.dumps(spec).encode())
    assert process.returncode == 0, stderr.decode(errors="replace")[-4000:]
    report: dict[str, Any] = json.loads(stdout)
    return report


if __name__ == "__main__":
    main()
