"""OpenTelemetry spans for plan runs, step attempts and planner calls.

Spans go through the OpenTelemetry API, which is always installed (the MCP SDK
depends on it): without a configured SDK every span here is a no-op that
costs a few attribute writes. `setup_tracing()` configures the SDK from the
standard `OTEL_*` variables when the `otel` extra is installed; the CLI calls
it for `serve`, `run` and `plan` and calls what it returns before exiting, so
spans still buffered are exported.

The tree a run makes: `plan run` (a child of the host's `tools/call` span when
the host sent a W3C `traceparent` in the request's `_meta`; the SDK's server
middleware takes it from there) → `step attempt` per call → the SDK's own
`MCP send tools/call <tool>` client span, whose context the SDK injects into
the downstream request's `_meta` (`traceparent`, `tracestate`).

The OpenTelemetry API is imported with the first span, not with this module:
commands that only read the database never load it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanKind, Tracer

__all__ = [
    "ATTR",
    "AttemptSpan",
    "PlanRunSpan",
    "export_before_sigterm",
    "planner_span",
    "setup_tracing",
]

logger = logging.getLogger(__name__)

_tracer: Tracer | None = None


def _get_tracer() -> Tracer:
    """The tracer of taskorch's spans (a proxy until an SDK is set up, which it then follows)."""
    global _tracer
    if _tracer is None:
        from opentelemetry import trace

        _tracer = trace.get_tracer("taskorch")
    return _tracer


ATTR = {
    "plan_id": "taskorch.plan.id",
    "version": "taskorch.plan.version",
    "steps": "taskorch.plan.steps",
    "step_id": "taskorch.step.id",
    "server": "taskorch.step.server",
    "tool": "taskorch.step.tool",
    "attempt": "taskorch.step.attempt",
    "error_kind": "taskorch.error.kind",
    "outcome": "taskorch.outcome",
}
"""The attribute names taskorch sets, by short name (one home for their spelling)."""


def _mark(span: Span, outcome: str, error_kind: str | None, message: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(ATTR["outcome"], outcome)
    if error_kind is not None:
        span.set_attribute(ATTR["error_kind"], error_kind)
        span.set_attribute("error.type", error_kind)
        span.set_status(Status(StatusCode.ERROR, message))


def _end(span: Span, outcome: str, error_kind: str | None, message: str | None) -> None:
    _mark(span, outcome, error_kind, message)
    span.end()


def _raised(exc: BaseException) -> tuple[str, str]:
    """The outcome and error kind of a span an exception left: never the exception's text.

    Spans are exported as they are, not through the logs' `Scrubber` (which this
    module cannot reach): an exception's message may hold a secret a server
    echoed, so only its type is told.
    """
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "cancelled", "cancelled"
    return "error", type(exc).__name__


def _internal() -> SpanKind:
    """`SpanKind.INTERNAL`, the kind of every span of taskorch's own."""
    from opentelemetry.trace import SpanKind

    return SpanKind.INTERNAL


class _CurrentSpan:
    """A span made current for a block, ended by `finish()` (or by an exception leaving it).

    Ending apart from leaving the block lets the caller record how the work
    ended after the block, where the outcome is known; an exception (the task
    cancelled from outside, say) ends the span at once so it is never lost.
    """

    __slots__ = ("_ended", "_span", "_token")

    def __init__(self, name: str, attributes: Mapping[str, Any]) -> None:
        self._span = _get_tracer().start_span(
            name,
            kind=_internal(),
            attributes=dict(attributes),
            record_exception=False,  # its text is not scrubbed: see `_raised`
            set_status_on_exception=False,
        )
        self._token: object | None = None
        self._ended = False

    def __enter__(self) -> _CurrentSpan:
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        if exc is not None:
            self.finish(*_raised(exc))

    def finish(
        self, outcome: str, error_kind: str | None = None, message: str | None = None
    ) -> None:
        """Record how the work ended and end the span (later calls do nothing).

        Args:
            outcome: How it ended, such as `succeeded`, `failed`, `completed`.
            error_kind: The `ErrorKind` (or another short reason) when it failed.
            message: What went wrong, for the span's status.
        """
        if self._ended:
            return
        self._ended = True
        _end(self._span, outcome, error_kind, message)


class PlanRunSpan(_CurrentSpan):
    """The `plan run` span: one per run of a plan version, parent of its step attempts."""

    def __init__(self, plan_id: str, version: int, steps: int) -> None:
        """Start the span (it becomes current on `with`)."""
        attributes = {ATTR["plan_id"]: plan_id, ATTR["version"]: version, ATTR["steps"]: steps}
        super().__init__("plan run", attributes)


class AttemptSpan(_CurrentSpan):
    """The `step attempt` span: one per call of a step's tool; the SDK's call span nests in it."""

    def __init__(
        self, plan_id: str, version: int, step_id: str, server: str, tool: str, attempt: int
    ) -> None:
        """Start the span (it becomes current on `with`)."""
        attributes = {
            ATTR["plan_id"]: plan_id,
            ATTR["version"]: version,
            ATTR["step_id"]: step_id,
            ATTR["server"]: server,
            ATTR["tool"]: tool,
            ATTR["attempt"]: attempt,
        }
        super().__init__("step attempt", attributes)


@contextmanager
def planner_span(name: str, attributes: Mapping[str, str | int | None]) -> Iterator[Span]:
    """A span around a planner call (`plan` for a whole planning, `chat <model>` for one reply).

    `None` attributes are left out; an exception marks the span failed (with its
    type, not its text: see `_raised`) and is re-raised.
    """
    given = {key: value for key, value in attributes.items() if value is not None}
    tracer = _get_tracer()
    with tracer.start_as_current_span(
        name,
        kind=_internal(),
        attributes=given,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            _mark(span, *_raised(exc), None)
            raise


# --------------------------------------------------------------------------- setup

_OTLP_PROTOCOLS = ("http/protobuf", "grpc")


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    """The trace exporters the environment asks for; none unless it asks for some."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    given = env.get("OTEL_TRACES_EXPORTER", "")
    names = [name.strip().lower() for name in given.split(",") if name.strip()]
    if not names and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        # An endpoint without an exporter named: OTLP is the standard's default.
        names = ["otlp"]
    return [name for name in names if name != "none"]


def _make_exporter(name: str, env: Mapping[str, str]) -> Any:
    """One span exporter by its `OTEL_TRACES_EXPORTER` name; `None` (and a warning) if unusable."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # stderr: on stdio, stdout belongs to the protocol.
        return ConsoleSpanExporter(out=sys.stderr)
    if name != "otlp":
        logger.warning(
            "OTEL_TRACES_EXPORTER names %r, which taskorch does not know: use otlp, console "
            "or none",
            name,
        )
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            logger.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL is grpc, but the gRPC exporter is not installed: "
                "install opentelemetry-exporter-otlp-proto-grpc, or use http/protobuf; "
                "no traces are exported"
            )
            return None
        return GrpcExporter()
    if protocol != "http/protobuf":
        logger.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL %r is not supported: use http/protobuf or grpc; "
            "no traces are exported",
            protocol,
        )
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _noop() -> None:
    return None


def setup_tracing(
    env: Mapping[str, str] | None = None, *, service_name: str = "taskorch"
) -> Callable[[], None]:
    """Export spans as the standard `OTEL_*` variables say, when the `otel` extra is installed.

    Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`),
    or when an OTLP endpoint is set; `OTEL_SDK_DISABLED=true` or the exporter
    `none` turn it off. The OTLP exporter reads its own variables
    (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`, `..._TIMEOUT`, ...); the
    protocol is `http/protobuf` (default) or `grpc` (with the gRPC exporter
    installed). `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the
    service (else `taskorch`); the sampler is `OTEL_TRACES_SAMPLER`'s. A
    `TRACEPARENT` variable (W3C trace context) makes this process's spans
    children of the caller's, as other command-line tools do.

    Args:
        env: The environment; `os.environ` when `None`.
        service_name: `service.name` when `OTEL_SERVICE_NAME` does not set one.

    Returns:
        A function that flushes and shuts the exporters down (call it before the
        process exits; calling it again does nothing). With tracing off, a no-op.
    """
    environ = os.environ if env is None else env
    names = _exporter_names(environ)
    if not names:
        return _noop
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OpenTelemetry variables are set (OTEL_TRACES_EXPORTER or an OTLP endpoint) but "
            "the OpenTelemetry SDK is not installed: install taskorch[otel] to export traces"
        )
        return _noop
    exporters = [e for e in (_make_exporter(name, environ) for name in names) if e is not None]
    if not exporters:
        return _noop
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    from opentelemetry import context, propagate, trace

    trace.set_tracer_provider(provider)
    parent = environ.get("TRACEPARENT")
    if parent:
        carrier = {"traceparent": parent, "tracestate": environ.get("TRACESTATE", "")}
        context.attach(propagate.extract(carrier))
    done = False

    def shutdown() -> None:
        nonlocal done
        if not done:
            done = True
            provider.shutdown()

    return shutdown


def export_before_sigterm(shutdown: Callable[[], None]) -> None:
    """On SIGTERM, run `shutdown` (export what is buffered), then die of SIGTERM as before.

    Hosts stop a stdio server with SIGTERM, which ends a process without its
    exit hooks. Nothing else changes: the process still ends at once, as after a
    crash, which runs are built to survive. Does nothing when tracing is off
    (`shutdown` is the no-op), when SIGTERM already has a handler, off the main
    thread, or on Windows (no SIGTERM to catch).
    """
    if shutdown is _noop or sys.platform == "win32":
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: object) -> None:
        try:
            shutdown()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
