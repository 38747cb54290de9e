"""Run every benchmark, then write BENCHMARKS.md and the plots (``make bench``).

    python benchmarks/run_all.py            # full run: BENCHMARKS.md and docs/img/*.png
    python benchmarks/run_all.py --quick    # under 2 minutes: build/bench-quick/
    python benchmarks/run_all.py --from-json build/bench/results.json [--force]

A full run writes BENCHMARKS.md only if the machine was quiet: the 1-minute load average,
read before and 90 s after (once the benchmark's own load has faded), stayed under 1.5 x
the usable cores (``--force`` writes it anyway;
the raw results are always kept in build/bench/results.json).

Needs PostgreSQL on 127.0.0.1 (``BENCH_POSTGRESQL_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``; scratch databases are created and
dropped) and wrk (installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import os
import sys

# Run as a file, this directory comes first on sys.path, where benchmarks/http.py would shadow
# the standard library's http; import the benchmarks as a package from the repository root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks import http, overhead, overhead_async, plots, sqlite_concurrency  # noqa: E402
from benchmarks._common import (  # noqa: E402
    LOAD_FACTOR,
    MET,
    MISSED,
    ROOT,
    TIE,
    load_average,
    machine,
    markdown_table,
    too_busy,
)

SETTLE_SECONDS = 90


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (make bench-quick)")
    parser.add_argument(
        "--out",
        help="directory for BENCHMARKS.md (default: the repository root; with --quick, "
        "build/bench-quick); plots go to docs/img/ beside it, or img/ in --quick mode",
    )
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-async", action="store_true", help="skip the async unit costs")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--http-rounds",
        type=int,
        help="rounds per HTTP cell (full run: 5, about 45 minutes for both backends)",
    )
    parser.add_argument(
        "--http-seconds",
        type=int,
        help="seconds of wrk per HTTP cell and round (full run: 3; wrk takes whole seconds)",
    )
    parser.add_argument("--http-sqlite", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--http-concurrency",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        help="comma-separated wrk connection counts (full run: 1,8,32,64)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"write BENCHMARKS.md even if the load average exceeded {LOAD_FACTOR} x cores",
    )
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="measure nothing: render BENCHMARKS.md and the plots again from the raw results "
        "an earlier run saved (build/bench/results.json)",
    )
    args = parser.parse_args(argv)

    quick = args.quick
    out = args.out or (os.path.join(ROOT, "build", "bench-quick") if quick else ROOT)
    img = os.path.join(out, "img") if quick else os.path.join(out, "docs", "img")
    raw = os.path.join(ROOT, "build", "bench-quick" if quick else "bench")
    os.makedirs(out, exist_ok=True)
    os.makedirs(raw, exist_ok=True)
    command = "make bench-quick" if quick else "make bench"

    if args.from_json:
        with open(args.from_json, encoding="utf-8") as saved:
            results = _int_keys(json.load(saved))
        return write_outputs(results, out, img, command, force=args.force or quick)

    started = time.monotonic()
    when = datetime.datetime.now(datetime.UTC)
    about = machine()
    log(
        f"{command}: {about['cpu']}, {about['cores']} cores, "
        f"load {about['load average (1/5/15 min)']}"
    )
    results: dict[str, Any] = {
        "machine": about,
        "quick": quick,
        "started": when.isoformat(),
        "load_before": load_average(),
    }
    if not args.skip_overhead:
        results["overhead"] = overhead.run(overhead.QUICK if quick else overhead.FULL, log=log)
    if not args.skip_async:
        results["overhead_async"] = overhead_async.run(
            overhead.QUICK if quick else overhead.FULL, log=log
        )
    if not args.skip_sqlite:
        results["sqlite"] = sqlite_concurrency.run(
            sqlite_concurrency.QUICK if quick else sqlite_concurrency.FULL, log=log
        )
    if not args.skip_http:
        http_settings = http.QUICK if quick else http.FULL
        if args.http_rounds:
            http_settings = dataclasses.replace(
                http_settings, rounds=args.http_rounds, hold_rounds=args.http_rounds
            )
        if args.http_seconds:
            http_settings = dataclasses.replace(http_settings, seconds=args.http_seconds)
        if args.http_sqlite is not None:
            http_settings = dataclasses.replace(http_settings, sqlite=args.http_sqlite)
        if args.http_concurrency:
            http_settings = dataclasses.replace(http_settings, concurrency=args.http_concurrency)
        results["http"] = http.run(http_settings, log=log)
    elapsed = time.monotonic() - started
    results["elapsed_seconds"] = elapsed
    # The benchmark's own servers and wrk keep the 1-minute load average near 4 on two cores;
    # read it once they have been gone long enough (the average decays by e in a minute) to
    # tell whether something else ran meanwhile.
    if not quick:
        log(f"waiting {SETTLE_SECONDS} s for the benchmark's own load to fade from the average")
        time.sleep(SETTLE_SECONDS)
        results["settle_seconds"] = SETTLE_SECONDS
    results["load_after"] = load_average()

    raw_path = os.path.join(raw, "results.json")
    with open(raw_path, "w", encoding="utf-8") as dump:
        json.dump(results, dump, indent=1, default=str)

    log(f"raw results in {raw_path}; total {elapsed:.0f} s")
    return write_outputs(results, out, img, command, force=args.force or quick, raw=raw_path)


def _int_keys(value: Any) -> Any:
    """JSON turned the integer keys (depths, thread counts, concurrency) into strings."""
    if isinstance(value, dict):
        return {int(k) if k.isdigit() else k: _int_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value


def write_outputs(
    results: dict[str, Any], out: str, img: str, command: str, *, force: bool, raw: str = ""
) -> int:
    """BENCHMARKS.md in ``out`` and the plots in ``img``, from a run's results; refused when
    the machine was busy, unless ``force``."""
    busy = too_busy([tuple(results["load_before"]), tuple(results["load_after"])])
    if busy and not force:
        log(
            f"NOT writing BENCHMARKS.md: {busy}, so the ratios would mostly measure the other "
            "work. Run again on a quieter machine, or write it anyway with: "
            f".venv/bin/python benchmarks/run_all.py --from-json {raw or 'FILE'} --force"
        )
        return 3
    results["busy"] = busy
    about = results["machine"]
    images: dict[str, str] = {}
    if "http" in results:
        subtitle = f"{about['cpu']}, {about['cores']} cores; {results['started'][:10]}; {command}"
        images = plots.http_plots(results["http"], img, subtitle)
    report = render(results, images, out, command)
    path = os.path.join(out, "BENCHMARKS.md")
    with open(path, "w", encoding="utf-8") as md:
        md.write(report)
    log(f"wrote {path}, {', '.join(images.values()) or 'no plots'}")
    return 0


def _load(value: Any) -> str:
    return " / ".join(f"{x:.2f}" for x in value)


def render(results: dict[str, Any], images: dict[str, str], out: str, command: str) -> str:
    about = results["machine"]
    quick = results["quick"]
    parts = [
        "# Benchmarks",
        "",
        f"Measured at flask-uow revision **{about['flask-uow revision']}**, generated by "
        f"`{command}` (`.venv/bin/python benchmarks/run_all.py{' --quick' if quick else ''}`) on "
        f"{results['started'][:16].replace('T', ' ')} UTC, in "
        f"{results['elapsed_seconds'] / 60:.1f} minutes."
        + (
            " **Quick mode: few short rounds per cell, for checking the harness only.**"
            if quick
            else ""
        ),
        "",
        "Every comparison ran side by side in one run on one machine: contenders take turns "
        "round by round (each going first in turn). A ratio is the median of the per-round "
        "ratios, with a bootstrap 95% interval in brackets; a target counts as *met* or "
        "*missed* only when the whole interval is on one side of it, otherwise it is a *tie "
        "within noise*. Counted figures (Python calls, round trips) do not depend on load. "
        f"Load average (1/5/15 min): {_load(results['load_before'])} before, "
        f"{_load(results['load_after'])} "
        + (
            f"{results['settle_seconds']} s after the last measurement."
            if results.get("settle_seconds")
            else "after."
        )
        + (f" **Written with --force although {results['busy']}.**" if results.get("busy") else ""),
        "",
        "## Machine",
        "",
        markdown_table(["", ""], list(about.items())),
        "",
    ]
    if "overhead" in results:
        ov = results["overhead"]
        settings = ov["settings"]
        parts += [
            "## 1. What a unit of work costs: `benchmarks/overhead.py`",
            "",
            f"`python -m benchmarks.overhead{' --quick' if quick else ''}`: "
            f"{settings['rounds']} paired rounds of about {settings['chunk_seconds'] * 1000:.0f}"
            " ms of calls per contender. Every contender on its own engine as its library's "
            "docs configure it, all with `expire_on_commit=False` and a pool of 10.",
            "",
            overhead.markdown(ov),
        ]
    if "sqlite" in results:
        parts += [
            "## 2. SQLite under concurrency: `benchmarks/sqlite_concurrency.py`",
            "",
            f"`python -m benchmarks.sqlite_concurrency{' --quick' if quick else ''}`: 8 threads "
            "of units reading one row by primary key while one thread updates rows, "
            f"{results['sqlite']['settings']['seconds']} s per run, "
            f"{results['sqlite']['settings']['rounds']} rounds, on flask-uow's engine (see "
            "docs/sqlite.md).",
            "",
            sqlite_concurrency.markdown(results["sqlite"]),
        ]
    if "http" in results:
        ht = results["http"]
        settings = ht["settings"]
        rel = {k: os.path.relpath(v, out) for k, v in images.items()}
        parts += [
            "## 3. HTTP: `benchmarks/http.py`",
            "",
            f"`python -m benchmarks.http{' --quick' if quick else ''}`. The contenders "
            "(`benchmarks/peers/`):",
            "",
            "- **flask-uow (ledger)**: the real ledger app (`ledger.app.create_app`), its views "
            "and services untouched (reads in read-only units, a transfer in a read-write unit "
            "with an `on_commit` notification), plus a `bench` blueprint;",
            "- **Flask-SQLAlchemy**, **Flask-SQLAlchemy-Lite**, **Advanced Alchemy** "
            '(`commit_mode="manual"`): the same endpoints written once against the request\'s '
            "session (`peers/_session_views.py`), `commit()` in the view, the session closed "
            "when the app context ends;",
            "- **bare SQLAlchemy**: the same endpoints with `with sessionmaker.begin()` blocks: "
            "reads on a read-only engine (`postgresql_readonly=True`; on SQLite a deferred "
            "`BEGIN`), writes with `BEGIN IMMEDIATE` on SQLite as the ledger sends.",
            "",
            "All send the same SQL statements in the same order (a transfer locks both accounts "
            "with `SELECT ... FOR UPDATE` in id order, checks, updates, inserts) and the same "
            "notification after a transfer commits; the counted table shows each app's round "
            "trips per request (on SQLite the extensions, on stock pysqlite, send a read's "
            "SELECT with no transaction around it). Sessions have `expire_on_commit=False` "
            "everywhere.",
            "",
            f"Each app runs under gunicorn `{ht['hot_gunicorn']}` on 127.0.0.1 with a pool of "
            f"{ht['hot_pool_size']} connections per worker and no overflow, all at once against "
            "one scratch database per backend seeded once with 1000 customers (one account "
            "each) and 10,000 transfers. wrk (`-t min(2, c) -c c "
            f"-d {settings['seconds']}s`, random ids) drives one app at a time: for each "
            f"endpoint and concurrency {settings['rounds']} round(s), each app first in turn; "
            "after every run that wrote, the database is reset. wrk, gunicorn and the database "
            "share the machine's cores.",
            "",
        ]
        for key, path in rel.items():
            parts += [f"![{key}]({path})", ""]
        parts += [
            "Connection hold (PostgreSQL): `POST /bench/hold/<id>` reads the account, sleeps "
            "50 ms (a simulated external call), then deposits 1 cent with `SELECT ... FOR "
            "UPDATE`, **in one transaction in every app** (flask-uow: one unit around the "
            "ledger's services, which join it). A second table, `POST /bench/hold-short/<id>`, "
            "shows the structure flask-uow's services make natural: a read-only unit, nothing "
            "open during the wait, a read-write unit, with bare SQLAlchemy written the same way. "
            f"Gunicorn `{ht['hold_gunicorn']}`, {ht['hold_clients']} wrk connections for "
            f"{settings['hold_seconds']} s, {settings['hold_rounds']} round(s); a thread samples "
            "`pg_stat_activity` about every 10 ms.",
            "",
            http.markdown(ht),
        ]
    parts += REPLICA_ROUTING
    if "overhead_async" in results:
        settings = results["overhead_async"]["settings"]
        parts += [
            "## 5. What an async unit of work costs: `benchmarks/overhead_async.py`",
            "",
            f"`python -m benchmarks.overhead_async{' --quick' if quick else ''}`: "
            f"{settings['rounds']} paired rounds of about {settings['chunk_seconds'] * 1000:.0f}"
            " ms of calls per contender, on one event loop. An async unit (`async with "
            "db.unit_of_work(): await db.async_session.get(...)`) beside a bare `async with "
            "AsyncSession(engine) as s, s.begin():` and beside Flask-SQLAlchemy-Lite's async "
            "session used as its docs show (`SQLALCHEMY_ASYNC_ENGINES`, `db.async_session` in "
            "an app context, `await db.async_session.commit()`, closed by the extension's "
            "teardown, which each call runs as the end of a request would). Every contender on "
            "its own async engine as its library's docs configure it, all with "
            "`expire_on_commit=False` and a pool of 10.",
            "",
            overhead_async.markdown(results["overhead_async"]),
        ]
    if "http" in results and http.quart_markdown(results["http"]):
        ht = results["http"]
        settings = ht["settings"]
        parts += [
            "## 6. HTTP, async: Quart under hypercorn (`benchmarks/http.py`)",
            "",
            "Two Quart apps serve the ledger's three hot endpoints (`benchmarks/peers/`), "
            "compared with each other only, not with the WSGI apps of section 3:",
            "",
            "- **flask-uow (Quart)**: `quart_uow_app`, an async twin of the ledger's services: "
            "`@db.transactional(read_only=True)` async services for the reads, "
            "`@db.transactional(retries=3)` with an `on_commit` notification for a transfer, "
            "on the Quart app's pooled async engine (`db.init_app`);",
            "- **bare AsyncSession (Quart)**: `quart_sqlalchemy_app`, the same endpoints with "
            "`async with async_sessionmaker.begin()` blocks: reads on a read-only engine "
            "(`postgresql_readonly=True`; on SQLite a deferred `BEGIN`), writes with `BEGIN "
            "IMMEDIATE` on SQLite, SQLAlchemy's aiosqlite recipe.",
            "",
            "Both on the async driver flask-uow derives from the URL (aiosqlite, psycopg in its "
            "async mode), the same SQL statements in the same order as the WSGI apps, the "
            "ledger's request parsing, JSON shapes and error statuses, `expire_on_commit=False`; "
            "a request whose client has gone runs to its end, as under gunicorn, rather than "
            "being cancelled by Quart (`peers/_quart.py`: wrk drops its requests in flight at "
            "the end of every run, and a cancelled bare `AsyncSession` has been seen to return "
            "psycopg connections to the pool still in pipeline mode). "
            f"hypercorn `{' '.join(http.QUART_HYPERCORN)}` on 127.0.0.1, a pool of "
            f"{ht['hot_pool_size']} connections per worker and no overflow, on the database of "
            f"section 3 after its runs; wrk as there (`-d {settings['seconds']}s`, "
            f"{settings['rounds']} round(s) per cell, each app first in turn, the database "
            "reset after every run that wrote). Target: flask-uow's app serves at least "
            f"{round(100 * http.QUART_TARGET)}% of the bare app's requests per second.",
            "",
            http.quart_markdown(ht),
        ]
    parts += closing_note(results)
    return "\n".join(parts) + "\n"


REPLICA_ROUTING = [
    "## 4. Read replicas: what routing costs",
    "",
    "Counted, not timed, so it does not depend on the machine: a read-only unit routed to a "
    "streaming replica makes the same round trips as one on the primary, 4 each (BEGIN, two "
    "SELECTs, ROLLBACK; the replica's replay position is cached and probed at most every "
    "0.1 s by one thread), and a read-write unit that wrote makes one more, after COMMIT, to "
    "read the primary's WAL position for read-your-writes. `tests/test_replicas.py` gates "
    "both figures on a real replica in `make test` "
    "(`test_a_read_only_unit_costs_the_same_round_trips_on_a_replica_as_on_the_primary`, "
    "`test_a_unit_that_wrote_reads_the_commit_position_once_and_one_that_only_read_never`); "
    "see docs/replicas.md.",
    "",
]
"""A counted figure the replica tests enforce; no replica is needed to render it."""


def closing_note(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str]] = []
    if "overhead" in results:
        rows += [(f"units, {b}", w, v) for b, w, v in overhead.targets(results["overhead"])]
    if "overhead_async" in results:
        rows += [
            (f"async units, {b}", w, v)
            for b, w, v in overhead_async.targets(results["overhead_async"])
        ]
    if "sqlite" in results:
        what, verdict = sqlite_concurrency.target(results["sqlite"])
        rows.append(("SQLite file", what, verdict))
    if "http" in results:
        rows += http.quart_targets(results["http"])
    http_rows = http.targets(results["http"]) if "http" in results else []
    lines = ["## Closing note: every target with its figure", ""]
    lines.append(markdown_table(["where", "target: measured [95% interval]", "verdict"], rows))
    lines.append("")
    if http_rows:
        met = sum(1 for *_, v in http_rows if v == MET)
        ties = sum(1 for *_, v in http_rows if v == TIE)
        missed = [r for r in http_rows if r[2] == MISSED]
        lines += [
            f"HTTP: {len(http_rows)} comparisons; {met} met, {len(missed)} missed, {ties} ties "
            "within noise (a tie counts as *at least equal*), "
            f"{len(http_rows) - met - ties - len(missed)} without a verdict (too few rounds). "
            "Missed:",
            "",
        ]
        lines += [f"- {w}: {t}" for w, t, _ in missed] or ["- none"]
        lines.append("")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
