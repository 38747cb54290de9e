"""OpenTelemetry for the outbox: spans at enqueue and per published batch, and metrics.

``flask_uow.outbox.otel.instrument(db)`` turns it on (nothing is measured before).

Spans: ``outbox enqueue <task>`` (kind PRODUCER) around each ``enqueue``; the trace
context stored with the message is that span's, so the consumer's span (Celery's own
instrumentation reads the ``traceparent`` header) joins the producer's trace. One
``outbox publish`` span per batch, with ``flask_uow.outbox.lane`` (immediate or relay),
``flask_uow.outbox.messages`` and ``flask_uow.outbox.failures``.

Metrics: counters ``flask_uow.outbox.published``, ``flask_uow.outbox.publish_failures``
and ``flask_uow.outbox.parked``; histogram ``flask_uow.outbox.commit_to_publish`` (s);
gauges ``flask_uow.outbox.backlog`` and ``flask_uow.outbox.oldest_pending_age`` (s), read
from the database when the metrics are collected.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "flask_uow.outbox.otel needs the OpenTelemetry API: pip install 'flask-uow[otel]'"
    ) from error

from ._message import Message

if TYPE_CHECKING:
    from .._database import Database
    from ._outbox import Outbox

__all__ = ["instrument"]


def instrument(db: Database, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Trace and measure ``db.outbox`` (global providers unless given)."""
    db.outbox.telemetry = Telemetry(db.outbox, tracer_provider, meter_provider)


class Telemetry:
    """The spans and instruments of one outbox."""

    def __init__(self, outbox: Outbox, tracer_provider: Any, meter_provider: Any) -> None:
        self.outbox = outbox
        self.tracer = trace.get_tracer("flask_uow.outbox", tracer_provider=tracer_provider)
        meter = metrics.get_meter("flask_uow.outbox", meter_provider=meter_provider)
        self.published = meter.create_counter(
            "flask_uow.outbox.published", unit="{message}", description="Messages published"
        )
        self.failures = meter.create_counter(
            "flask_uow.outbox.publish_failures", unit="{message}", description="Failed publishes"
        )
        self.parked = meter.create_counter(
            "flask_uow.outbox.parked", unit="{message}", description="Messages parked"
        )
        self.latency = meter.create_histogram(
            "flask_uow.outbox.commit_to_publish",
            unit="s",
            description="From enqueue (committed) to the broker's confirmation",
        )
        meter.create_observable_gauge(
            "flask_uow.outbox.backlog", callbacks=[self._backlog], unit="{message}"
        )
        meter.create_observable_gauge(
            "flask_uow.outbox.oldest_pending_age", callbacks=[self._oldest], unit="s"
        )

    @contextmanager
    def enqueue_span(self, task: str, key: str | None) -> Iterator[None]:
        attributes = {"flask_uow.outbox.task": task}
        if key is not None:
            attributes["flask_uow.outbox.key"] = key
        with self.tracer.start_as_current_span(
            f"outbox enqueue {task}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            yield

    @contextmanager
    def batch_span(self, lane: str, messages: list[Message]) -> Iterator[Any]:
        with self.tracer.start_as_current_span(
            "outbox publish",
            kind=SpanKind.PRODUCER,
            attributes={"flask_uow.outbox.lane": lane, "flask_uow.outbox.messages": len(messages)},
        ) as span:
            yield span

    def record(self, published: list[Message], failed: int, parked: int) -> None:
        now = time.time()
        if published:
            self.published.add(len(published))
            for message in published:
                if message.enqueued_at:
                    self.latency.record(max(0.0, now - message.enqueued_at))
        if failed:
            self.failures.add(failed)
        if parked:
            self.parked.add(parked)

    def _backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(self.outbox.status().pending)]
        except Exception:  # no database reachable from here (no app context): no reading
            return []

    def _oldest(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            age = self.outbox.status().oldest_pending_age
        except Exception:
            return []
        return [Observation(age or 0.0)]
