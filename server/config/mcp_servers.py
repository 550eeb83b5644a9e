"""The `mcpServers` table: Claude Desktop's server entries, read as it writes them.

- `{"command", "args", "env", "cwd"}` is a stdio server;
- `{"url", "headers"}` is a streamable HTTP server, unless the URL's path ends
  in `/sse` (the older HTTP+SSE transport) or its scheme is `ws://`/`wss://`;
- a `type` (or `transport`, or Cline's `transportType`) key picks the
  transport explicitly;
- optional: `timeout_s`, `max_concurrency`, `allowed_tools`, `denied_tools`;
  and for a streamable HTTP server `auth`, its OAuth settings (see
  `executor.oauth.config`; secret like `headers`);
- `"disabled": true` skips the server; keys other clients add and taskorch has
  no use for are ignored with a DEBUG line; any other key is an error, so that
  a typo such as `arg` is caught instead of silently dropped.

The `env` of a stdio server and the `headers` of a remote one become
`SecretStr` in the specs (`executor.downstream.specs`), which also say what a
config may call each transport: a new transport is a new spec.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr, ValidationError

from executor._utils import json_kind
from executor.downstream.specs import SPEC_TYPES, AnyServerSpec, ServerSpec, spec_type_for_url
from executor.ids import BUILTIN_SERVER
from server.config.env import expand
from server.config.errors import Location, ParseContext, check_object, from_validation
from server.config.keys import camel
from server.config.model import RESERVED_RULE, SERVER_NAME, SERVER_NAME_RULE

__all__ = ["parse_servers"]

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What a config may call each transport, all from the specs.
_SPEC_CLASSES: dict[str, type[AnyServerSpec]] = {
    cls.model_fields["type"].default: cls for cls in SPEC_TYPES
}
_TRANSPORTS = {name: kind for kind, cls in _SPEC_CLASSES.items() for name in (kind, *cls.aliases)}
_TRANSPORT_CHOICES = ", ".join(
    f"{kind} (or {cls.aliases[0]})" if cls.aliases else kind for kind, cls in _SPEC_CLASSES.items()
)
_TYPE_KEYS = ("type", "transport", "transportType")
# Values whose environment expansions are secrets: the spec fields of secret values, and
# `auth` (an OAuth client secret sits inside it).
_SECRET_KEYS = frozenset(
    name
    for cls in SPEC_TYPES
    for name, field in cls.model_fields.items()
    if field.annotation == dict[str, SecretStr]
) | {"auth"}
# Keys other MCP clients put in server entries that taskorch has no use for.
_HARMLESS_SERVER_KEYS = frozenset(
    {
        "autoApprove",
        "alwaysAllow",
        "description",
        "displayName",
        "title",
        "icon",
        "timeout",
        "comment",
        "_comment",
        "$comment",
        "notes",
    }
)


def _server_key_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for cls in _SPEC_CLASSES.values():
        for name in cls.model_fields:
            if name != "type":
                aliases[name] = name
                aliases[camel(name)] = name
    return aliases


_SERVER_KEYS = _server_key_aliases()
_SERVER_KEY_LIST = ", ".join(
    sorted({*(n for n in _SERVER_KEYS.values()), *_TYPE_KEYS[:2], "disabled"})
)


def _parse_server(name: str, raw: object, ctx: ParseContext, path: Location) -> ServerSpec | None:
    """Read one `mcpServers` entry; `None` when it is disabled."""
    if not isinstance(raw, Mapping):
        raise ctx.error(path, f"a server entry must be an object, not {json_kind(raw)}")
    check_object(raw, ctx, path)
    if _is_disabled(raw, ctx, path):
        logger.debug("%s: server %r is disabled; skipping it", ctx.source, name)
        return None
    entries, spelt, transport = _server_keys(name, raw, ctx, path)
    kind = _pick_transport(transport, entries, ctx, path)
    cls = _SPEC_CLASSES[kind]
    for canonical, key in spelt.items():
        if canonical not in cls.model_fields:
            raise ctx.error(
                (*path, key), f"not used by a {kind} server; {_mismatch_hint(kind, canonical)}"
            )
    try:
        spec = cls.model_validate({**entries, "type": kind})
    except ValidationError as exc:
        error = from_validation(exc, ctx, path, raw, cls)
    else:
        return spec
    raise error


def _is_disabled(raw: Mapping[str, Any], ctx: ParseContext, path: Location) -> bool:
    if "disabled" not in raw:
        return False
    disabled = expand(raw["disabled"], ctx, (*path, "disabled"))
    if not isinstance(disabled, bool):
        raise ctx.error((*path, "disabled"), "must be true or false")
    return disabled


def _server_keys(
    name: str, raw: Mapping[str, Any], ctx: ParseContext, path: Location
) -> tuple[dict[str, Any], dict[str, str], tuple[str, str] | None]:
    """Expand a server entry's values under their field names.

    Returns:
        The values by field name, the key each was spelt as, and the transport
        asked for as (the key that gave it, its value), if any.
    """
    entries: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    transport: tuple[str, str] | None = None
    ignored: list[str] = []
    for key, value in raw.items():
        if key == "disabled":
            continue
        if key in _TYPE_KEYS:
            given = expand(value, ctx, (*path, key))
            if not isinstance(given, str):
                raise ctx.error(
                    (*path, key), f"must be a string naming one of {_TRANSPORT_CHOICES}"
                )
            if transport is not None and _transport_of(given) != _transport_of(transport[1]):
                raise ctx.error((*path, key), f"disagrees with {transport[0]!r}; keep one")
            transport = (key, given)
            continue
        canonical = _SERVER_KEYS.get(key)
        if canonical is None:
            if key in _HARMLESS_SERVER_KEYS:
                ignored.append(key)
                continue
            raise ctx.error(
                (*path, key),
                f"unknown key; a server entry takes {_SERVER_KEY_LIST}. "
                "Remove it or fix its spelling",
            )
        if canonical in spelt:
            raise ctx.error(
                (*path, key), f"the same key as {spelt[canonical]!r} (another spelling); keep one"
            )
        spelt[canonical] = key
        value = expand(value, ctx, (*path, key), secret=canonical in _SECRET_KEYS)
        if canonical == "url" and isinstance(value, str):
            # Schemes are case-insensitive; the specs' patterns are not.
            value = _SCHEME.sub(lambda m: m.group(0).lower(), value.strip(), count=1)
        entries[canonical] = value
    if ignored:
        logger.debug(
            "%s: server %r: ignoring keys taskorch does not use: %s",
            ctx.source,
            name,
            ", ".join(ignored),
        )
    return entries, spelt, transport


def _transport_of(given: str) -> str | None:
    return _TRANSPORTS.get(given.strip().lower())


def _pick_transport(
    transport: tuple[str, str] | None, entries: Mapping[str, Any], ctx: ParseContext, path: Location
) -> str:
    if transport is not None:
        kind = _transport_of(transport[1])
        if kind is None:
            raise ctx.error(
                (*path, transport[0]),
                f"unknown transport {transport[1]!r}; use one of {_TRANSPORT_CHOICES}",
            )
        return kind
    if "command" in entries and "url" in entries:
        raise ctx.error(
            path,
            "has both command and url; a server is either a command to run (stdio) "
            "or a url to connect to: keep one",
        )
    if "command" in entries:
        return "stdio"
    if "url" not in entries:
        raise ctx.error(
            path,
            "has neither command nor url; give command (and args) to run a stdio server, "
            "or url for a remote one",
        )
    url = entries["url"]
    if not isinstance(url, str):
        raise ctx.error((*path, "url"), "must be a string")
    claimed = spec_type_for_url(url)
    # Anything no transport claims is left to the HTTP spec, whose check names the fault.
    return "http" if claimed is None else str(claimed.model_fields["type"].default)


def _mismatch_hint(kind: str, key: str) -> str:
    if kind == "stdio":
        return "remove it (a stdio server takes command, args, env and cwd)"
    if key in {"command", "args", "env", "cwd"}:
        return "remove it, or set type to stdio to run a command"
    return "remove it"


def parse_servers(raw: object, ctx: ParseContext, path: Location) -> dict[str, ServerSpec]:
    """Read the `mcpServers` object: each enabled entry's spec, by name."""
    if not isinstance(raw, Mapping):
        raise ctx.error(path, f"must be an object of server entries by name, not {json_kind(raw)}")
    check_object(raw, ctx, path)
    servers: dict[str, ServerSpec] = {}
    for name, entry in raw.items():
        if not SERVER_NAME.match(name):
            raise ctx.error((*path, name), SERVER_NAME_RULE)
        if name == BUILTIN_SERVER:
            raise ctx.error((*path, name), RESERVED_RULE)
        spec = _parse_server(name, entry, ctx, (*path, name))
        if spec is not None:
            servers[name] = spec
    return servers
