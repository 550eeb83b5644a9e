"""Downstream MCP servers: their specs, the supervised pool that calls them, their health.

`pool` holds the calls, their limits and the catalog; `supervisor` each
server's session and restarts; `classify` the one table from failure to
`ErrorKind` and `Delivery`; `events` each session opened or lost, for the
statistics; `specs` one model per transport, each building its transport from
`transports/`; `redact` the secrets scrubbed from what servers send; `convert`
their answers as taskorch's models; `health` what is reported of each server.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.downstream.events import ServerEventFn as ServerEventFn
    from executor.downstream.health import ServerHealth as ServerHealth
    from executor.downstream.health import ServerStatus as ServerStatus
    from executor.downstream.pool import Pool as Pool
    from executor.downstream.redact import Scrubber as Scrubber
    from executor.downstream.specs import DEFAULT_MAX_CONCURRENCY as DEFAULT_MAX_CONCURRENCY
    from executor.downstream.specs import DEFAULT_MAX_TIMEOUT_S as DEFAULT_MAX_TIMEOUT_S
    from executor.downstream.specs import DEFAULT_TIMEOUT_S as DEFAULT_TIMEOUT_S
    from executor.downstream.specs import SPEC_TYPES as SPEC_TYPES
    from executor.downstream.specs import BaseServerSpec as BaseServerSpec
    from executor.downstream.specs import HttpServerSpec as HttpServerSpec
    from executor.downstream.specs import ServerSpec as ServerSpec
    from executor.downstream.specs import SseServerSpec as SseServerSpec
    from executor.downstream.specs import StdioServerSpec as StdioServerSpec
    from executor.downstream.specs import WebSocketServerSpec as WebSocketServerSpec
    from executor.downstream.specs import spec_type_for_url as spec_type_for_url
