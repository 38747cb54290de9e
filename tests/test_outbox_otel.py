"""OpenTelemetry of the outbox: the trace context travels with the message; spans, metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flask_uow.outbox.otel
from flask_uow import Database
from flask_uow.outbox import Message

from .outbox_support import Collector, drop_database, make_database


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    drop_database(database)


def metric_points(reader: InMemoryMetricReader) -> dict[str, float]:
    found: dict[str, float] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count  # type: ignore[union-attr]
                    found[metric.name] = float(value)
    return found


def test_the_message_carries_the_enqueue_span_s_trace_and_batches_are_measured(
    odb: Database,
) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    flask_uow.outbox.otel.instrument(
        odb, tracer_provider=tracer_provider, meter_provider=MeterProvider([reader])
    )
    failed_once: list[Message] = []

    def target(messages: list[Message]) -> None:
        if not failed_once:
            failed_once.extend(messages)
            raise ConnectionError("broker down")
        collected(messages)

    collected = Collector()
    odb.outbox.publish_with(target)
    odb.outbox.retry_base_seconds = 0.0
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request_span, odb.unit_of_work():
        message_id = odb.enqueue("mail.send", 1)
    assert odb.outbox.relay_once() == 1
    (message,) = collected.messages
    assert message.id == message_id
    trace_id = format(request_span.get_span_context().trace_id, "032x")
    assert message.headers["traceparent"].split("-")[1] == trace_id
    spans = {span.name: span for span in exporter.get_finished_spans()}
    enqueue = spans["outbox enqueue mail.send"]
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == request_span.get_span_context().span_id
    enqueue_context = enqueue.get_span_context()
    assert enqueue_context is not None
    assert message.headers["traceparent"].split("-")[2] == format(enqueue_context.span_id, "016x")
    batches = [span for span in exporter.get_finished_spans() if span.name == "outbox publish"]
    assert [span.attributes["flask_uow.outbox.lane"] for span in batches] == [  # type: ignore[index]
        "immediate",
        "relay",
    ]
    points = metric_points(reader)
    assert points["flask_uow.outbox.published"] == 1
    assert points["flask_uow.outbox.publish_failures"] == 1
    assert points["flask_uow.outbox.commit_to_publish"] == 1
    assert points["flask_uow.outbox.backlog"] == 0
