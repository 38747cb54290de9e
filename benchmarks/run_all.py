"""Run every benchmark, then write BENCHMARKS.md from the prose of ``report.md`` (``make bench``).

    python benchmarks/run_all.py [--quick] [--from-json build/bench/results.json] [--force]

A full run writes BENCHMARKS.md only if the 1-minute load average (read before, and 90 s after
once the run's own load has faded) stayed under 1.5 x the usable cores; ``--quick`` writes
build/bench-quick/. Needs PostgreSQL on 127.0.0.1 (``BENCH_POSTGRESQL_URL``) and wrk.
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
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import operator  # noqa: E402
import re  # noqa: E402
import string  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks import _common as c  # noqa: E402
from benchmarks import growth, http, outbox, sqlite_concurrency, units  # noqa: E402

SETTLE_SECONDS = 90
TEMPLATE = os.path.join(_HERE, "report.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (make bench-quick)")
    parser.add_argument("--force", action="store_true", help="write BENCHMARKS.md even if the "
                        f"load average exceeded {c.LOAD_FACTOR} x cores")
    parser.add_argument("--from-json", metavar="FILE", help="measure nothing: render "
                        "BENCHMARKS.md again from the raw results of an earlier run")
    args = parser.parse_args(argv)

    quick = args.quick
    out = os.path.join(c.ROOT, "build", "bench-quick") if quick else c.ROOT
    raw = os.path.join(c.ROOT, "build", "bench-quick" if quick else "bench")
    for folder in (out, raw):
        os.makedirs(folder, exist_ok=True)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as saved:
            results = _int_keys(json.load(saved))
        return write_report(results, out, force=args.force or quick)

    started = time.monotonic()
    about = c.machine()
    c.log(f"run_all: {about['cpu']}, load {about['load average (1/5/15 min)']}")
    results: dict[str, Any] = {"machine": about, "quick": quick, "load_before": os.getloadavg(),
                               "started": datetime.datetime.now(datetime.UTC).isoformat()}
    pick = operator.attrgetter("QUICK" if quick else "FULL")
    both = units.run(pick(units), log=c.log)
    results["overhead"], results["overhead_async"] = both["sync"], both["async"]
    for key, program in (("growth", growth), ("sqlite", sqlite_concurrency), ("http", http),
                         ("outbox", outbox)):
        results[key] = program.run(pick(program), log=c.log)
    results["elapsed_seconds"] = time.monotonic() - started
    # The benchmark's own servers and wrk keep the 1-minute load average near 4 on two cores;
    # read it once they have been gone long enough (it decays by e in a minute).
    if not quick:
        c.log(f"waiting {SETTLE_SECONDS} s for the benchmark's own load to fade from the average")
        time.sleep(SETTLE_SECONDS)
        results["settle_seconds"] = SETTLE_SECONDS
    results["load_after"] = os.getloadavg()
    raw_path = os.path.join(raw, "results.json")
    with open(raw_path, "w", encoding="utf-8") as dump:
        json.dump(results, dump, indent=1, default=str)
    c.log(f"raw results in {raw_path}; total {results['elapsed_seconds']:.0f} s")
    return write_report(results, out, force=args.force or quick, raw=raw_path)


def _int_keys(value: Any) -> Any:
    """JSON turned the integer keys (depths, thread counts, concurrency) into strings."""
    if isinstance(value, dict):
        return {int(k) if k.isdigit() else k: _int_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value


def _load(value: Any) -> str:
    return " / ".join(f"{x:.2f}" for x in value)


def write_report(results: dict[str, Any], out: str, *, force: bool, raw: str = "") -> int:
    """BENCHMARKS.md in ``out`` from a run's results; refused when the machine was busy,
    unless ``force``."""
    busy = c.too_busy([tuple(results["load_before"]), tuple(results["load_after"])])
    if busy and not force:
        c.log(
            f"NOT writing BENCHMARKS.md: {busy}, so the ratios would mostly measure the other "
            "work. Run again on a quieter machine, or write it anyway with: "
            f".venv/bin/python benchmarks/run_all.py --from-json {raw or 'FILE'} --force"
        )
        return 3
    results["busy"] = busy
    path = os.path.join(out, "BENCHMARKS.md")
    with open(path, "w", encoding="utf-8") as md:
        md.write(render(results))
    c.log(f"wrote {path}")
    return 0


def render(results: dict[str, Any]) -> str:
    """The sections of ``report.md`` whose results are there, filled in."""
    with open(TEMPLATE, encoding="utf-8") as template:
        text = template.read().split("-->\n", 1)[1]
    names = ("head", *(name for name, *_ in SECTIONS), "closing")
    sections = dict(zip(names, re.split(r"\n(?=## [\dC])", text), strict=True))
    parts = [string.Template(_paragraphs(sections[name])).substitute(values).strip("\n")
             for name, values in section_values(results)]
    return "\n\n".join(parts) + "\n"


def _paragraphs(text: str) -> str:
    """A blank line between the template's lines, except between two list items."""
    lines = text.strip().split("\n")
    return "".join(a + ("\n" if a[:2] == b[:2] == "- " else "\n\n") for a, b in zip(
        lines, lines[1:], strict=False)) + lines[-1]


SECTIONS = (  # (section of report.md, key of its results, their tables), in the template's order
    ("overhead", "overhead", units.markdown),
    ("sqlite", "sqlite", sqlite_concurrency.markdown),
    ("http", "http", http.markdown),
    ("replicas", None, None),
    ("overhead_async", "overhead_async", units.markdown),
    ("quart", "http", lambda results: http.markdown(results, quart=True)),
    ("growth", "growth", growth.markdown),
    ("outbox", "outbox", outbox.markdown),
)


def section_values(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(section of report.md, the values it names), for the sections measured."""
    about, quick, settle = results["machine"], results["quick"], results.get("settle_seconds")
    common = {"flag": " --quick" if quick else "", "hypercorn": " ".join(http.s.QUART_HYPERCORN),
              "target_percent": round(100 * http.s.QUART_TARGET)}
    out: list[tuple[str, dict[str, Any]]] = [("head", {
        **common, "revision": about["flask-uow revision"],
        "command": "make bench-quick" if quick else "make bench",
        "started": results["started"][:16].replace("T", " "),
        "minutes": f"{results['elapsed_seconds'] / 60:.1f}",
        "quick_note": " **Quick mode: few short rounds per cell, for checking the harness only.**"
        * quick, "load_before": _load(results["load_before"]),
        "load_after": _load(results["load_after"]),
        "after": f"{settle} s after the last measurement." if settle else "after.",
        "busy_note": f" **Written with --force although {results['busy']}.**"
        * bool(results.get("busy")), "machine": c.markdown_table(["", ""], list(about.items())),
    })]
    for section, key, markdown in SECTIONS:
        data = results.get(key or "", {})
        tables = markdown(data) if markdown and data else ""
        if key is None or tables:
            settings = data.get("settings", {})
            chunk_ms = f"{settings.get('chunk_seconds', 0) * 1000:.0f}"
            out.append((section, {**common, **data, **settings, "chunk_ms": chunk_ms,
                                  "tables": tables}))
    out.append(("closing", {"tables": closing_note(results)}))
    return out


def closing_note(results: dict[str, Any]) -> str:
    rows = [(f"{prefix}, {b}", w, v) for key, prefix in (("overhead", "units"),
            ("overhead_async", "async units")) if key in results
            for b, w, v in units.targets(results[key])]
    for key, targets in (("growth", growth.targets), ("sqlite", sqlite_concurrency.targets),
                         ("http", lambda http_results: http.targets(http_results, quart=True)),
                         ("outbox", outbox.targets)):
        rows += targets(results[key]) if key in results else []
    text, http_rows = c.targets_table(rows) + "\n", http.targets(results.get("http", {}))
    if http_rows:
        verdicts = collections.Counter(v for *_, v in http_rows)
        missed = [f"- {w}: {t}" for w, t, v in http_rows if v == c.MISSED]
        text += (
            f"\nHTTP: {len(http_rows)} comparisons; {verdicts[c.MET]} met, {len(missed)} missed, "
            f"{verdicts[c.TIE]} ties within noise (a tie counts as *at least equal*), "
            f"{verdicts[c.NO_VERDICT]} without a verdict (too few rounds). "
            "Missed:\n\n" + ("\n".join(missed) or "- none") + "\n"
        )
    explained = http.missed_table(results.get("http", {}))
    if explained:
        text += (
            "\n### The missed HTTP cells beside their counted Python calls\n\n"
            "With wrk, gunicorn and the database sharing two cores, a cell from c=8 up is "
            "CPU-bound, so its throughput follows CPU per request. Python calls per request "
            "are counted, so free of noise: when the measured ratio sits at the one the calls "
            "predict, the cell shows that app doing less work per request (section 3's counted "
            "table says which), not noise; a measured ratio far below the prediction, with a "
            "wide interval, is load on the machine.\n\n" + explained + "\n"
        )
    return text


if __name__ == "__main__":
    raise SystemExit(main())
