"""Tool policies (allow / deny globs over server.tool) and agent configs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from executor.policy import AgentConfig, AgentLimits, AutoApprove, ToolPolicy

# (allow, deny, server, tool, allowed)
CASES = [
    # The default allows everything.
    ((), (), "fs", "read", None),
    (("*",), (), "fs", "read", True),
    # Server-only patterns match every tool of the server.
    (("fs",), (), "fs", "read", True),
    (("fs",), (), "fs", "write.file", True),
    (("fs",), (), "fsx", "read", False),
    (("f*",), (), "fsx", "read", True),
    # server.tool patterns match both halves.
    (("fs.*",), (), "fs", "read", True),
    (("fs.read",), (), "fs", "read", True),
    (("fs.read",), (), "fs", "read_all", False),
    (("fs.read*",), (), "fs", "read_all", True),
    (("*.read",), (), "web", "read", True),
    (("*.read",), (), "web", "write", False),
    # Tool names may hold dots: the first dot splits server from tool.
    (("fs.files.*",), (), "fs", "files.read", True),
    (("fs.files.read",), (), "fs", "files.read", True),
    (("fs.files.read",), (), "fs", "files", False),
    (("fs.*",), (), "fs", "files.read", True),
    # Matching is case-sensitive.
    (("FS",), (), "fs", "read", False),
    # Deny always wins.
    (("*",), ("fs",), "fs", "read", False),
    (("*",), ("fs",), "web", "read", True),
    (("fs.read",), ("fs.read",), "fs", "read", False),
    (("fs",), ("fs.write*",), "fs", "write_file", False),
    (("fs",), ("fs.write*",), "fs", "read_file", True),
    (("fs.files.*",), ("*.files.delete",), "fs", "files.delete", False),
    (("fs.files.*",), ("*.files.delete",), "fs", "files.read", True),
    # An empty allow list allows nothing.
    ((), ("x",), "fs", "read", False),
]


@pytest.mark.parametrize(("allow", "deny", "server", "tool", "expected"), CASES)
def test_allows(
    allow: tuple[str, ...], deny: tuple[str, ...], server: str, tool: str, expected: bool | None
) -> None:
    policy = ToolPolicy() if expected is None else ToolPolicy(allow=allow, deny=deny)
    want = True if expected is None else expected
    assert policy.allows(server, tool) is want
    # explain() agrees with allows(): None exactly when allowed.
    assert (policy.explain(server, tool) is None) is want


def test_explain_names_the_deny_pattern() -> None:
    policy = ToolPolicy(allow=("*",), deny=("web", "fs.delete*"))
    assert policy.explain("fs", "delete_all") == "denied by the pattern 'fs.delete*'"
    assert policy.explain("web", "get") == "denied by the pattern 'web'"


def test_explain_lists_the_allowed_patterns() -> None:
    policy = ToolPolicy(allow=("fs.read*", "time"))
    reason = policy.explain("web", "get")
    assert reason == "not matched by any allowed pattern ('fs.read*', 'time')"
    assert (
        ToolPolicy(allow=()).explain("fs", "read") == "not matched by any allowed pattern (nothing)"
    )


def test_policy_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="allowed"):
        ToolPolicy.model_validate({"allowed": ["*"]})


def test_agent_config_defaults_and_validation() -> None:
    agent = AgentConfig(name="research-bot.v2")
    assert agent.tool_policy == ToolPolicy()
    assert agent.limits == AgentLimits()
    assert agent.limits.max_steps == 50
    assert agent.auto_approve is AutoApprove.NEVER
    for bad in ("", "has space", "x" * 65, "slash/name"):
        with pytest.raises(ValidationError, match="name"):
            AgentConfig(name=bad)
    with pytest.raises(ValidationError, match="max_steps"):
        AgentLimits(max_steps=0)
    with pytest.raises(ValidationError, match="auto_approve"):
        AgentConfig.model_validate({"name": "a", "auto_approve": "always"})
