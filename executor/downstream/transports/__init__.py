"""Client transports to downstream servers, one module each: stdio, http, sse, websocket.

They exist, rather than the SDK's own, for what a supervisor needs: a stdio
server in its own process group with its stderr bounded and scrubbed
(`stdio`, `stderr`), HTTP failures that keep their meaning (`http`), a failed
SSE POST that fails its own request (`sse`), and WebSocket, which the SDK
lacks (`websocket`). `base` holds what they share.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.downstream.transports.base import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
    from executor.downstream.transports.base import WatchedTransport as WatchedTransport
    from executor.downstream.transports.base import Wiring as Wiring
    from executor.downstream.transports.base import redact_url as redact_url
    from executor.downstream.transports.http import HttpNote as HttpNote
    from executor.downstream.transports.http import make_http_client as make_http_client
    from executor.downstream.transports.http import (
        streamable_http_transport as streamable_http_transport,
    )
    from executor.downstream.transports.sse import sse_transport as sse_transport
    from executor.downstream.transports.stderr import StderrLog as StderrLog
    from executor.downstream.transports.stdio import StdioProcess as StdioProcess
    from executor.downstream.transports.stdio import describe_exit as describe_exit
    from executor.downstream.transports.stdio import live_group_members as live_group_members
    from executor.downstream.transports.websocket import websocket_client as websocket_client
