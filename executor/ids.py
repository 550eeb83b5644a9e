"""Types that only name things."""

from __future__ import annotations

from typing import NewType

__all__ = ["AgentName", "PlanId", "ServerName", "StepId", "ToolName"]

PlanId = NewType("PlanId", str)
"""A plan's id; every version of the plan shares it."""

StepId = NewType("StepId", str)
"""A step's id, unique within one plan."""

ServerName = NewType("ServerName", str)
"""A downstream server's name as configured under `mcpServers`."""

ToolName = NewType("ToolName", str)
"""A tool's name as its server lists it."""

AgentName = NewType("AgentName", str)
"""An agent configuration's name."""
