"""The trace context stored with each message, so the consumer's span joins the producer's trace."""

from __future__ import annotations

import importlib.util

_HAVE_OTEL = importlib.util.find_spec("opentelemetry") is not None


def current_headers() -> dict[str, str]:
    """W3C ``traceparent``/``tracestate`` of the current span, or {} without OpenTelemetry."""
    if not _HAVE_OTEL:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
