"""`setup_tracing`: off unless the OTEL_* variables ask, and clear about what it cannot do.

The configured path (a real exporter) is tested end to end in tests/e2e/test_traces.py,
in child processes: a tracer provider can be set only once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from executor import tracing
from executor.downstream.redact import Scrubber
from executor.tracing import AttemptSpan, PlanRunSpan, planner_span, setup_tracing


def test_off_without_otel_variables() -> None:
    assert setup_tracing({}) is tracing._noop
    assert setup_tracing({"OTEL_TRACES_EXPORTER": "none"}) is tracing._noop
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
    assert setup_tracing(disabled) is tracing._noop
    assert setup_tracing({})() is None


def test_on_with_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tracer provider can be set once per process: keep the one set up here to this test.
    installed: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    shutdown = setup_tracing({"OTEL_TRACES_EXPORTER": "console"})
    assert shutdown is not tracing._noop
    (provider,) = installed
    assert isinstance(provider, TracerProvider)
    shutdown()
    shutdown()  # a second call does nothing


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


@pytest.mark.anyio  # the spans tell cancellation apart, which takes an event loop
async def test_spans_are_harmless_without_an_sdk() -> None:
    host = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(host)))
    try:
        with AttemptSpan("p1", 1, "s1", "srv", "tool", 1) as span:
            # Nothing is recorded, and the host's trace context still flows downstream.
            current = trace.get_current_span()
            assert not current.is_recording()
            assert current.get_span_context() == host
        span.finish("succeeded")
        span.finish("failed", "timeout")  # a second finish does nothing
        with pytest.raises(ValueError, match="boom"), AttemptSpan("p1", 1, "s1", "srv", "t", 2):
            raise ValueError("boom")  # not swallowed
        assert trace.get_current_span().get_span_context() == host  # the block's context left
    finally:
        otel_context.detach(token)


SECRET = "sk-live-0123456789abcdef"
"""A configured secret: what the logs' `Scrubber` would take out."""


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The spans taskorch ends, kept in memory (its tracer from a provider of this test's own)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("taskorch"))
    yield exporter
    provider.shutdown()


def _texts(span: ReadableSpan) -> list[str]:
    """Every text a span exports: its status, attributes, and its events' names and attributes."""
    texts = [span.status.description or ""]
    texts += [f"{key}={value!r}" for key, value in (span.attributes or {}).items()]
    for event in span.events:
        texts.append(event.name)
        texts += [f"{key}={value!r}" for key, value in (event.attributes or {}).items()]
    return texts


@pytest.mark.anyio
async def test_a_failure_exports_its_kind_but_not_its_message(
    exported: InMemorySpanExporter,
) -> None:
    assert Scrubber([SECRET]).text(f"token {SECRET}") == "token [redacted]"

    def fail() -> None:
        try:
            raise KeyError(f"the header was Bearer {SECRET}")
        except KeyError as cause:
            raise RuntimeError(f"the call with {SECRET} failed") from cause

    with pytest.raises(RuntimeError), PlanRunSpan("p1", 1, 2):
        fail()
    with pytest.raises(RuntimeError), AttemptSpan("p1", 1, "s1", "srv", "tool", 1):
        fail()
    with pytest.raises(RuntimeError), planner_span("chat m", {"gen_ai.request.model": "m"}):
        fail()
    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == ["plan run", "step attempt", "chat m"]
    for span in spans:
        assert not [text for text in _texts(span) if SECRET in text], span.name
        assert span.status.status_code == trace.StatusCode.ERROR, span.name
        assert span.attributes is not None
        assert span.attributes["error.type"] == "RuntimeError", span.name
        assert span.attributes["taskorch.error.kind"] == "RuntimeError", span.name
        assert span.attributes["taskorch.outcome"] == "error", span.name
