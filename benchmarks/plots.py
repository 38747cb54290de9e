"""PNG plots of the HTTP results: throughput and p99 latency against concurrency."""

from __future__ import annotations

import os
from typing import Any

from ._common import median

STYLES = {
    "flask-uow (ledger)": {"color": "#1b7837", "marker": "o"},
    "Flask-SQLAlchemy": {"color": "#2166ac", "marker": "s"},
    "Flask-SQLAlchemy-Lite": {"color": "#5aae61", "marker": "D"},
    "Advanced Alchemy": {"color": "#762a83", "marker": "v"},
    "bare SQLAlchemy": {"color": "#b2182b", "marker": "^"},
}

SHORT = {
    "flask-uow (ledger)": "flask-uow\n(ledger)",
    "Flask-SQLAlchemy": "Flask-\nSQLAlchemy",
    "Flask-SQLAlchemy-Lite": "Flask-SQLA-\nLite",
    "Advanced Alchemy": "Advanced\nAlchemy",
    "bare SQLAlchemy": "bare\nSQLAlchemy",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def http_plots(results: dict[str, Any], out_dir: str, subtitle: str) -> dict[str, str]:
    """Write the plots into ``out_dir``; returns {what: file path}."""
    written = {}
    for backend, data in results["backends"].items():
        slug = "sqlite" if backend.startswith("SQLite") else "postgresql"
        for key, path in _backend_plots(
            data, results, out_dir, f"{backend}; {subtitle}", slug
        ).items():
            written[f"{key} {slug}"] = path
    return written


def _backend_plots(
    data: dict[str, Any], results: dict[str, Any], out_dir: str, subtitle: str, slug: str
) -> dict[str, str]:
    plt = _pyplot()
    from matplotlib import ticker

    os.makedirs(out_dir, exist_ok=True)
    written = {}
    rounds = results["settings"]["rounds"]
    for metric, label, filename, log_y in (
        ("rps", "requests per second (median)", f"http-throughput-{slug}.png", False),
        ("p99_ms", "p99 latency, ms (median, log scale)", f"http-p99-{slug}.png", True),
    ):
        fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
        for ax, (endpoint, cells) in zip(axes.flat, data["hot"].items(), strict=False):
            clients = sorted(int(c) for c in cells)
            for name, style in STYLES.items():
                values = [median([o[metric] for o in _cell(cells, c)[name]]) for c in clients]
                ax.plot(clients, values, label=name, linewidth=2, markersize=7, **style)
            ax.set_xscale("log", base=2)
            ax.set_xticks(clients, [str(c) for c in clients])
            ax.minorticks_off()
            if log_y:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            else:
                ax.set_ylim(bottom=0)
            ax.set_title(endpoint, fontsize=12)
            ax.set_xlabel("concurrent clients (wrk connections)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
        axes.flat[0].legend(loc="best")
        fig.suptitle(
            f"{'Throughput' if metric == 'rps' else 'p99 latency'} by concurrency, "
            f"median of {rounds} round{'s' if rounds != 1 else ''}, apps alternating\n{subtitle}",
            fontsize=12,
        )
        path = os.path.join(out_dir, filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written[metric] = path

    hold = data.get("hold", {}).get("POST /bench/hold/<id>")
    if hold:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.5), constrained_layout=True)
        names = list(STYLES)
        panels = (
            ("requests per second", lambda o: o["rps"]),
            ("peak / mean connections in use", None),
            (
                "idle-in-transaction ms per request",
                lambda o: (
                    1000 * o["idle_in_transaction_connection_seconds"] / max(1, o["requests"])
                ),
            ),
        )
        for ax, (title, value) in zip(axes, panels, strict=True):
            colors = [STYLES[n]["color"] for n in names]
            if value is None:
                peak = [max(o["peak_in_use"] for o in hold[n]) for n in names]
                mean = [median([o["mean_in_use"] for o in hold[n]]) for n in names]
                xs = range(len(names))
                ax.bar([x - 0.2 for x in xs], peak, width=0.4, color=colors, alpha=0.45)
                ax.bar([x + 0.2 for x in xs], mean, width=0.4, color=colors)
                ax.set_title(f"{title}\n(light: peak, dark: mean)", fontsize=11)
            else:
                heights = [median([value(o) for o in hold[n]]) for n in names]
                bars = ax.bar(range(len(names)), heights, color=colors)
                ax.bar_label(bars, fmt="%.1f" if "ms" in title else "%.0f")
                ax.set_title(title, fontsize=11)
            ax.set_xticks(range(len(names)), [SHORT[n] for n in names])
            ax.grid(alpha=0.3, axis="y")
        fig.suptitle(
            "Read, wait 50 ms, write, one transaction throughout: "
            f"pool size {results['hold_pool_size']}, "
            f"{results['hold_clients']} clients\n{subtitle}",
            fontsize=12,
        )
        path = os.path.join(out_dir, f"http-connection-hold-{slug}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written["hold"] = path
    return written


def _cell(cells: dict[Any, Any], clients: int) -> dict[str, list[dict[str, Any]]]:
    return cells[clients] if clients in cells else cells[str(clients)]
