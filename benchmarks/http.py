"""The ledger (flask-uow) and its twins on every peer library under gunicorn, two Quart apps
under hypercorn, driven by wrk (BENCHMARKS.md sections 3 and 6; the setup is in ``http_setup``)."""

from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run as a file, this module shadows stdlib http
    sys.exit("run it from the repository root as: python -m benchmarks.http")

import asyncio
import contextlib
import importlib
import tempfile
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tests.peer_apps.flask_apps import dispose
from tests.peer_apps.settings import environment

from . import _common as c
from . import http_setup as s
from .http_setup import BARE, HOLD, HOLD_SHORT, QUART_BARE, QUART_UOW, UOW, Endpoint

Settings = namedtuple("Settings", "rounds seconds warmup_seconds hold_rounds hold_seconds "
                       "warm_every_endpoint concurrency sqlite")  # seconds: whole, for wrk
FULL = Settings(rounds=5, seconds=3, warmup_seconds=2, hold_rounds=5, hold_seconds=5,
                warm_every_endpoint=True, concurrency=s.CONCURRENCY, sqlite=True)
QUICK = Settings(rounds=1, seconds=1, warmup_seconds=1, hold_rounds=1, hold_seconds=1,
                 warm_every_endpoint=False, concurrency=(8,), sqlite=False)

# -- per-request costs, counted ----------------------------------------------------------------
REQUESTS = {  # one request like those wrk sends, by its request function in wrk.lua
    "customer": ("GET", "/customers/3", None),
    "transfer": ("POST", "/transfers", {"from_account": 3, "to_account": 500, "amount": 1}),
    "transfers": ("GET", "/accounts/3/transfers", None),
    "noop": ("GET", "/bench/noop", None),
}


def measure_costs(apps: dict[str, str], endpoints: tuple[Endpoint, ...], url: sa.URL) -> Any:
    """{endpoint: {app: {calls, round_trips}}} for one request through the Flask (Quart) test
    client, counted with tests/counting.py."""
    from tests.counting import wire

    with environment(url, 2, "bench-costs"), wire() as counter:
        built = {}
        for name, spec in apps.items():
            module_name, _, call = spec.partition(":")
            built[name] = getattr(importlib.import_module(module_name), call.removesuffix("()"))()
        if apps is s.QUART_APPS:
            return asyncio.run(_quart_costs(built, endpoints, counter))
        try:
            clients = {name: app.test_client() for name, app in built.items()}
            with c.frozen():
                return {e.name: c.counted(_senders(e, clients), counter, warmup=10)
                        for e in endpoints}
        finally:
            for app in built.values():
                with app.app_context():
                    dispose(app)


async def _quart_costs(built: dict[str, Any], endpoints: tuple[Endpoint, ...], counter: Any) -> Any:
    results: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, app in built.items():
            test_app = app.test_app()
            await test_app.startup()
            stack.push_async_callback(test_app.shutdown)  # after_serving closes the pool
            clients[name] = test_app.test_client()
        with c.frozen():
            for e in endpoints:
                results[e.name] = await c.acounted(_senders(e, clients, quart=True), counter,
                                                   warmup=10, samples=3)
    return results


def _senders(endpoint: Endpoint, clients: dict[str, Any], quart: bool = False) -> Any:
    """For each app, a call sending ``endpoint``'s request and checking the status."""
    method, path, body = REQUESTS[endpoint.script]

    def sender(name: str, client: Any) -> Callable[[], Any]:
        def send() -> None:  # no helper calls: they would count as the request's
            reply = client.open(path, method=method, json=body)
            if reply.status_code >= 400:
                raise RuntimeError(f"{name}: {method} {path} -> {reply.status}")

        async def asend() -> None:
            reply = await client.open(path, method=method, json=body)
            if reply.status_code >= 400:
                raise RuntimeError(f"{name}: {method} {path} -> {reply.status}")

        return asend if quart else send

    return {name: sender(name, client) for name, client in clients.items()}


# -- the run ---------------------------------------------------------------------------------
Outcomes = dict[str, list[dict[str, Any]]]  # app -> one wrk outcome per round


@dataclass
class Run:  # what one backend's runs share
    settings: Settings
    url: sa.URL
    engine: sa.Engine
    wrk_path: str
    work: str
    log: Callable[[str], None]

    def wrk(self, server: s.Server, endpoint: Endpoint, clients: int, seconds: int) -> Any:
        return s.run_wrk(self.wrk_path, server.base_url, endpoint, clients, seconds)


def run(settings: Settings, *, log: Callable[[str], None]) -> dict[str, Any]:
    log = c.clocked(log)
    wrk = s.ensure_wrk(log)
    results: dict[str, Any] = {
        "settings": settings._asdict(), "backends": {},
        "hot_gunicorn": " ".join(s.HOT_GUNICORN), "hot_pool_size": s.HOT_POOL_SIZE,
        "hold_gunicorn": " ".join(s.HOLD_GUNICORN), "hold_pool_size": s.HOLD_POOL_SIZE,
        "hold_clients": s.HOLD_CLIENTS,
    }
    with tempfile.TemporaryDirectory(prefix="flask_uow_bench_http_") as work, \
            c.backends(skip_sqlite=not settings.sqlite) as urls:
        for backend, url in urls:
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            try:
                r = Run(settings, url, engine, wrk, work, log)
                results["backends"][backend] = _run_backend(r)
            finally:
                engine.dispose()
    return results


def _run_backend(r: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"hot": {}, "hold": {}}
    postgresql = r.engine.dialect.name == "postgresql"
    if postgresql:
        s.check_connections(r.engine)
    r.log(f"http: seeding {r.url.database}")
    s.seed(r.engine)
    r.log("http: per-request costs, counted in process")
    out["costs"] = measure_costs(s.APPS, s.ENDPOINTS, r.url)
    out["quart_costs"] = measure_costs(s.QUART_APPS, s.QUART_ENDPOINTS, r.url)
    s.reset(r.engine)

    r.log(f"http: hot endpoints, gunicorn {' '.join(s.HOT_GUNICORN)}, pool {s.HOT_POOL_SIZE}")
    with s.servers(r.url, s.HOT_GUNICORN, s.HOT_POOL_SIZE, r.work) as running:
        out["hot"] = _hot(r, s.ENDPOINTS, running)

    r.log(f"http: Quart, hypercorn {' '.join(s.QUART_HYPERCORN)}, pool {s.HOT_POOL_SIZE}")
    with s.servers(r.url, s.QUART_HYPERCORN, s.HOT_POOL_SIZE, r.work, s.QUART_APPS) as running:
        out["quart"] = _hot(r, s.QUART_ENDPOINTS, running)
    if not postgresql:
        return out

    r.log(f"http: connection hold, gunicorn {' '.join(s.HOLD_GUNICORN)}, pool "
          f"{s.HOLD_POOL_SIZE}, {s.HOLD_CLIENTS} clients")
    with s.servers(r.url, s.HOLD_GUNICORN, s.HOLD_POOL_SIZE, r.work) as running:
        for endpoint, names in ((HOLD, list(s.APPS)), (HOLD_SHORT, list(s.SHORT_APPS))):
            for name in names:
                r.wrk(running[name], endpoint, s.HOLD_CLIENTS, r.settings.warmup_seconds)
            s.reset(r.engine)
            hold = _cell(r, running, names, endpoint, s.HOLD_CLIENTS, r.settings.hold_seconds,
                         range(r.settings.hold_rounds), sample=True)
            out["hold"][endpoint.name] = hold
            _check_errors(r, endpoint.name, {s.HOLD_CLIENTS: hold}, running)
    return out


def _cell(r: Run, running: dict[str, s.Server], names: list[str], endpoint: Endpoint,
          clients: int, seconds: int, turns: range, sample: bool = False) -> Outcomes:
    """One wrk run per app and turn, each app first in turn, the database reset after every
    run that wrote; with ``sample``, pg_stat_activity sampled during each run."""
    cell: Outcomes = {name: [] for name in names}
    for turn in turns:
        for name in c.rotated(names, turn):
            sampler = s.ActivitySampler(r.url, name) if sample else None
            outcome = r.wrk(running[name], endpoint, clients, seconds)
            cell[name].append({**outcome, **(sampler.stop() if sampler else {})})
            if endpoint.writes:
                s.reset(r.engine)
    return cell


def _hot(r: Run, endpoints: tuple[Endpoint, ...], running: dict[str, s.Server]
         ) -> dict[str, dict[int, Outcomes]]:
    """{endpoint: {connections: {app: [one wrk outcome per round]}}} for the running apps."""
    names, hot, turn = list(running), {}, 0
    for endpoint in endpoints:
        r.log(f"  {endpoint.name}")
        if r.settings.warm_every_endpoint or endpoint is endpoints[0]:
            for server in running.values():  # warm up, filling every pool
                r.wrk(server, endpoint, 64, r.settings.warmup_seconds)
        if endpoint.writes:
            s.reset(r.engine)
        cells: dict[int, Outcomes] = {}
        for connections in r.settings.concurrency:
            cells[connections] = _cell(r, running, names, endpoint, connections,
                                       r.settings.seconds, range(turn, turn + r.settings.rounds))
            turn += r.settings.rounds
        hot[endpoint.name] = cells
        _check_errors(r, endpoint.name, cells, running)
    return hot


def _check_errors(
    r: Run, endpoint: str, cells: dict[int, Outcomes], running: dict[str, s.Server]
) -> None:
    for connections, by_app in cells.items():
        for name, outcomes in by_app.items():
            errors = sum(o["errors"] for o in outcomes)
            if errors:
                r.log(f"  ! {name}: {errors} errors on {endpoint} at {connections} connections; "
                      f"server log:\n{running[name].log_tail()}")


# -- the report ------------------------------------------------------------------------------
def _m(outcomes: list[dict[str, Any]], key: str) -> float:
    return c.median([o[key] for o in outcomes])


def _interval(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[float, float, float]:
    return c.ratio_interval([o["rps"] for o in a], [o["rps"] for o in b])


def _by_clients(cells: dict[Any, Outcomes]) -> list[tuple[Any, Outcomes]]:
    return sorted(cells.items(), key=lambda kv: int(kv[0]))


def costs_table(costs: dict[str, dict[str, dict[str, int]]], reference: str) -> str:
    return c.grouped_table(["endpoint", "app", "Python function calls per request",
                            f"calls - {reference}", "round trips per request"],
                           ((f"`{e}`", by_app, by_app) for e, by_app in costs.items()),
                           lambda by_app, name: [
                               by_app[name]["calls"], "-" if name == reference else
                               f"{by_app[name]['calls'] - by_app[reference]['calls']:+d}",
                               by_app[name]["round_trips"]])


def hot_table(endpoint: str, cells: dict[int, Outcomes], reference: str) -> str:
    return c.grouped_table([f"`{endpoint}`: clients", "app", "req/s",
                            f"{reference} / this app [95% interval]", "p50 ms", "p99 ms", "errors"],
                           ((n, by_app, by_app) for n, by_app in _by_clients(cells)),
                           lambda by_app, name: [
                               f"{_m(by_app[name], 'rps'):.0f}",
                               c.ratio(by_app[reference], by_app[name], _interval),
                               f"{_m(by_app[name], 'p50_ms'):.1f}",
                               f"{_m(by_app[name], 'p99_ms'):.1f}",
                               sum(o["errors"] for o in by_app[name])])


def hold_table(hold: Outcomes) -> str:
    rows = [[name, f"{_m(runs, 'rps'):.0f}", c.ratio(hold[UOW], runs, _interval),
             f"{_m(runs, 'p50_ms'):.0f}", f"{_m(runs, 'p99_ms'):.0f}",
             max(o["peak_in_use"] for o in runs), f"{_m(runs, 'mean_in_use'):.2f}",
             f"{_m(runs, 'mean_idle_in_transaction'):.2f}",
             format(c.median([1000 * o["idle_in_transaction_connection_seconds"]
                              / max(1, o["requests"]) for o in runs]), ".2f"),
             sum(o["errors"] for o in runs)] for name, runs in hold.items()]
    return c.markdown_table(["app", "req/s", f"{UOW} / this app [95% interval]", "p50 ms",
                             "p99 ms", "peak connections in use", "mean connections in use",
                             "mean idle in transaction", "idle-in-transaction ms per request",
                             "errors"], rows)


def _checks(quart: bool) -> list[tuple[str, str, float]]:
    """(the other app, the target, its limit) for each cell: at least that share of its req/s."""
    if quart:
        return [(QUART_BARE, f"throughput within {100 - round(100 * s.QUART_TARGET)}% of bare "
                 "AsyncSession", s.QUART_TARGET)]
    return [*((peer, f"throughput >= {peer}", 1.0) for peer in s.PEERS),
            (BARE, "within 5% of bare", 0.95)]


def _comparisons(results: dict[str, Any], quart: bool) -> Any:
    """(backend, endpoint, clients, other app, target, limit, interval) for every cell."""
    for backend, data in results.get("backends", {}).items():
        for endpoint, cells in data.get("quart" if quart else "hot", {}).items():
            if "noop" in endpoint:
                continue
            for connections, by_app in _by_clients(cells):
                for other, what, limit in _checks(quart):
                    interval = _interval(by_app[QUART_UOW if quart else UOW], by_app[other])
                    yield backend, endpoint, connections, other, what, limit, interval


def targets(results: dict[str, Any], quart: bool = False) -> list[tuple[str, str, str]]:
    """(where, target with its measured figure, verdict) for the WSGI apps, or the Quart apps."""
    return [c.target(f"{'Quart, ' * quart}{backend}, `{endpoint}`, c={connections}", what,
                     interval, limit, at_least=True)
            for backend, endpoint, connections, _, what, limit, interval
            in _comparisons(results, quart)]


def missed_table(results: dict[str, Any]) -> str:
    """The missed WSGI cells beside each side's Python calls per request (counted, so free of
    noise): where the cell is CPU-bound, throughput follows CPU per request, and the other
    app's calls / flask-uow's is the ratio the calls alone predict. Empty if none missed."""
    rows = []
    for backend, endpoint, connections, other, _, limit, interval in _comparisons(results, False):
        if c.verdict(interval, limit, at_least=True) != c.MISSED:
            continue
        calls = results["backends"][backend].get("costs", {}).get(endpoint)
        ours, theirs = (calls[UOW]["calls"], calls[other]["calls"]) if calls else (0, 0)
        rows.append([f"{backend}, `{endpoint}`, c={connections}, against {other}",
                     c.fmt_interval(interval), f"{ours} / {theirs}" if calls else "-",
                     f"{100 * (ours - theirs) / theirs:+.1f}%" if calls else "-",
                     f"{theirs / ours:.2f}x" if calls else "-"])
    headers = ["cell", "measured [95% interval]", f"Python calls per request, {UOW} / other",
               "extra calls", "throughput the calls alone predict"]
    return c.markdown_table(headers, rows) if rows else ""


def markdown(results: dict[str, Any], quart: bool = False) -> str:
    """The WSGI apps' tables (section 3), or the Quart apps' (section 6; empty if not run)."""

    def body(data: dict[str, Any]) -> list[str]:
        costs, parts = data.get("quart_costs" if quart else "costs"), []
        if costs:
            parts += ["Per request, counted:\n", costs_table(costs, QUART_BARE if quart else BARE),
                      ""]
        for endpoint, cells in data.get("quart" if quart else "hot", {}).items():
            parts += [hot_table(endpoint, cells, QUART_UOW if quart else UOW), ""]
        for endpoint, title in () if quart else HOLD_TITLES:
            if endpoint.name in data.get("hold", {}):
                parts += [title.format(**results), hold_table(data["hold"][endpoint.name]), ""]
        return parts if data.get("quart" if quart else "hot") else []

    return c.report(results, body, f"{'Quart' if quart else 'HTTP'} targets",
                    targets(results, quart), prefix="Quart, " * quart)


HOLD_TITLES = (  # the hold tables, with their titles
    (HOLD, "#### Connection hold, like with like: read, wait 50 ms, write, one transaction "
     "throughout in every app; pool size {hold_pool_size}, {hold_clients} clients, gunicorn "
     "`{hold_gunicorn}`\n"),
    (HOLD_SHORT, "#### Connection hold, short units around the external call (a different "
     "structure: a read-only unit to read, nothing open during the wait, a read-write unit to "
     "write), flask-uow and bare SQLAlchemy written the same way\n"),
)


if __name__ == "__main__":
    c.cli(__doc__, run, lambda r: markdown(r) + "\n" + markdown(r, quart=True), FULL, QUICK)
