"""``make stress``: the reliability suite at full size on every backend, then RELIABILITY.md.

Runs ``pytest tests/reliability`` and the stateful models (``MODELS``) with
``FLASK_UOW_STRESS=1`` (full counts, many more examples) and the server
URLs (``TEST_POSTGRESQL_URL``, ``TEST_MARIADB_URL``; the local servers by default), collects the
figures each test writes, and writes them to ``RELIABILITY.md`` at the repository root with
the versions of everything involved and the exact command. Extra arguments go to pytest.
Exits with pytest's status.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "RELIABILITY.md"
SERVERS = {
    "TEST_POSTGRESQL_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "TEST_MARIADB_URL": "mysql+pymysql://root@127.0.0.1:3306/test",
}
MODELS = (
    "tests/test_stateful.py",
    "tests/test_stateful_faults.py",
    "tests/test_stateful_replicas.py",
)
"""The Hypothesis models of units, which ``make test`` runs with few examples."""
PACKAGES = (
    "flask-uow",
    "SQLAlchemy",
    "Flask",
    "psycopg",
    "PyMySQL",
    "gunicorn",
    "gevent",
    "schemathesis",
    "hypothesis",
    "pytest",
)
SECTIONS = {
    "test_bank": (
        "Bank test with faults",
        "16 threads run random transfers and deposits through the ledger's services while "
        "exceptions are raised after partial writes, the app's connections are killed from "
        "outside (SQLite: the write lock is held from outside) and a quarter of the work runs "
        "at SERIALIZABLE. Afterwards the books balance to the cent, every success is stored "
        "once, no failure is visible, hooks ran for committed units only, and nothing is left "
        "checked out or idle in a transaction.",
    ),
    "test_bank_async": (
        "Async bank test with faults and cancellations",
        "24 asyncio tasks run random transfers in async units (`@db.transactional(retries=)`, "
        "`async with db.unit_of_work()`, a SAVEPOINT inside a decorated unit) while the app's "
        "connections are killed from outside, another connection holds row locks (SQLite: the "
        "write lock) longer than the units' lock_timeout, transfers at REPEATABLE READ or "
        "SERIALIZABLE conflict, and tasks are cancelled mid-statement, mid-COMMIT, at random "
        "or by asyncio.timeout; in processes of their own, asyncio.run() returns, or a real "
        "SIGINT stops it, while a COMMIT's answer is held back. The outcome of each "
        "transfer's last unit decides whether it is stored (unknown ones are resent with "
        "their idempotency key); afterwards the money "
        "is all there, balances match the stored transfers, each unit's hooks match its "
        "outcome, and nothing is left checked out, idle in a transaction or to the garbage "
        "collector.",
    ),
    "test_exactly_once_http": (
        "Exactly once over HTTP",
        "Clients resend transfers with their Idempotency-Key to the ledger under gunicorn on "
        "timeouts, dropped connections and 5xx, while database connections are killed and "
        "workers SIGKILLed; each logical transfer is applied exactly once.",
    ),
    "test_outage": (
        "Database outage",
        "PostgreSQL is cut off (then stalled) through a TCP proxy under load: requests fail "
        "within their timeout budget, /health answers 503, and the same app object recovers "
        "after the path is restored.",
    ),
    "test_fuzz": (
        "Fuzzing",
        "schemathesis against /openapi.json, schema-valid and schema-violating requests: no "
        "500, no response outside the schema, no traceback, SQL or password in a body.",
    ),
    "test_isolation": (
        "Isolation under concurrency",
        "64 concurrent clients, each a different customer, against one gunicorn worker "
        "(threaded and gevent): every response carries only the client's own data.",
    ),
    "test_soak": (
        "Soak",
        "Units of work with random outcomes on four threads: memory growth (tracemalloc), "
        "open units, checked-out connections and db.stats counters.",
    ),
    "test_secrets": (
        "Secrets",
        "The database password is absent from logs (DEBUG, tracebacks included), reprs, error "
        "responses, exceptions and `flask uow check`, with the server accepting, refusing or "
        "missing.",
    ),
    "test_dead_connections": (
        "Dead connections",
        "A pooled connection killed while idle is retried; a connection killed right after "
        "COMMIT leaves a committed unit.",
    ),
}


def main(pytest_args: list[str]) -> int:
    env = dict(os.environ)
    for variable, default in SERVERS.items():
        env.setdefault(variable, default)
    env["FLASK_UOW_STRESS"] = "1"
    work = Path(tempfile.mkdtemp(prefix="flask-uow-stress-"))
    figures_dir = work / "figures"
    figures_dir.mkdir()
    env["FLASK_UOW_RELIABILITY_FIGURES"] = str(figures_dir)
    junit = work / "junit.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/reliability",
        *MODELS,
        "-p",
        "no:cacheprovider",
        "-rfEsxX",
        f"--junitxml={junit}",
        *pytest_args,
    ]
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    shown = " ".join(
        [
            "FLASK_UOW_STRESS=1",
            *(f"{k}={shlex.quote(masked(env[k]))}" for k in SERVERS),
            shlex.join([str(python), *command[1:]]),
        ]
    )
    print(f"run_stress: {shown}", flush=True)
    started = datetime.now(UTC)
    clock = time.monotonic()
    load_before = os.getloadavg()[0]
    status = subprocess.call(command, cwd=ROOT, env=env)
    seconds = time.monotonic() - clock
    load = (load_before, os.getloadavg()[0])
    results = read_junit(junit)
    figures = read_figures(figures_dir)
    REPORT.write_text(
        render(
            status=status,
            started=started,
            seconds=seconds,
            shown=shown,
            results=results,
            figures=figures,
            env=env,
            load=load,
        )
    )
    print(f"run_stress: wrote {REPORT.relative_to(ROOT)} (pytest exit status {status})")
    return status


def read_junit(path: Path) -> dict[str, dict[str, Any]]:
    """Outcome, seconds and message of each test, by pytest node id."""
    if not path.exists():
        return {}
    results: dict[str, dict[str, Any]] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        nodeid = f"{module}.py::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            text = (child.get("message") or "").strip()
            first_line = text.splitlines()[0][:200] if text else ""
            if child.tag == "failure":
                outcome, message = "failed", first_line
            elif child.tag == "error":
                outcome, message = "error", first_line
            elif child.tag == "skipped":
                outcome = "xfailed" if "xfail" in child.get("type", "") else "skipped"
                message = first_line
        results[nodeid] = {
            "outcome": outcome,
            "seconds": float(case.get("time", 0)),
            "message": message,
        }
    return results


def read_figures(directory: Path) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text())
        figures[document["test"]] = document["figures"]
    return figures


def masked(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def server_version(url: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT version()").scalar_one())
    except sa.exc.DBAPIError as error:
        return f"unreachable ({type(error.orig).__name__})"
    finally:
        engine.dispose()


def package_versions() -> list[str]:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return versions


def param_of(nodeid: str) -> str:
    return nodeid.partition("[")[2].rstrip("]") or "-"


def module_of(nodeid: str) -> str:
    return Path(nodeid.partition("::")[0]).stem


def cell(value: Any) -> str:
    if isinstance(value, dict):
        return "<br>".join(f"{k}: {cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def render(
    *,
    status: int,
    started: datetime,
    seconds: float,
    shown: str,
    results: dict[str, dict[str, Any]],
    figures: dict[str, dict[str, Any]],
    env: dict[str, str],
    load: tuple[float, float],
) -> str:
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    lines = [
        "# Reliability report",
        "",
        "Written by `make stress` (`tests/reliability/run_stress.py`): the reliability suite of",
        "`tests/reliability/` and the stateful models (`tests/test_stateful*.py`) at full size",
        "(`FLASK_UOW_STRESS=1`) on every backend. `make test` runs the same tests in quick mode.",
        "Do not edit by hand; run `make stress` again.",
        "",
        f"- Run: {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} minutes, "
        f"pytest exit status {status} ({summary or 'no results'})",
        f"- Command: `make stress`, which ran `{shown}`",
        f"- PostgreSQL: {server_version(env['TEST_POSTGRESQL_URL'])}",
        f"- MariaDB: {server_version(env['TEST_MARIADB_URL'])}",
        f"- SQLite: {sqlite3.sqlite_version}",
        f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the start and {load[1]:.1f} at "
        "the end (throughput figures depend on what else the machine ran)",
        f"- Packages: {', '.join(package_versions())}",
        "",
        "## Results",
        "",
        "| Test | Parameters | Outcome | Seconds |",
        "| --- | --- | --- | ---: |",
    ]
    for nodeid, result in sorted(results.items()):
        outcome = result["outcome"]
        if result["message"] and outcome != "passed":
            outcome += f": {cell(result['message'])}"
        name = nodeid.partition("::")[2].partition("[")[0]
        lines.append(f"| `{name}` | {param_of(nodeid)} | {outcome} | {result['seconds']:.1f} |")
    for module, (title, description) in SECTIONS.items():
        tests = sorted(nodeid for nodeid in figures if module_of(nodeid) == module)
        lines += ["", f"## {title}", "", description, ""]
        if not tests:
            lines.append("No figures recorded (skipped, or the test failed before recording).")
            continue
        keys: list[str] = []
        for nodeid in tests:
            keys += [k for k in figures[nodeid] if k not in keys and k != "backend"]
        lines.append("| Figure | " + " | ".join(param_of(n) for n in tests) + " |")
        lines.append("| --- |" + " --- |" * len(tests))
        for key in keys:
            row = [cell(figures[n].get(key, "-")) for n in tests]
            lines.append(f"| {key} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
