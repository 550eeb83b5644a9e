"""A generated catalog of many similar tools (for the shortlist tests and the planner bench)."""

from __future__ import annotations

from executor.catalog import Catalog, ToolInfo

VERBS = [
    "list",
    "get",
    "create",
    "update",
    "delete",
    "search",
    "export",
    "archive",
    "send",
    "count",
]
NOUNS = [
    "invoice", "customer", "ticket", "repository", "issue", "file", "calendar_event", "email",
    "contact", "order", "product", "shipment", "payment", "refund", "user", "group", "role",
    "project", "task", "comment", "document", "folder", "image", "video", "playlist", "song",
    "album", "artist", "flight", "hotel", "booking", "car", "driver", "route", "warehouse",
    "supplier", "employee", "payslip", "timesheet", "meeting", "room", "device", "sensor",
    "alert", "metric", "dashboard", "report", "backup", "certificate", "domain",
]  # fmt: skip


def generated_catalog(size: int = len(VERBS) * len(NOUNS)) -> Catalog:
    """`size` tools (at most 1,000), verbs over nouns, one server per noun.

    The first 500 are the ten verbs over the fifty `NOUNS` (invoice tools first);
    past that, the same again over `legacy_` nouns.
    """
    nouns = NOUNS + [f"legacy_{n}" for n in NOUNS]
    if not 0 <= size <= len(VERBS) * len(nouns):
        raise ValueError(f"size must be 0 to {len(VERBS) * len(nouns)}, got {size}")
    tools: list[ToolInfo] = []
    for noun in nouns:
        words = noun.replace("_", " ")
        for verb in VERBS:
            tools.append(
                ToolInfo(
                    server=f"{noun}s",
                    name=f"{verb}_{noun}",
                    description=f"{verb.capitalize()} a {words} in the {words} service. "
                    "Returns the result as JSON with ids and timestamps.",
                    input_schema={
                        "type": "object",
                        "properties": {
                            f"{noun}_id": {"type": "string", "description": f"The {words} id"},
                            "fields": {"type": "array", "items": {"type": "string"}},
                            "limit": {"type": "integer"},
                        },
                        "required": [f"{noun}_id"],
                    },
                )
            )
    return Catalog(tools[:size])
