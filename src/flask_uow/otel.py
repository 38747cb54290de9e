"""OpenTelemetry for units of work: a span per transaction and savepoint, and metrics.

Install the extra (``pip install flask-uow[otel]``, which brings ``opentelemetry-api``),
configure an SDK as usual, then turn it on for a Database::

    import flask_uow.otel
    flask_uow.otel.instrument(db)      # or UOW_OTEL = True in a Flask app's config

Nothing is imported, listened to or measured until ``instrument()`` is called.

Spans: one per outermost unit and one per savepoint (``Propagation.NESTED``), named
``uow <function>`` after the decorated function or the function holding the ``with``.
A span is the current span while its unit runs, so the statement spans of SQLAlchemy's
own instrumentation nest under it. Attributes (``flask_uow.*``): ``kind``,
``propagation``, ``read_only``, ``isolation_level``, ``attempt``, ``retries_left``,
``outcome`` (committed, read_only, rolled_back, doomed, outcome_unknown, released),
``statements``, ``connection.hold_ms`` and ``connection.idle_ms``; plus ``code.*`` for
where the unit was opened. Events: ``flask_uow.retry`` on an attempt that will run again,
``flask_uow.doomed`` on the span of the transaction a joined unit doomed.

Metrics, with the labels ``flask_uow.outcome`` and ``flask_uow.read_only`` only (bounded):
``flask_uow.unit.duration``, ``flask_uow.connection.hold_time`` and
``flask_uow.connection.idle_time`` histograms (seconds) for outermost units (the duration's
count is the number of units ended, by outcome), and the ``flask_uow.retries`` counter
(label ``error.type``).
"""

from __future__ import annotations

import sys
from types import CodeType
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Span, SpanKind, StatusCode
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "flask_uow.otel needs the OpenTelemetry API: pip install 'flask-uow[otel]'"
    ) from error

from ._lifecycle import Outcome, UnitKind
from ._watch import UnitTrace, release_if_unused, watcher_for

if TYPE_CHECKING:
    from ._database import Database
    from ._unit import UnitOfWork

__all__ = ["instrument", "uninstrument", "is_instrumented"]

_FAILED = frozenset({Outcome.ROLLED_BACK, Outcome.DOOMED, Outcome.OUTCOME_UNKNOWN})
_ALWAYS_ERROR = frozenset({Outcome.DOOMED, Outcome.OUTCOME_UNKNOWN})
_TRACED = frozenset({UnitKind.OUTERMOST, UnitKind.SAVEPOINT})

SECONDS_BUCKETS = [
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
]
"""Histogram boundaries (seconds) suggested to the SDK: from half a millisecond to 10 s."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flask-uow")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


class OpenTelemetryConsumer:
    """Makes spans and records metrics for the units a Watcher reports."""

    def __init__(
        self, tracer_provider: trace.TracerProvider | None, meter_provider: Any | None
    ) -> None:
        version = _version()
        self.tracer = trace.get_tracer("flask_uow", version, tracer_provider=tracer_provider)
        meter = metrics.get_meter("flask_uow", version, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "flask_uow.unit.duration",
            unit="s",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
            description="Time from entering an outermost "
            "unit of work to its end (COMMIT or ROLLBACK done, session closed).",
        )
        self.hold_time = meter.create_histogram(
            "flask_uow.connection.hold_time",
            unit="s",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
            description="Time an outermost unit "
            "held a database connection, from its first statement to its end.",
        )
        self.idle_time = meter.create_histogram(
            "flask_uow.connection.idle_time",
            unit="s",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
            description="Time an outermost unit "
            "held its connection in a transaction with no statement running.",
        )
        self.retries = meter.create_counter(
            "flask_uow.retries",
            unit="{retry}",
            description="Units run again by @db.transactional(retries=...) after a transient "
            "error.",
        )
        self.spans: dict[UnitOfWork, tuple[Span, object]] = {}
        self._labels: dict[tuple[Outcome, bool], dict[str, Any]] = {}
        self._origins: dict[object, tuple[str, dict[str, Any]]] = {}

    def unit_entered(self, unit: UnitOfWork) -> None:
        kind = unit.kind
        if kind not in _TRACED:
            return
        origin = unit.origin
        described = self._origins.get(origin)
        if described is None:
            described = _describe(origin)
            if isinstance(origin, tuple):  # code and line: bounded, unlike descriptions
                self._origins[origin] = described
        name, code_attributes = described
        attributes: dict[str, Any] = {
            "flask_uow.kind": kind.value,
            "flask_uow.propagation": unit.propagation.name,
            "flask_uow.read_only": unit.read_only,
            "flask_uow.attempt": unit.attempt,
            "flask_uow.retries_left": unit.retries_left,
            **code_attributes,
        }
        if unit.isolation_level is not None:
            attributes["flask_uow.isolation_level"] = unit.isolation_level
        engine = unit.root.engine
        if engine is not None:
            attributes["db.system.name"] = engine.dialect.name
        span = self.tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        # With no SDK the span is invalid: there is nothing to make current or to end.
        if span.is_recording() or span.get_span_context().is_valid:
            token = otel_context.attach(trace.set_span_in_context(span))
            self.spans[unit] = (span, token)

    def unit_ended(self, unit: UnitOfWork, unit_trace: UnitTrace | None) -> None:
        outcome = unit.outcome
        assert outcome is not None
        entry = self.spans.pop(unit, None)
        if entry is not None:
            self._end_span(unit, outcome, unit_trace, *entry)
        elif unit.kind is UnitKind.JOINED and outcome is Outcome.ROLLED_BACK:
            trace.get_current_span().add_event(
                "flask_uow.doomed", {"flask_uow.doomed_by": str(unit.opened_at)}
            )
        if unit_trace is not None and unit.kind is UnitKind.OUTERMOST:
            key = (outcome, unit.read_only)
            labels = self._labels.get(key)
            if labels is None:
                labels = self._labels[key] = {
                    "flask_uow.outcome": outcome.value,
                    "flask_uow.read_only": unit.read_only,
                }
            duration = unit_trace.duration
            if duration is not None:
                self.duration.record(duration, labels)
            if unit_trace.acquired is not None:
                self.hold_time.record(unit_trace.hold_time, labels)
                self.idle_time.record(unit_trace.idle_time, labels)

    def _end_span(
        self,
        unit: UnitOfWork,
        outcome: Outcome,
        unit_trace: UnitTrace | None,
        span: Span,
        token: object,
    ) -> None:
        if unit_trace is None:
            span.set_attribute("flask_uow.outcome", outcome.value)
        else:
            span.set_attributes(
                {
                    "flask_uow.outcome": outcome.value,
                    "flask_uow.statements": unit_trace.statements,
                    "flask_uow.connection.hold_ms": unit_trace.hold_time * 1000,
                    "flask_uow.connection.idle_ms": unit_trace.idle_time * 1000,
                }
            )
        if outcome in _FAILED:
            error = sys.exception()
            if error is not None:
                span.record_exception(error)
                if unit.will_retry(error):
                    span.add_event(
                        "flask_uow.retry",
                        {
                            "flask_uow.next_attempt": unit.attempt + 1,
                            "exception.type": type(error).__name__,
                        },
                    )
                span.set_status(StatusCode.ERROR, f"{outcome.value}: {type(error).__name__}")
            elif outcome in _ALWAYS_ERROR:
                span.set_status(StatusCode.ERROR, outcome.value)
            if outcome is Outcome.DOOMED:
                span.add_event("flask_uow.doomed")
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()

    def unit_retrying(self, unit: UnitOfWork, error: BaseException, attempt: int) -> None:
        self.retries.add(1, {"error.type": type(error).__name__})


def _describe(origin: object) -> tuple[str, dict[str, Any]]:
    if isinstance(origin, tuple):
        code, line = origin
        assert isinstance(code, CodeType)
        return f"uow {code.co_qualname}", {
            "code.function.name": code.co_qualname,
            "code.file.path": code.co_filename,
            "code.line.number": line,
        }
    if isinstance(origin, str):
        # A description such as "the per-request unit of GET /path": not a span name (its
        # path would make names unbounded), but worth keeping.
        return "uow unit", {"flask_uow.opened_at": origin}
    return "uow unit", {}


def instrument(
    db: Database,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: Any | None = None,
) -> None:
    """Trace and measure ``db``'s units with OpenTelemetry (the global providers by default).

    Calling it again replaces the providers. Costs nothing for units before it is called.
    """
    watcher = watcher_for(db.runtime)
    for consumer in watcher.consumers:
        if isinstance(consumer, OpenTelemetryConsumer):
            watcher.remove(consumer)
    watcher.add(OpenTelemetryConsumer(tracer_provider, meter_provider))


def uninstrument(db: Database) -> None:
    """Stop tracing and measuring ``db``'s units."""
    for observer in db.runtime.observers:
        consumers = getattr(observer, "consumers", ())
        for consumer in consumers:
            if isinstance(consumer, OpenTelemetryConsumer):
                observer.remove(consumer)  # type: ignore[attr-defined]
    release_if_unused(db.runtime)


def is_instrumented(db: Database) -> bool:
    """True while ``instrument(db)`` is in force."""
    return any(
        isinstance(consumer, OpenTelemetryConsumer)
        for observer in db.runtime.observers
        for consumer in getattr(observer, "consumers", ())
    )
