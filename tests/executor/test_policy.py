"""Tool policies (allow / deny globs over server.tool) and agent configs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from executor.plan import Plan, Step
from executor.policy import (
    DEFAULT_MAX_STEPS,
    AgentConfig,
    AgentLimits,
    AutoApprove,
    CallGate,
    RunPolicy,
    ToolFilter,
    ToolPolicy,
    approved_agent,
    glob_match,
)

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
    # Allow patterns match case as written...
    (("FS",), (), "fs", "read", False),
    (("fs.read",), (), "fs", "READ", False),
    # ... deny patterns ignore case and compatibility forms: a doubt refuses.
    (("*",), ("fs.delete_*",), "fs", "Delete_all", False),
    (("*",), ("fs.delete_*",), "fs", "\uff24elete_all", False),
    (("*",), ("FS",), "fs", "read", False),
    (("*",), ("Fs.Delete*",), "fs", "delete", False),
    (("*",), ("fs.delete_*",), "fs", "undelete_all", True),
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
    # One default step limit (the config's `limits.max_steps` is the same one).
    assert agent.limits.max_steps == DEFAULT_MAX_STEPS == 200
    assert agent.auto_approve is AutoApprove.NEVER
    for bad in ("", "has space", "x" * 65, "slash/name"):
        with pytest.raises(ValidationError, match="name"):
            AgentConfig(name=bad)
    with pytest.raises(ValidationError, match="max_steps"):
        AgentLimits(max_steps=0)
    with pytest.raises(ValidationError, match="auto_approve"):
        AgentConfig.model_validate({"name": "a", "auto_approve": "always"})


def test_glob_match_is_the_one_matcher() -> None:
    assert glob_match("delete_*", "delete_all")
    assert not glob_match("delete_*", "Delete_all")
    assert glob_match("delete_*", "Delete_all", ignore_case=True)
    assert glob_match("[a-c]x", "Bx", ignore_case=True)
    assert not glob_match("[a-c]x", "Bx")


def test_tool_filter_denies_ignoring_case_and_says_why() -> None:
    flt = ToolFilter(allowed=("read_*", "Delete_all"), denied=("delete_*",))
    assert flt.refusal("read_file") is None
    assert flt.refusal("Delete_all") == "it matches 'delete_*' in the server's `denied_tools`"
    assert flt.refusal("READ_file") == (
        "it matches none of the server's `allowed_tools` ('read_*', 'Delete_all')"
    )
    assert ToolFilter().refusal("anything") is None


def _plan(policy: RunPolicy | None, agent: str | None = "ops") -> Plan:
    return Plan(id="p", agent=agent, steps=(Step(id="a", server="fs", tool="rm"),), policy=policy)


def test_call_gate_checks_the_approved_and_the_current_policy_and_the_server() -> None:
    approved = RunPolicy(tool_policy=ToolPolicy(deny=("fs.format",)))
    now = AgentConfig(name="ops", tool_policy=ToolPolicy(deny=("fs.RM",)))
    gate = CallGate.for_plan(_plan(approved), now, {"fs": ToolFilter(denied=("chmod",))})
    assert gate.refusal("fs", "ls") is None
    assert gate.refusal("fs", "format") == (
        "the tool 'fs.format' is not allowed by the policy of agent 'ops' approved "
        "(denied by the pattern 'fs.format'); it was not called"
    )
    assert gate.refusal("fs", "rm") == (
        "the tool 'fs.rm' is not allowed by the policy of agent 'ops' now in force "
        "(denied by the pattern 'fs.RM'); it was not called"
    )
    assert gate.refusal("fs", "CHMOD") == (
        "the tool 'fs.CHMOD' is not allowed by the config: it matches 'chmod' in the "
        "server's `denied_tools`; it was not called"
    )
    # A plan from before plans kept their policy, under the built-in agent: no rules.
    assert CallGate.for_plan(_plan(None, agent=None), None, {}).refusal("fs", "rm") is None


def test_a_run_uses_the_limits_and_retry_approved_with_its_plan() -> None:
    approved = RunPolicy(limits=AgentLimits(max_parallel_steps=2), retry=None)
    now = AgentConfig(name="ops", limits=AgentLimits(max_parallel_steps=50), model="m")
    used = approved_agent(_plan(approved), now)
    assert used is not None
    assert (used.name, used.model, used.limits, used.retry) == ("ops", "m", approved.limits, None)
    built_in = approved_agent(_plan(approved, agent=None), None)
    assert built_in is not None and built_in.limits == approved.limits
    assert approved_agent(_plan(None), now) is now


def test_an_agent_is_a_run_policy_and_a_plan_keeps_only_that_part() -> None:
    agent = AgentConfig(name="ops", system_prompt="be careful", limits=AgentLimits(max_steps=9))
    plan = _plan(agent)
    assert type(plan.policy) is RunPolicy
    assert plan.policy == agent.run_policy()
    assert "system_prompt" not in plan.hash_payload()["policy"]
