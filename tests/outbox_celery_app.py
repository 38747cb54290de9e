"""The Celery app of the outbox tests' worker: ``celery -A tests.outbox_celery_app worker``.

The worker reads its database URL and queue from the environment the test gives it. With
``OUTBOX_TEST_SPANS_FILE`` set, it traces its tasks with opentelemetry-instrumentation-celery
and writes each finished span to that file, one JSON line each.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from celery import Celery

from flask_uow import Database
from flask_uow.celery import UnitTask

from .outbox_support import metadata, thing

BROKER_URL = os.environ.get("OUTBOX_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

celery_app = Celery("outbox_tests", broker=BROKER_URL)
celery_app.conf.task_default_queue = os.environ.get("OUTBOX_TEST_QUEUE", "flask-uow-outbox-tests")
celery_app.conf.task_acks_late = True
celery_app.conf.worker_prefetch_multiplier = 1

db = Database(os.environ.get("OUTBOX_TEST_DATABASE_URL", "sqlite://"), metadata=metadata)
db.outbox.publish_with(celery_app)


@celery_app.task(base=UnitTask, name="outbox_tests.record")
def record(name: str) -> None:
    """Insert a row: its effect must happen once per message, however often it arrives.

    A name starting with ``slow`` takes ``OUTBOX_TEST_SLOW_SECONDS`` (a worker can be
    killed in the middle of it).
    """
    db.session.execute(sa.insert(thing).values(name=name))
    if name.startswith("slow"):
        time.sleep(float(os.environ.get("OUTBOX_TEST_SLOW_SECONDS", "3")))


def _trace_to(path: str) -> None:
    """Trace this worker's tasks with Celery's OpenTelemetry instrumentation into ``path``."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class FileExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with open(path, "a") as file:
                for span in spans:
                    assert span.context is not None
                    found: dict[str, Any] = {
                        "name": span.name,
                        "trace_id": format(span.context.trace_id, "032x"),
                        "parent_id": None
                        if span.parent is None
                        else format(span.parent.span_id, "016x"),
                    }
                    file.write(json.dumps(found) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()


if os.environ.get("OUTBOX_TEST_SPANS_FILE"):
    _trace_to(os.environ["OUTBOX_TEST_SPANS_FILE"])
