"""OpenTelemetry: a span per transaction and savepoint, events, and metrics, on every backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import flask_uow.otel
from flask_uow import Database, Propagation, UnexpectedRollback

from .models import Item


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        found: list[Any] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry(db: Database) -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    flask_uow.otel.instrument(db, tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield Telemetry(exporter, reader, tracer_provider)
    flask_uow.otel.uninstrument(db)
    meter_provider.shutdown()
    tracer_provider.shutdown()


@pytest.fixture
def telemetry_providers() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider that keeps finished spans in memory, for a Database made in a test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_committed_unit_is_one_span_named_after_its_function_with_its_options(
    db: Database, telemetry: Telemetry, backend_name: str
) -> None:
    @db.transactional
    def open_account() -> None:
        db.session.add(Item(name="account"))

    open_account()
    [span] = telemetry.finished()
    assert span.name.startswith("uow test_a_committed_unit_is_one_span")
    assert span.name.endswith(".<locals>.open_account")
    found = attributes(span)
    assert found["flask_uow.kind"] == "outermost"
    assert found["flask_uow.propagation"] == "REQUIRED"
    assert found["flask_uow.read_only"] is False
    assert found["flask_uow.outcome"] == "committed"
    assert found["flask_uow.attempt"] == 1
    assert found["flask_uow.retries_left"] == 0
    assert found["flask_uow.statements"] >= 1
    assert found["code.file.path"] == __file__
    assert found["db.system.name"] == ("mysql" if backend_name == "mariadb" else backend_name)
    assert span.status.status_code is StatusCode.UNSET


def test_a_read_only_unit_at_an_isolation_level_says_so(
    db: Database, telemetry: Telemetry, backend_name: str
) -> None:
    level = "SERIALIZABLE" if backend_name != "sqlite" else None
    with db.unit_of_work(read_only=True, isolation_level=level):
        db.session.execute(sa.select(Item)).all()
    [span] = telemetry.finished()
    found = attributes(span)
    assert found["flask_uow.read_only"] is True
    assert found["flask_uow.outcome"] == "read_only"
    assert found.get("flask_uow.isolation_level") == level
    assert span.name == "uow test_a_read_only_unit_at_an_isolation_level_says_so"


def test_a_savepoint_is_a_child_span_and_a_joined_unit_has_none(
    db: Database, telemetry: Telemetry
) -> None:
    with db.unit_of_work():
        with db.unit_of_work():  # joined: no span of its own
            db.session.add(Item(name="outer"))
        with pytest.raises(sa.exc.IntegrityError):
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.add(Item(name="outer"))
        with db.unit_of_work(propagation=Propagation.NESTED):
            db.session.add(Item(name="inner"))
    failed, released, outer = telemetry.finished()
    assert outer.parent is None
    for savepoint in (failed, released):
        assert savepoint.parent is not None
        assert savepoint.parent.span_id == outer.context.span_id
        assert attributes(savepoint)["flask_uow.kind"] == "savepoint"
    assert attributes(failed)["flask_uow.outcome"] == "rolled_back"
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    assert attributes(released)["flask_uow.outcome"] == "released"
    assert attributes(outer)["flask_uow.outcome"] == "committed"


def test_a_unit_rolled_back_by_an_exception_records_it_and_fails_its_span(
    db: Database, telemetry: Telemetry
) -> None:
    with pytest.raises(KeyError):
        with db.unit_of_work():
            db.session.add(Item(name="lost"))
            raise KeyError("lost")
    [span] = telemetry.finished()
    assert attributes(span)["flask_uow.outcome"] == "rolled_back"
    assert span.status.status_code is StatusCode.ERROR
    [event] = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "KeyError"


def test_a_joined_failure_marks_the_transaction_doomed_with_an_event(
    db: Database, telemetry: Telemetry
) -> None:
    @db.transactional
    def refuse() -> None:
        raise ValueError("no")

    with pytest.raises(UnexpectedRollback):
        with db.unit_of_work():
            db.session.add(Item(name="doomed"))
            try:
                refuse()
            except ValueError:
                pass
    [span] = telemetry.finished()
    assert attributes(span)["flask_uow.outcome"] == "doomed"
    assert span.status.status_code is StatusCode.ERROR
    names = [event.name for event in span.events]
    assert names == ["flask_uow.doomed", "flask_uow.doomed"]  # by the joined unit; at the end
    assert "refuse" in str(dict(span.events[0].attributes or {})["flask_uow.doomed_by"])


def test_each_attempt_of_a_retried_unit_is_a_span_and_the_retry_an_event_and_a_count(
    db: Database, telemetry: Telemetry
) -> None:
    attempts: list[int] = []

    @db.transactional(retries=2)
    def flaky() -> None:
        attempts.append(1)
        db.session.add(Item(name=f"try-{len(attempts)}"))
        if len(attempts) == 1:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))

    flaky()
    first, second = telemetry.finished()
    assert attributes(first)["flask_uow.attempt"] == 1
    assert attributes(first)["flask_uow.retries_left"] == 2
    assert attributes(first)["flask_uow.outcome"] == "rolled_back"
    assert [event.name for event in first.events] == ["exception", "flask_uow.retry"]
    assert attributes(second)["flask_uow.attempt"] == 2
    assert attributes(second)["flask_uow.outcome"] == "committed"
    [retries] = telemetry.points("flask_uow.retries")
    assert retries.value == 1
    assert dict(retries.attributes) == {"error.type": "OperationalError"}


def test_sqlalchemy_statement_spans_nest_under_the_unit_span(
    db: Database, telemetry: Telemetry
) -> None:
    instrumentor = SQLAlchemyInstrumentor()
    # The instrumentation declares SQLAlchemy < 2.1 and works with 2.1's engine events.
    instrumentor.instrument(
        engine=db.engine, tracer_provider=telemetry.tracer_provider, skip_dep_check=True
    )
    try:
        with db.unit_of_work():
            db.session.add(Item(name="traced"))
            db.session.flush()
            db.session.execute(sa.select(Item)).all()
    finally:
        instrumentor.uninstrument()
    spans = telemetry.finished()
    (unit,) = [span for span in spans if span.name.startswith("uow ")]
    # The instrumentation wraps Engine.connect for every engine in the process: a background
    # thread of another engine can add a root "connect" span here, so those are told apart.
    connects = [span for span in spans if span.name == "connect"]
    statements = [span for span in spans if span is not unit and span.name != "connect"]
    assert len(statements) >= 2
    for statement in statements:
        assert statement.parent is not None
        assert statement.parent.span_id == unit.context.span_id
    assert any(c.parent is not None and c.parent.span_id == unit.context.span_id for c in connects)


def test_metrics_count_units_by_outcome_and_measure_duration_hold_and_idle_time(
    db: Database, telemetry: Telemetry
) -> None:
    with db.unit_of_work():
        db.session.execute(sa.select(Item)).all()
        time.sleep(0.05)
        db.session.execute(sa.select(Item)).all()
    with db.unit_of_work(read_only=True):
        pass  # no SQL: no connection held
    with pytest.raises(KeyError):
        with db.unit_of_work():
            raise KeyError("x")
    counted = {
        (point.attributes["flask_uow.outcome"], point.attributes["flask_uow.read_only"]):
        point.count
        for point in telemetry.points("flask_uow.unit.duration")
    }
    assert counted == {("committed", False): 1, ("read_only", True): 1, ("rolled_back", False): 1}
    [hold] = telemetry.points("flask_uow.connection.hold_time")
    [idle] = telemetry.points("flask_uow.connection.idle_time")
    assert hold.count == idle.count == 1  # only the unit that ran SQL held a connection
    assert idle.sum >= 0.05  # the sleep between its statements
    assert hold.sum >= idle.sum


def test_nothing_is_traced_before_instrument_or_after_uninstrument(db: Database) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with db.unit_of_work():
        pass
    assert db.runtime.observers == ()
    flask_uow.otel.instrument(db, tracer_provider=provider)
    assert flask_uow.otel.is_instrumented(db)
    with db.unit_of_work():
        pass
    flask_uow.otel.uninstrument(db)
    with db.unit_of_work():
        pass
    assert len(exporter.get_finished_spans()) == 1
    assert db.runtime.observers == ()
    assert not db.engine.dispatch.before_cursor_execute


def test_uow_otel_in_a_flask_config_instruments_the_database(backend_url: str) -> None:
    import flask

    db = Database()
    app = flask.Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_OTEL=True)
    db.init_app(app)
    assert flask_uow.otel.is_instrumented(db)
    flask_uow.otel.uninstrument(db)


def test_with_the_api_alone_units_run_and_no_span_is_made_current(db: Database) -> None:
    from opentelemetry import trace

    flask_uow.otel.instrument(db)  # the global providers: no SDK configured in this process
    try:
        with db.unit_of_work():
            assert not trace.get_current_span().get_span_context().is_valid
            db.session.add(Item(name="untraced"))
        with pytest.raises(KeyError):
            with db.unit_of_work():
                raise KeyError("still rolled back")
    finally:
        flask_uow.otel.uninstrument(db)
    assert db.stats.committed == 1 and db.stats.rolled_back == 1


def test_a_unit_ended_by_set_rollback_is_rolled_back_without_an_error_status(
    db: Database, telemetry: Telemetry
) -> None:
    with db.unit_of_work() as uow:
        db.session.add(Item(name="undone"))
        uow.set_rollback()
    [span] = telemetry.finished()
    assert attributes(span)["flask_uow.outcome"] == "rolled_back"
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


def test_instrumenting_again_sends_spans_to_the_new_providers_only(
    db: Database, telemetry: Telemetry
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flask_uow.otel.instrument(db, tracer_provider=provider)
    with db.unit_of_work():
        pass
    assert telemetry.finished() == []
    assert len(exporter.get_finished_spans()) == 1
    provider.shutdown()


def test_uninstrument_leaves_the_idle_warning_in_place(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    db.warn_idle(1)
    flask_uow.otel.instrument(db, tracer_provider=TracerProvider())
    flask_uow.otel.uninstrument(db)
    assert not flask_uow.otel.is_instrumented(db)
    with db.unit_of_work():
        db.session.execute(sa.select(Item)).all()
        time.sleep(0.02)  # idle in the transaction, longer than the 1 ms threshold
    assert any("idle in a transaction" in message for message in caplog.messages)
    db.warn_idle(None)


def test_a_per_request_units_span_says_which_request_opened_it(
    backend_url: str, telemetry_providers: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    import flask

    provider, exporter = telemetry_providers
    db = Database(metadata=Item.metadata)
    app = flask.Flask(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_PER_REQUEST=True)
    db.init_app(app)
    flask_uow.otel.instrument(db, tracer_provider=provider)
    app.get("/accounts/<int:number>")(lambda number: str(number))
    client = app.test_client()
    try:
        assert client.get("/accounts/1").status_code == 200
        assert client.get("/accounts/2").status_code == 200
    finally:
        flask_uow.otel.uninstrument(db)
        db.dispose()
    first, second = exporter.get_finished_spans()
    assert first.name == second.name == "uow unit"  # the path is not in the name: bounded
    assert attributes(first)["flask_uow.opened_at"] == "the per-request unit of GET /accounts/1"
    assert attributes(second)["flask_uow.opened_at"] == "the per-request unit of GET /accounts/2"
