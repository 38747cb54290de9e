"""What one request costs each app, counted rather than timed: noise-free on a busy machine.

Each app of ``benchmarks.peers`` serves the hot endpoints in this process through Flask's (or
Quart's) test client. Python function calls are counted with ``sys.setprofile`` and round
trips under the driver, with the counters of ``tests/test_costs.py`` (the gate that runs in
``make test``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask

from ._common import markdown_table

Request = tuple[str, str, dict[str, Any] | None]


def request_for(endpoint: str, customers: int) -> Request:
    """One request like those wrk sends to ``endpoint``."""
    a, b = 3, customers // 2
    if endpoint.startswith("GET /customers"):
        return ("GET", f"/customers/{a}", None)
    if endpoint.startswith("POST /transfers"):
        return ("POST", "/transfers", {"from_account": a, "to_account": b, "amount": 1})
    if endpoint.startswith("GET /accounts"):
        return ("GET", f"/accounts/{a}/transfers", None)
    return ("GET", "/bench/noop", None)


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
    apps: dict[str, str], endpoints: list[str], url: sa.URL, *, customers: int
) -> dict[str, dict[str, dict[str, int]]]:
    """{endpoint: {app: {calls, round_trips}}} for one request."""
    from tests.test_costs import count_calls, wire

    env = {
        "BENCH_DATABASE_URL": url.render_as_string(hide_password=False),
        "BENCH_POOL_SIZE": "2",
        "BENCH_APP_NAME": "bench-costs",
    }
    results: dict[str, dict[str, dict[str, int]]] = {}
    with environment(env), wire() as counter:
        built: dict[str, tuple[Flask, Any]] = {}
        for name, spec in apps.items():
            module_name, _, call = spec.partition(":")
            module = importlib.import_module(module_name)
            built[name] = (getattr(module, call.removesuffix("()"))(), module)
        gc.collect()
        gc.freeze()  # keep the collections count_calls makes short
        try:
            for endpoint in endpoints:
                results[endpoint] = {}
                method, path, body = request_for(endpoint, customers)
                for name, (app, _) in built.items():
                    send = _sender(app, name, method, path, body)
                    results[endpoint][name] = {
                        "calls": count_calls(send, warmup=10, samples=3),
                        "round_trips": counter.measure(send),
                    }
        finally:
            gc.unfreeze()
            for app, module in built.values():
                with app.app_context():
                    module.dispose(app)
    return results


def measure_quart(
    apps: dict[str, str], endpoints: list[str], url: sa.URL, *, customers: int
) -> dict[str, dict[str, dict[str, int]]]:
    """As :func:`measure`, for Quart apps: each request through Quart's test client, awaited
    on one event loop (calls counted with ``count_calls_async``, resumed coroutines included)."""
    from tests.test_costs import count_calls_async, wire

    env = {
        "BENCH_DATABASE_URL": url.render_as_string(hide_password=False),
        "BENCH_POOL_SIZE": "2",
        "BENCH_APP_NAME": "bench-costs",
    }

    async def run(counter: Any) -> dict[str, dict[str, dict[str, int]]]:
        results: dict[str, dict[str, dict[str, int]]] = {}
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for name, spec in apps.items():
                module_name, _, call = spec.partition(":")
                app = getattr(importlib.import_module(module_name), call.removesuffix("()"))()
                test_app = app.test_app()
                await test_app.startup()
                stack.push_async_callback(test_app.shutdown)  # after_serving closes the pool
                clients[name] = test_app.test_client()
            gc.collect()
            gc.freeze()
            try:
                for endpoint in endpoints:
                    results[endpoint] = {}
                    method, path, body = request_for(endpoint, customers)
                    for name, client in clients.items():
                        send = _async_sender(client, name, method, path, body)
                        results[endpoint][name] = {
                            "calls": await count_calls_async(send, warmup=10, samples=3),
                            "round_trips": await counter.measure_async(send),
                        }
            finally:
                gc.unfreeze()
        return results

    with environment(env), wire() as counter:
        return asyncio.run(run(counter))


def _async_sender(
    client: Any, name: str, method: str, path: str, body: dict[str, Any] | None
) -> Callable[[], Awaitable[None]]:
    async def send() -> None:
        reply = await client.open(path, method=method, json=body)
        if reply.status_code >= 400:
            raise RuntimeError(f"{name}: {method} {path} -> {reply.status}")

    return send


def _sender(
    app: Flask, name: str, method: str, path: str, body: dict[str, Any] | None
) -> Callable[[], None]:
    client = app.test_client()

    def send() -> None:
        reply = client.open(path, method=method, json=body)
        if reply.status_code >= 400:
            raise RuntimeError(f"{name}: {method} {path} -> {reply.status}")

    return send


def markdown(costs: dict[str, dict[str, dict[str, int]]], reference: str) -> str:
    rows = []
    for endpoint, by_app in costs.items():
        base = by_app[reference]
        for name, c in by_app.items():
            rows.append(
                [
                    f"`{endpoint}`" if name == next(iter(by_app)) else "",
                    name,
                    str(c["calls"]),
                    "-" if name == reference else f"{c['calls'] - base['calls']:+d}",
                    str(c["round_trips"]),
                ]
            )
    return markdown_table(
        [
            "endpoint",
            "app",
            "Python function calls per request",
            f"calls - {reference}",
            "round trips per request",
        ],
        rows,
    )
