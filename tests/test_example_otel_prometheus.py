"""The Prometheus example serves flask-uow's metrics through the OpenTelemetry SDK."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "otel_prometheus.py")


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otel_prometheus_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_example_prints_unit_metrics_in_prometheus_format(
    backend_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example()
    assert example.main(["--once", "--url", backend_url]) == 0
    out = capsys.readouterr().out
    count = "flask_uow_unit_duration_seconds_count"
    assert f'{count}{{flask_uow_outcome="committed",flask_uow_read_only="false"' in out
    assert f'{count}{{flask_uow_outcome="read_only",flask_uow_read_only="true"' in out
    for histogram in ("unit_duration", "connection_hold_time", "connection_idle_time"):
        assert f"flask_uow_{histogram}_seconds_bucket" in out
    assert 'le="0.001"' in out  # buckets in seconds, not the SDK's millisecond defaults
