"""Print the OpenTelemetry trace of one ledger transfer request, as an indented tree.

    pip install -e examples/ledger 'flask-uow[otel]' opentelemetry-sdk \
        opentelemetry-instrumentation-sqlalchemy
    python examples/ledger_trace.py               # SQLite in a temporary folder
    DATABASE_URL=postgresql+psycopg://... python examples/ledger_trace.py

The request span stands for what a web framework instrumentation would start; the unit of
work's span is flask-uow's, and the statement spans come from SQLAlchemy's own
instrumentation, nested under the unit because its span is current while it runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence

from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flask_uow.otel
from ledger.app import create_app
from ledger.database import db
from ledger.testing import LedgerClient

SHOWN = (
    "flask_uow.kind",
    "flask_uow.propagation",
    "flask_uow.read_only",
    "flask_uow.attempt",
    "flask_uow.outcome",
    "flask_uow.statements",
    "flask_uow.connection.hold_ms",
    "flask_uow.connection.idle_ms",
    "db.statement",
)


def render(spans: Sequence[ReadableSpan]) -> str:
    """The spans as a tree, children under their parent in start order, with durations."""
    children: dict[int | None, list[ReadableSpan]] = {}
    ids = {span.context.span_id for span in spans}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            lines.append(f"{'    ' * depth}{span.name}  [{took:.2f} ms]")
            attributes = dict(span.attributes or {})
            for key in SHOWN:
                if key in attributes:
                    value = attributes[key]
                    if isinstance(value, float):
                        value = f"{value:.2f}"
                    text = " ".join(str(value).split())
                    lines.append(f"{'    ' * depth}  | {key} = {text[:90]}")
            for event in span.events:
                lines.append(f"{'    ' * depth}  * event {event.name}")
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        url = os.environ.get("DATABASE_URL") or "sqlite:///" + os.path.join(folder, "ledger.db")
        app = create_app({"UOW_DATABASE_URL": url})
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("ledger_trace")
        with app.app_context():
            db.create_all()
            flask_uow.otel.instrument(db, tracer_provider=provider)
            instrumentor = SQLAlchemyInstrumentor()
            # skip_dep_check: the instrumentation declares SQLAlchemy < 2.1 and works with 2.1.
            instrumentor.instrument(engine=db.engine, tracer_provider=provider, skip_dep_check=True)
            try:
                client = LedgerClient(app.test_client())
                source, target = client.open_account(balance=5000), client.open_account()
                exporter.clear()
                with tracer.start_as_current_span("POST /transfers"):
                    client.transfer(source, target, 1250)
                print(render(exporter.get_finished_spans()))
            finally:
                instrumentor.uninstrument()
                flask_uow.otel.uninstrument(db)
                db.drop_all()
                db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
