"""How a unit's cost grows with its work (statements, nesting, joined units, hooks, threads),
flask-uow beside bare SQLAlchemy doing the same work (BENCHMARKS.md section 7)."""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_uow import Database, Propagation

from . import _common as c

UOW, BARE = "flask-uow", "bare SQLAlchemy"
STATEMENTS = (1, 10, 100)
DEPTHS = (1, 2, 3, 4, 5)
HOOKS = (0, 1, 10, 100)
THREADS = (1, 2, 4, 8, 16)
THREAD_POOL = {"pool_size": 16, "max_overflow": 0}
PER_STATEMENT_TARGET_US = 0.5
"""Extra CPU time flask-uow may add per statement (a primary-key SELECT costs 50 to 200 us)."""
THREADS_TARGET = 0.95


Settings = namedtuple("Settings", "rounds chunk_seconds thread_rounds thread_seconds")
FULL = Settings(rounds=15, chunk_seconds=0.05, thread_rounds=11, thread_seconds=1.0)
QUICK = Settings(rounds=5, chunk_seconds=0.004, thread_rounds=5, thread_seconds=0.1)

_SELECT = sa.select(c.Item.name).where(c.Item.id == sa.bindparam("k"))


def _hook() -> None:
    pass


def statements(db: Database, engine: sa.Engine, n: int) -> dict[str, c.Op]:
    def uow(i: int) -> None:
        with db.unit_of_work():
            for k in range(n):  # db.session per statement, as applications write it
                db.session.scalar(_SELECT, {"k": (i + k) % c.ROWS + 1})

    def bare(i: int) -> None:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            for k in range(n):
                session.scalar(_SELECT, {"k": (i + k) % c.ROWS + 1})

    return {UOW: uow, BARE: bare}


def nesting(
    db: Database, engine: sa.Engine, depth: int, propagation: Propagation = Propagation.NESTED
) -> dict[str, c.Op]:
    """NESTED: a SAVEPOINT per level on both sides; REQUIRED: flask-uow's inner units join,
    bare SQLAlchemy passes its session down the same calls."""

    def uow_inner(levels: int, i: int) -> None:
        if not levels:
            db.session.scalar(_SELECT, {"k": i % c.ROWS + 1})
            return
        with db.unit_of_work(propagation=propagation):
            uow_inner(levels - 1, i)

    def uow(i: int) -> None:
        with db.unit_of_work():
            uow_inner(depth - 1, i)

    def bare_inner(session: Session, levels: int, i: int) -> None:
        if not levels:
            session.scalar(_SELECT, {"k": i % c.ROWS + 1})
            return
        if propagation is Propagation.REQUIRED:
            bare_inner(session, levels - 1, i)
            return
        with session.begin_nested():
            bare_inner(session, levels - 1, i)

    def bare(i: int) -> None:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            bare_inner(session, depth - 1, i)

    return {UOW: uow, BARE: bare}


def hooks(db: Database, engine: sa.Engine, n: int) -> dict[str, c.Op]:
    def uow(i: int) -> None:
        with db.unit_of_work():
            db.session.scalar(_SELECT, {"k": i % c.ROWS + 1})
            for _ in range(n):
                db.on_commit(_hook)

    def bare(i: int) -> None:
        after: list[Callable[[], None]] = []
        with Session(engine, expire_on_commit=False) as session, session.begin():
            session.scalar(_SELECT, {"k": i % c.ROWS + 1})
            for _ in range(n):
                after.append(_hook)
        for callback in after:
            callback()

    return {UOW: uow, BARE: bare}


SWEEPS: dict[str, tuple[tuple[int, ...], Callable[[Database, sa.Engine, int], dict[str, c.Op]]]] = {
    "statements": (STATEMENTS, statements),
    "nesting": (DEPTHS, nesting),
    "joined": (DEPTHS, lambda db, engine, d: nesting(db, engine, d, Propagation.REQUIRED)),
    "hooks": (HOOKS, hooks),
}


def units_per_second(op: c.Op, threads: int, seconds: float) -> float:
    """Units per second ``threads`` threads complete together running ``op`` for ``seconds``."""
    done = [0] * threads

    def worker(index: int) -> Callable[[threading.Event], None]:
        def loop(stop: threading.Event) -> None:
            n = 0
            while not stop.is_set():
                op(index * 7919 + n)
                n += 1
            done[index] = n

        return loop

    elapsed = c.in_threads(seconds, [worker(t) for t in range(threads)])
    return sum(done) / elapsed


def run(settings: Settings, *, log: Callable[[str], None]) -> Any:
    from tests.counting import wire

    log = c.clocked(log)
    results: dict[str, Any] = {"settings": settings._asdict(), "backends": {}}
    with c.backends() as urls:
        for backend, url in urls:
            out: dict[str, Any] = results["backends"].setdefault(backend, {})
            with wire() as counter:
                is_sqlite = url.get_backend_name() == "sqlite"
                engine = (c.sqlite_recipe(url)[0] if is_sqlite
                          else sa.create_engine(url, pool_size=16))
                c.seed_items(engine)
                db = Database(url.render_as_string(hide_password=False), engine_options=THREAD_POOL)
                try:
                    with c.frozen():
                        for sweep, (points, build) in SWEEPS.items():
                            log(f"growth, {backend}: {sweep}")
                            ops = {p: build(db, engine, p) for p in points}
                            out[sweep] = _sweep(ops, settings)
                            for p, pair in ops.items():
                                out[sweep][p]["counts"] = c.counted(c.seventh(pair), counter)
                        if not is_sqlite:
                            log(f"growth, {backend}: threads")
                            out["threads"] = _threads(db, engine, settings)
                finally:
                    db.dispose()
                    engine.dispose()
    return results


def _rounds(points: Any, rounds: int, measure: Callable[[Any, str], float]) -> Any:
    """{point: {contender: [one measure(point, contender) per round]}}, points and contenders
    each going first in turn."""
    out: dict[Any, dict[str, list[float]]] = {p: {UOW: [], BARE: []} for p in points}
    for round_index in range(rounds):
        for p in c.rotated(list(points), round_index):
            for name in c.rotated([UOW, BARE], round_index):
                out[p][name].append(measure(p, name))
    return out


def _sweep(ops: dict[int, dict[str, c.Op]], settings: Settings) -> dict[int, dict[str, Any]]:
    """{point: {"samples": wall ns per unit, "cpu": this thread's CPU ns per unit}}."""
    calls = {p: c.calibrate(pair, settings.chunk_seconds, 5) for p, pair in ops.items()}
    cpu: dict[int, dict[str, list[float]]] = {p: {UOW: [], BARE: []} for p in ops}
    samples = _rounds(ops, settings.rounds,
                      lambda p, name: c.time_chunk(ops[p][name], calls[p], cpu[p][name]))
    return {p: {"samples": samples[p], "cpu": cpu[p]} for p in ops}


def _threads(db: Database, engine: sa.Engine, settings: Settings) -> dict[int, dict[str, Any]]:
    pair = statements(db, engine, 1)
    for op in pair.values():
        units_per_second(op, 16, 0.2)  # fill both pools
    return _rounds(THREADS, settings.thread_rounds,
                   lambda t, name: units_per_second(pair[name], t, settings.thread_seconds))


# -- the report ------------------------------------------------------------------------------
def _extra_us(point: dict[str, Any]) -> list[float]:
    """flask-uow's extra CPU time per unit over bare's, round by round, in us."""
    return [(u - b) / 1000 for u, b in zip(point["cpu"][UOW], point["cpu"][BARE], strict=True)]


def slope(sweep: dict[int, dict[str, Any]]) -> tuple[float, float, float]:
    """flask-uow's extra CPU time per step of the sweep (per statement, level or hook), in us:
    per round, (extra at the last point - extra at the first) / (last - first)."""
    first, last = min(sweep), max(sweep)
    extras = zip(_extra_us(sweep[first]), _extra_us(sweep[last]), strict=True)
    return c.bootstrap([(x1 - x0) / (last - first) for x0, x1 in extras])


def _counted_slope(sweep: dict[int, dict[str, Any]]) -> float:
    first, last = min(sweep), max(sweep)
    extra = {p: sweep[p]["counts"][UOW]["calls"] - sweep[p]["counts"][BARE]["calls"]
             for p in (first, last)}
    return (extra[last] - extra[first]) / (last - first)


TITLES = {  # sweep: (the first column's title, one step)
    "statements": ("statements in the unit", "statement"),
    "nesting": ("levels (outermost + NESTED units)", "level"),
    "joined": ("levels (outermost + joined REQUIRED units)", "joined level"),
    "hooks": ("on_commit hooks", "hook"),
}


def _sweep_table(sweep: dict[int, dict[str, Any]], title: str) -> str:
    rows = []
    for p, point in sorted(sweep.items()):
        s, cpu, n = point["samples"], point["cpu"], point["counts"]
        bare, uow = n[BARE]["calls"], n[UOW]["calls"]
        rows.append([p, f"{c.median(cpu[BARE]) / 1000:.1f}", f"{c.median(cpu[UOW]) / 1000:.1f}",
                     c.fmt_interval(c.bootstrap(_extra_us(point)), " us", 1),
                     c.ratio(cpu[UOW], cpu[BARE]), c.ratio(s[UOW], s[BARE]),
                     f"{bare} / {uow} ({uow - bare:+d})",
                     f"{n[BARE]['round_trips']} / {n[UOW]['round_trips']}"])
    return c.markdown_table([
        title, "bare CPU us per unit", "flask-uow CPU us per unit",
        "flask-uow extra CPU us [95% interval]", "flask-uow / bare, CPU [95% interval]",
        "flask-uow / bare, wall time [95% interval]", "Python calls bare / flask-uow (extra)",
        "round trips bare / flask-uow",
    ], rows)


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for backend, data in results["backends"].items():
        if "statements" in data:
            out.append(c.target(f"growth, {backend}", f"extra CPU time per statement <= "
                                f"{PER_STATEMENT_TARGET_US} us", slope(data["statements"]),
                                PER_STATEMENT_TARGET_US, unit=" us"))
        out += [c.target(f"growth, {backend}, {t} thread(s)", "units/s within 5% of bare",
                         c.ratio_interval(pair[UOW], pair[BARE]), THREADS_TARGET, at_least=True)
                for t, pair in sorted(data.get("threads", {}).items())]
    return out


def markdown(results: dict[str, Any]) -> str:
    def body(data: dict[str, Any]) -> list[str]:
        parts = []
        for sweep, (title, step) in ((k, v) for k, v in TITLES.items() if k in data):
            parts += [_sweep_table(data[sweep], title),
                      f"\nflask-uow's extra CPU time per {step}: "
                      f"{c.fmt_interval(slope(data[sweep]), ' us')}; extra Python calls per {step} "
                      f"(counted): {_counted_slope(data[sweep]):+.2f}.\n"]
        rows = [[t, f"{c.median(p[BARE]):.0f}", f"{c.median(p[UOW]):.0f}", c.ratio(p[UOW], p[BARE])]
                for t, p in sorted(data.get("threads", {}).items())]
        headers = ["threads on one pool of 16", "bare units/s", "flask-uow units/s",
                   "flask-uow / bare [95% interval]"]
        return parts + [c.markdown_table(headers, rows) + "\n"] * bool(rows)

    return c.report(results, body, "Growth targets", targets(results))


if __name__ == "__main__":
    c.cli(__doc__, run, markdown, FULL, QUICK)
