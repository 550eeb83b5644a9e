"""`setup_tracing`: off unless the OTEL_* variables ask, and clear about what it cannot do.

The configured path (a real exporter) is tested end to end in tests/e2e/test_traces.py,
in child processes: a tracer provider can be set only once per process.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

from executor.tracing import AttemptSpan, setup_tracing


def test_off_without_otel_variables() -> None:
    assert setup_tracing({})() is None
    assert setup_tracing({"OTEL_TRACES_EXPORTER": "none"})() is None
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
    assert setup_tracing(disabled)() is None


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "does not know"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            },
            "not supported",
        ),
    ],
)
def test_what_cannot_be_exported_is_said(
    env: dict[str, str], words: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="executor.tracing"):
        setup_tracing(env)()
    assert words in caplog.text
    # Nothing was set up: the API's provider is still the stand-in.
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"


def test_spans_are_harmless_without_an_sdk() -> None:
    with AttemptSpan("p1", 1, "s1", "srv", "tool", 1) as span:
        pass
    span.finish("succeeded")
    span.finish("failed", "timeout")  # a second finish does nothing
