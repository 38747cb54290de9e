"""What one request costs each app, counted rather than timed: noise-free on a busy machine.

Each app of ``benchmarks.peers`` serves the hot endpoints in this process through Flask's test
client, under cProfile, while engine events count what goes to the database: statements
(``cursor.execute``, which includes ``SET TRANSACTION READ ONLY``), transactions begun (psycopg
sends ``BEGIN`` on its own) and COMMITs / ROLLBACKs. The counts are per request, averaged.
"""

from __future__ import annotations

import cProfile
import importlib
import os
import pstats
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy import event

from ._common import markdown_table

Request = tuple[str, str, dict[str, Any] | None]


def requests_for(endpoint: str, count: int, customers: int, seed: int = 7) -> list[Request]:
    """``count`` requests like the ones wrk sends to ``endpoint``."""
    rng = random.Random(seed)
    out: list[Request] = []
    for _ in range(count):
        a = rng.randint(1, customers)
        if endpoint.startswith("GET /customers"):
            out.append(("GET", f"/customers/{a}", None))
        elif endpoint.startswith("POST /transfers"):
            b = rng.randint(1, customers - 1)
            b = b + 1 if b >= a else b
            body = {"from_account": a, "to_account": b, "amount": rng.randint(1, 100)}
            out.append(("POST", "/transfers", body))
        elif endpoint.startswith("GET /accounts"):
            out.append(("GET", f"/accounts/{a}/transfers", None))
        else:
            out.append(("GET", "/bench/noop", None))
    return out


class Counts:
    def __init__(self) -> None:
        self.statements = self.begins = self.ends = 0

    def statement(self, *args: Any) -> None:
        self.statements += 1

    def begin(self, *args: Any) -> None:
        self.begins += 1

    def end(self, *args: Any) -> None:
        self.ends += 1


@contextmanager
def counting() -> Iterator[Counts]:
    counts = Counts()
    listeners = (
        ("before_cursor_execute", counts.statement),
        ("begin", counts.begin),
        ("commit", counts.end),
        ("rollback", counts.end),
    )
    for name, listener in listeners:
        event.listen(sa.Engine, name, listener)
    try:
        yield counts
    finally:
        for name, listener in listeners:
            event.remove(sa.Engine, name, listener)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measure(
    apps: dict[str, str],
    endpoints: list[str],
    url: sa.URL,
    *,
    requests: int,
    customers: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """{endpoint: {app: {calls, statements, transactions, ends}}} per request."""
    built: dict[str, Flask] = {}
    env = {
        "BENCH_DATABASE_URL": url.render_as_string(hide_password=False),
        "BENCH_POOL_SIZE": "2",
        "BENCH_APP_NAME": "bench-costs",
    }
    with environment(env):
        for name, spec in apps.items():
            module, _, call = spec.partition(":")
            factory = getattr(importlib.import_module(module), call.removesuffix("()"))
            built[name] = factory()
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for endpoint in endpoints:
            results[endpoint] = {}
            batch = requests_for(endpoint, requests, customers)
            for name, app in built.items():
                client = app.test_client()
                for method, path, body in batch[:20]:  # warm up
                    client.open(path, method=method, json=body)
                profiler = cProfile.Profile()
                with counting() as counts:
                    profiler.enable()
                    for method, path, body in batch:
                        reply = client.open(path, method=method, json=body)
                        if reply.status_code >= 400:
                            raise RuntimeError(f"{name}: {method} {path} -> {reply.status}")
                    profiler.disable()
                stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
                calls = sum(n for (_, n, _, _, _) in stats.values())
                results[endpoint][name] = {
                    "calls": calls / len(batch),
                    "statements": counts.statements / len(batch),
                    "transactions": counts.begins / len(batch),
                    "ends": counts.ends / len(batch),
                }
    finally:
        for app in built.values():
            with app.app_context():
                for extension in app.extensions.values():
                    if hasattr(extension, "dispose"):  # flask-uow's Database
                        extension.dispose()
                    elif hasattr(extension, "engines"):  # Flask-SQLAlchemy
                        for engine in extension.engines.values():
                            engine.dispose()
                    elif hasattr(extension, "kw"):  # the bare app's sessionmaker
                        extension.kw["bind"].dispose()
    return results


def markdown(costs: dict[str, dict[str, dict[str, float]]], reference: str) -> str:
    rows = []
    for endpoint, by_app in costs.items():
        base = by_app[reference]
        for name, c in by_app.items():
            rows.append(
                [
                    f"`{endpoint}`",
                    name,
                    f"{c['calls']:.0f}",
                    "-" if name == reference else f"{c['calls'] / base['calls']:.2f}x",
                    f"{c['statements']:.2f}",
                    f"{c['transactions']:.2f}",
                    f"{c['ends']:.2f}",
                    f"{c['statements'] + c['transactions'] + c['ends']:.2f}",
                ]
            )
    return markdown_table(
        [
            "endpoint",
            "app",
            "Python function calls per request",
            f"calls / {reference}",
            "SQL statements",
            "transactions (BEGIN)",
            "COMMIT + ROLLBACK",
            "round trips (statements + BEGIN + end)",
        ],
        rows,
    )
