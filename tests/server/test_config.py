"""Config loading: Claude Desktop's file read verbatim, errors that say where and what."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from pydantic import ValidationError

from executor.downstream.specs import (
    HttpServerSpec,
    SseServerSpec,
    StdioServerSpec,
    WebSocketServerSpec,
)
from executor.errors import ConfigError, UserError
from executor.policy import AgentConfig, AgentLimits, AutoApprove, ModelSettings, ResponseMode
from executor.store import DatabaseUrl
from server.config import (
    Limits,
    ModelChoice,
    TaskorchConfig,
    default_config_path,
    default_db_path,
    load_config,
    model_for,
    parse_config,
    resolve_config_path,
    resolve_db_path,
)

DATA = Path(__file__).parent / "data"
CLAUDE_DESKTOP = DATA / "claude_desktop_config.json"
GITHUB_TOKEN = "ghp_supersecret_1111"
LINEAR_TOKEN = "lin_supersecret_2222"
BRAVE_KEY = "BSA-literal-brave-secret-0123"
ENV = {"GITHUB_TOKEN": GITHUB_TOKEN, "LINEAR_TOKEN": LINEAR_TOKEN}
SECRETS = (GITHUB_TOKEN, LINEAR_TOKEN, BRAVE_KEY)
JSON_OBJECT = ResponseMode.JSON_OBJECT


def parse(data: object, env: dict[str, str] | None = None) -> TaskorchConfig:
    return parse_config(data, source="cfg.json", env={} if env is None else env)


def error_of(data: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, env)
    return str(info.value)


def servers(**entries: object) -> dict[str, object]:
    return {"mcpServers": entries}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point platformdirs' default config and data dirs into tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path


# --- the Claude Desktop file -----------------------------------------------------------------


def test_claude_desktop_file_is_read_verbatim() -> None:
    config = load_config(CLAUDE_DESKTOP, env=ENV)

    assert config.config_path == CLAUDE_DESKTOP.absolute()
    # puppeteer is disabled, so it is absent (and its unset variable never looked up).
    assert set(config.servers) == {
        "filesystem",
        "github",
        "brave-search",
        "time",
        "sqlite",
        "linear",
        "legacy-events",
    }
    fs = config.servers["filesystem"]
    assert isinstance(fs, StdioServerSpec)
    assert fs.command == "npx"
    assert fs.args == (
        "-y",
        "@modelcontextprotocol/server-filesystem",
        "/Users/alice/Desktop",
        "/Users/alice/Downloads",
    )
    assert fs.env == {}
    github = config.servers["github"]
    assert isinstance(github, StdioServerSpec)
    assert github.env["GITHUB_PERSONAL_ACCESS_TOKEN"].get_secret_value() == GITHUB_TOKEN
    brave = config.servers["brave-search"]
    assert isinstance(brave, StdioServerSpec)
    assert brave.env["BRAVE_API_KEY"].get_secret_value() == BRAVE_KEY
    time = config.servers["time"]
    assert isinstance(time, StdioServerSpec)
    assert time.args == ("mcp-server-time", "--local-timezone=Europe/Paris")
    linear = config.servers["linear"]
    assert isinstance(linear, HttpServerSpec)
    assert linear.url == "https://mcp.linear.app/mcp"
    assert {k: v.get_secret_value() for k, v in linear.headers.items()} == {
        "Authorization": f"Bearer {LINEAR_TOKEN}",
        "X-Client": "taskorch-tests",
    }
    assert isinstance(config.servers["legacy-events"], SseServerSpec)
    assert config.agents == {}
    assert config.limits == Limits()
    assert config.model is None and config.database is None


def test_claude_desktop_keys_are_ignored_with_a_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="server.config"):
        load_config(CLAUDE_DESKTOP, env=ENV)
    messages = [r.getMessage() for r in caplog.records]
    top = [m for m in messages if "top-level keys" in m]
    assert len(top) == 1
    for key in ("globalShortcut", "preferences", "isUsingBuiltInNodeForMcp"):
        assert key in top[0]
    assert any("'sqlite'" in m and "autoApprove" in m for m in messages)
    assert any("'puppeteer' is disabled" in m for m in messages)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_secrets_never_show_in_repr_str_or_dumps(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="server.config"):
        config = load_config(CLAUDE_DESKTOP, env=ENV)
    shown = [
        repr(config),
        str(config),
        config.model_dump_json(),
        json.dumps(config.model_dump(mode="json")),
        repr(config.servers),
        caplog.text,
    ]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    # The secrets are there all the same, for whoever opens the connection.
    assert "**********" in config.model_dump_json()


# --- transports ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"command": "uvx", "args": ["mcp-server-time"]}, StdioServerSpec),
        ({"url": "http://127.0.0.1:8000/mcp"}, HttpServerSpec),
        ({"url": "https://example.com/sse"}, SseServerSpec),
        ({"url": "https://example.com/v1/sse/"}, SseServerSpec),
        ({"url": "https://example.com/sse?key=1"}, SseServerSpec),
        ({"url": "https://example.com/sse-thing"}, HttpServerSpec),
        ({"url": "ws://127.0.0.1:9000/mcp"}, WebSocketServerSpec),
        ({"url": "WSS://example.com/mcp"}, WebSocketServerSpec),
        ({"type": "stdio", "command": "x"}, StdioServerSpec),
        ({"type": "http", "url": "http://h/sse"}, HttpServerSpec),
        ({"type": "streamable-http", "url": "http://h/mcp"}, HttpServerSpec),
        ({"type": "streamableHttp", "url": "http://h/mcp"}, HttpServerSpec),
        ({"transport": "HTTP", "url": "http://h/mcp"}, HttpServerSpec),
        ({"type": "sse", "url": "http://h/events"}, SseServerSpec),
        ({"transportType": "sse", "url": "http://h/events"}, SseServerSpec),
        ({"type": "ws", "url": "ws://h/mcp"}, WebSocketServerSpec),
        ({"type": "websocket", "url": "wss://h/mcp"}, WebSocketServerSpec),
        ({"type": "sse", "transport": "sse", "url": "http://h/e"}, SseServerSpec),
    ],
)
def test_transport_is_inferred_or_taken_from_type(entry: dict[str, Any], expected: type) -> None:
    config = parse(servers(s=entry))
    assert type(config.servers["s"]) is expected


def test_per_server_options_in_either_spelling() -> None:
    config = parse(
        servers(
            a={
                "command": "x",
                "cwd": "/tmp",
                "timeout_s": 12.5,
                "max_concurrency": 3,
                "allowed_tools": ["read_*"],
                "denied_tools": ["read_secret"],
            },
            b={
                "url": "http://h/mcp",
                "timeoutS": "30",
                "maxConcurrency": 2,
                "allowedTools": ["x"],
                "deniedTools": ["y"],
            },
        )
    )
    a, b = config.servers["a"], config.servers["b"]
    assert isinstance(a, StdioServerSpec)
    assert (a.cwd, a.timeout_s, a.max_concurrency) == ("/tmp", 12.5, 3)
    assert (a.allowed_tools, a.denied_tools) == (("read_*",), ("read_secret",))
    # "30" is accepted for a number: it is what ${TIMEOUT:-30} expands to.
    assert (b.timeout_s, b.max_concurrency, b.allowed_tools, b.denied_tools) == (
        30.0,
        2,
        ("x",),
        ("y",),
    )


def test_unknown_transport_is_an_error() -> None:
    message = error_of(servers(fs={"type": "grpc", "url": "http://h/mcp"}))
    assert message == (
        "cfg.json: mcpServers.fs.type: unknown transport 'grpc'; use one of "
        "stdio, http (or streamable-http), sse, websocket (or ws)"
    )


def test_disagreeing_type_keys_are_an_error() -> None:
    message = error_of(servers(fs={"type": "sse", "transport": "http", "url": "http://h/mcp"}))
    assert message == "cfg.json: mcpServers.fs.transport: disagrees with 'type'; keep one"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"args": ["-y", "x"]},
            "cfg.json: mcpServers.fs: has neither command nor url; give command (and args) "
            "to run a stdio server, or url for a remote one",
        ),
        (
            {"type": "stdio", "args": []},
            "cfg.json: mcpServers.fs.command: missing; give the executable to run",
        ),
        ({"command": ""}, "cfg.json: mcpServers.fs.command: must not be empty"),
        (
            {"type": "sse"},
            "cfg.json: mcpServers.fs.url: missing; give the server's endpoint",
        ),
    ],
)
def test_missing_command_or_url(entry: dict[str, Any], expected: str) -> None:
    assert error_of(servers(fs=entry)) == expected


def test_command_and_url_together_are_an_error() -> None:
    message = error_of(servers(fs={"command": "x", "url": "http://h/mcp"}))
    assert message.startswith("cfg.json: mcpServers.fs: has both command and url")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"command": "x", "headers": {"A": "b"}},
            "cfg.json: mcpServers.fs.headers: not used by a stdio server; remove it "
            "(a stdio server takes command, args, env and cwd)",
        ),
        (
            {"url": "http://h/mcp", "args": ["a"]},
            "cfg.json: mcpServers.fs.args: not used by a http server; remove it, "
            "or set type to stdio to run a command",
        ),
        (
            {"type": "http", "command": "x", "url": "http://h/mcp"},
            "cfg.json: mcpServers.fs.command: not used by a http server; remove it, "
            "or set type to stdio to run a command",
        ),
    ],
)
def test_keys_of_another_transport_are_an_error(entry: dict[str, Any], expected: str) -> None:
    assert error_of(servers(fs=entry)) == expected


def test_unknown_server_key_is_an_error_but_foreign_harmless_keys_are_not() -> None:
    message = error_of(servers(fs={"command": "x", "arg": ["a"]}))
    assert message.startswith("cfg.json: mcpServers.fs.arg: unknown key; a server entry takes ")
    assert "args" in message and "Remove it or fix its spelling" in message

    config = parse(
        servers(
            fs={
                "command": "x",
                "autoApprove": ["read"],
                "alwaysAllow": ["read"],
                "description": "files",
                "timeout": 60,
            }
        )
    )
    assert isinstance(config.servers["fs"], StdioServerSpec)


def test_disabled_server_is_skipped_and_not_expanded() -> None:
    config = parse(
        servers(
            off={"command": "x", "env": {"K": "${NOT_SET_ANYWHERE}"}, "disabled": True},
            on={"command": "y", "disabled": False},
        )
    )
    assert list(config.servers) == ["on"]
    message = error_of(servers(fs={"command": "x", "disabled": "yes"}))
    assert message == "cfg.json: mcpServers.fs.disabled: must be true or false"


def test_both_spellings_of_one_key_are_an_error() -> None:
    message = error_of(servers(fs={"command": "x", "timeout_s": 1, "timeoutS": 2}))
    assert message == (
        "cfg.json: mcpServers.fs.timeoutS: the same key as 'timeout_s' (another spelling); keep one"
    )


@pytest.mark.parametrize("name", ["my.server", " padded", "tab\there", "glob*", ""])
def test_server_names_that_break_server_dot_tool_are_refused(name: str) -> None:
    message = error_of(servers(**{name: {"command": "x"}}))
    assert "a server name must be 1 to 64 characters" in message
    assert "rename the entry" in message


# --- type and value errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "cfg.json: the top level must be a JSON object ({...}), not an array"),
        ({"mcpServers": []}, "cfg.json: mcpServers: must be an object of server entries"),
        (servers(fs=["npx"]), "cfg.json: mcpServers.fs: a server entry must be an object"),
        (servers(fs={"command": 7}), "cfg.json: mcpServers.fs.command: must be a string"),
        (
            servers(fs={"command": "x", "args": "-y pkg"}),
            "cfg.json: mcpServers.fs.args: must be an array",
        ),
        (
            servers(fs={"command": "x", "args": ["-y", 3]}),
            "cfg.json: mcpServers.fs.args[1]: must be a string",
        ),
        (
            servers(fs={"command": "x", "env": {"PORT": 8080}}),
            "cfg.json: mcpServers.fs.env.PORT: must be a string",
        ),
        (
            servers(fs={"command": "x", "env": ["A=1"]}),
            "cfg.json: mcpServers.fs.env: must be an object",
        ),
        (
            servers(fs={"command": "x", "timeout_s": "soon"}),
            "cfg.json: mcpServers.fs.timeout_s: must be a number",
        ),
        (
            servers(fs={"command": "x", "maxConcurrency": 0}),
            "cfg.json: mcpServers.fs.maxConcurrency: must be at least 1",
        ),
        (
            servers(fs={"command": "x", "allowedTools": "read_*"}),
            "cfg.json: mcpServers.fs.allowedTools: must be an array",
        ),
        (
            servers(fs={"type": "http", "url": "ftp://h/mcp"}),
            "cfg.json: mcpServers.fs.url: must start with http:// or https://",
        ),
        (
            servers(fs={"type": "ws", "url": "http://h/mcp"}),
            "cfg.json: mcpServers.fs.url: must start with ws:// or wss://",
        ),
        (
            servers(fs={"url": "http://:8000/mcp"}),
            "cfg.json: mcpServers.fs.url: must name a host, as in http://127.0.0.1:8000/mcp",
        ),
        (
            servers(fs={"url": "ws://h:99999/mcp"}),
            "cfg.json: mcpServers.fs.url: has a port that is not a number from 1 to 65535",
        ),
        ({"model": 3}, "cfg.json: model: must be a string, not a number"),
        ({"model": ""}, "cfg.json: model: must not be empty"),
        ({"apiBase": "localhost:11434"}, "cfg.json: apiBase: must start with http:// or https://"),
        ({"limits": [1]}, "cfg.json: limits: must be an object, not an array"),
        (
            {"limits": {"max_parallel_steps": 0}},
            "cfg.json: limits.max_parallel_steps: must be at least 1",
        ),
        (
            {"limits": {"maxRepairs": "many"}},
            "cfg.json: limits.maxRepairs: must be an integer",
        ),
        ({"log_level": "LOUD"}, "cfg.json: log_level: must be one of DEBUG, INFO, WARNING"),
        ({"defaultAgent": "no spaces"}, "cfg.json: defaultAgent: may hold only letters"),
    ],
)
def test_wrong_types_and_values_name_the_key_path(data: object, expected: str) -> None:
    assert error_of(data).startswith(expected)


@pytest.mark.parametrize("key", ["timeout_s", "timeoutS"])
def test_negative_timeout_is_an_error(key: str) -> None:
    message = error_of(servers(fs={"command": "x", key: -5}))
    assert message == f"cfg.json: mcpServers.fs.{key}: must be greater than 0"


def test_server_timeout_over_the_global_cap_is_an_error() -> None:
    data = {"mcpServers": {"fs": {"command": "x", "timeout_s": 7200}}}
    assert error_of(data) == (
        "cfg.json: mcpServers.fs.timeout_s: 7200 s is over limits.max_timeout_s (3600 s); "
        "lower it or raise limits.max_timeout_s"
    )
    config = parse({**data, "limits": {"max_timeout_s": 7200}})
    assert config.servers["fs"].timeout_s == 7200


def test_several_problems_are_listed_together() -> None:
    message = error_of({"limits": {"max_steps": 0, "max_repairs": -1}})
    assert message == (
        "cfg.json: 2 problems:\n"
        "- limits.max_steps: must be at least 1\n"
        "- limits.max_repairs: must be at least 0"
    )


def test_limits_defaults_spellings_and_order() -> None:
    assert parse({}).limits == Limits(
        max_concurrent_executions=4,
        max_parallel_steps=16,
        max_calls_per_server=8,
        default_timeout_s=300,
        max_timeout_s=3600,
        max_steps=200,
        max_repairs=2,
    )
    # One default step limit: the agents' and the config's are the same value.
    assert Limits().max_steps == AgentLimits().max_steps
    limits = parse(
        {"limits": {"maxConcurrentExecutions": 2, "max_calls_per_server": 3, "maxSteps": 10}}
    ).limits
    assert (limits.max_concurrent_executions, limits.max_calls_per_server, limits.max_steps) == (
        2,
        3,
        10,
    )
    message = error_of({"limits": {"default_timeout_s": 600, "max_timeout_s": 60}})
    assert message == (
        "cfg.json: limits: default_timeout_s (600) must not exceed max_timeout_s (60); "
        "lower one or raise the other"
    )
    assert error_of({"limits": {"max_steps": 5, "maxStep": 4}}).startswith(
        "cfg.json: limits.maxStep: unknown key; the keys here are answer_budget_tokens,"
    )


def test_top_level_settings_in_both_spellings() -> None:
    snake = parse(
        {
            "model": "ollama/llama3",
            "api_base": "http://127.0.0.1:11434",
            "api_key_env": "OLLAMA_KEY",
            "default_agent": "helper",
            "log_level": "debug",
        }
    )
    camel = parse(
        {
            "model": "ollama/llama3",
            "apiBase": "http://127.0.0.1:11434",
            "apiKeyEnv": "OLLAMA_KEY",
            "defaultAgent": "helper",
            "logLevel": "warn",
            "mcp_servers": {"t": {"command": "x"}},
        }
    )
    for config in (snake, camel):
        assert config.model == "ollama/llama3"
        assert config.api_base == "http://127.0.0.1:11434"
        assert config.api_key_env == "OLLAMA_KEY"
        assert config.default_agent == "helper"
    assert (snake.log_level, camel.log_level) == ("DEBUG", "WARNING")
    assert list(camel.servers) == ["t"]
    assert list(parse({"servers": {"v": {"type": "stdio", "command": "x"}}}).servers) == ["v"]
    assert error_of({"defaultAgent": "a", "default_agent": "b"}) == (
        "cfg.json: default_agent: the same setting as 'defaultAgent' (another spelling); keep one"
    )
    # null is as good as absent.
    assert parse({"model": None, "mcpServers": None, "limits": None}) == TaskorchConfig()


def test_misspelt_top_level_key_gets_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="server.config"):
        config = parse({"limit": {"max_steps": 3}, "globalShortcut": "x"})
    assert config.limits == Limits()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["cfg.json: ignoring the top-level key 'limit'; did you mean 'limits'?"]


# --- environment references ------------------------------------------------------------------


def test_missing_variable_names_it_the_file_and_the_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CLAUDE_DESKTOP, env={"LINEAR_TOKEN": LINEAR_TOKEN})
    assert str(info.value) == (
        f"{CLAUDE_DESKTOP}: mcpServers.github.env.GITHUB_PERSONAL_ACCESS_TOKEN: environment "
        "variable GITHUB_TOKEN is not set; set it, or give a default with "
        "${GITHUB_TOKEN:-default}"
    )


@pytest.mark.parametrize(
    ("template", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-${B}-post", {"A": "1", "B": "2"}, "pre-1-2-post"),
        ("${A}", {"A": ""}, ""),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("${A:-http://h:1/x}", {}, "http://h:1/x"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("$$${A}", {"A": "x"}, "$${A}"),
        ("cost $5 and $HOME", {}, "cost $5 and $HOME"),
        ("$", {}, "$"),
        ("a$${b}c${A}", {"A": "!"}, "a${b}c!"),
    ],
)
def test_references_expand(template: str, env: dict[str, str], expected: str) -> None:
    config = parse(servers(fs={"command": "x", "args": [template]}), env)
    server = config.servers["fs"]
    assert isinstance(server, StdioServerSpec)
    assert server.args == (expected,)


def test_references_expand_in_every_section() -> None:
    env = {"HOME_DIR": "/home/a", "M": "openai/gpt-4o", "STEPS": "7", "KEYVAR": "OPENAI_KEY"}
    config = parse(
        {
            "mcpServers": {"fs": {"command": "x", "timeout_s": "${T:-45}", "cwd": "${HOME_DIR}"}},
            "agents": {"a": {"model": "${M}", "apiKeyEnv": "${KEYVAR}"}},
            "limits": {"max_steps": "${STEPS}"},
            "model": "${M}",
            "database": "${HOME_DIR}/t.db",
        },
        env,
    )
    fs = config.servers["fs"]
    assert isinstance(fs, StdioServerSpec)
    assert (fs.timeout_s, fs.cwd) == (45.0, "/home/a")
    assert config.agents["a"].model == "openai/gpt-4o"
    assert config.agents["a"].api_key_env == "OPENAI_KEY"
    assert config.limits.max_steps == 7
    assert config.model == "openai/gpt-4o"
    assert config.database == Path("/home/a/t.db")


def test_keys_and_ignored_sections_are_not_expanded() -> None:
    config = parse(
        {"preferences": {"x": "${NOPE}"}, "mcpServers": {"fs": {"command": "x", "env": {}}}}
    )
    assert list(config.servers) == ["fs"]
    config = parse(servers(fs={"command": "x", "env": {"${KEY}": "v"}}))
    server = config.servers["fs"]
    assert isinstance(server, StdioServerSpec)
    assert list(server.env) == ["${KEY}"]


@pytest.mark.parametrize("template", ["${1BAD}", "${}", "${A B}", "${unterminated"])
def test_malformed_reference_is_an_error(template: str) -> None:
    message = error_of(servers(fs={"command": "x", "args": [template]}))
    assert message.startswith("cfg.json: mcpServers.fs.args[0]: malformed environment reference")
    assert "write $${ for a literal ${" in message


# --- secrets stay out of errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"url": "http://h/mcp", "headers": {"Authorization": "Bearer ${sk live 999}"}},
        {"command": "x", "env": {"TOKEN": "sk-live-999 ${"}},
        {"command": "x", "env": {"TOKEN": ["sk-live-999"]}},
        {"command": "x", "env": {"TOKEN": 999}},
        {"url": "http://h/mcp", "headers": {"X-Key": {"sk-live-999": 1}}},
    ],
)
def test_errors_never_quote_secret_values(entry: dict[str, Any]) -> None:
    message = error_of(servers(fs=entry))
    assert "mcpServers.fs." in message
    assert "999" not in message and "sk-live" not in message and "sk live" not in message


def test_api_keys_are_refused_without_quoting_them() -> None:
    for data, path in [
        ({"api_key": "sk-live-999"}, "api_key"),
        ({"agents": {"a": {"apiKey": "sk-live-999"}}}, "agents.a.apiKey"),
    ]:
        message = error_of(data)
        assert message.startswith(f"cfg.json: {path}: taskorch never reads API keys")
        assert "sk-live-999" not in message
    for data, path in [
        ({"api_key_env": "sk-live-999"}, "api_key_env"),
        ({"agents": [{"name": "a", "api_key_env": "sk-live-999"}]}, "agents[0].api_key_env"),
    ]:
        message = error_of(data)
        assert message.startswith(f"cfg.json: {path}: must be the name of an environment variable")
        assert "sk-live-999" not in message


# --- agents ----------------------------------------------------------------------------------


def test_agents_as_an_object_keyed_by_name() -> None:
    config = parse(
        {
            "agents": {
                "researcher": {
                    "description": "reads things",
                    "systemPrompt": "Be careful.",
                    "toolPolicy": {"allow": ["docs"], "deny": ["docs.delete_*"]},
                    "limits": {"maxSteps": 20, "step_timeout_s": 30},
                    "retry": {"maximumAttempts": 5},
                    "autoApprove": "read_only",
                    "model": "openai/gpt-4o-mini",
                },
                "plain": {},
                "named": {"name": "named"},
            }
        }
    )
    assert list(config.agents) == ["researcher", "plain", "named"]
    agent = config.agents["researcher"]
    assert agent.name == "researcher"
    assert agent.system_prompt == "Be careful."
    assert agent.tool_policy.allows("docs", "search")
    assert not agent.tool_policy.allows("docs", "delete_all")
    assert (agent.limits.max_steps, agent.limits.step_timeout_s) == (20, 30)
    assert agent.retry is not None and agent.retry.maximum_attempts == 5
    assert agent.auto_approve is AutoApprove.READ_ONLY
    assert config.agents["plain"] == AgentConfig(name="plain")


def test_agents_as_a_list_with_names() -> None:
    config = parse({"agents": [{"name": "a", "personality": "terse"}, {"name": "b"}]})
    assert [a.personality for a in config.agents.values()] == ["terse", ""]
    assert error_of({"agents": [{"name": "a"}, {"name": "a"}]}) == (
        "cfg.json: agents[1]: a second agent named 'a'; names must be unique"
    )
    assert error_of({"agents": [{"personality": "x"}]}) == (
        "cfg.json: agents[0].name: missing; an agent in an array needs a name"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"agents": "all"}, "cfg.json: agents: must be an object of agents by name or an array"),
        ({"agents": {"a": []}}, "cfg.json: agents.a: an agent must be an object, not an array"),
        (
            {"agents": {"a": {"name": "b"}}},
            "cfg.json: agents.a.name: differs from the entry's key 'a'",
        ),
        (
            {"agents": {"a": {"limits": {"maxSteps": 0}}}},
            "cfg.json: agents.a.limits.maxSteps: must be at least 1",
        ),
        (
            {"agents": {"a": {"auto_approve": "always"}}},
            "cfg.json: agents.a.auto_approve: must be one of 'never' or 'read_only'",
        ),
        (
            {"agents": {"a": {"tool_policy": {"allow": "fs"}}}},
            "cfg.json: agents.a.tool_policy.allow: must be an array",
        ),
        (
            {"agents": {"a": {"prompt": "hi"}}},
            "cfg.json: agents.a.prompt: unknown key; the keys here are api_base, api_key_env,",
        ),
        ({"agents": {"bad name": {}}}, 'cfg.json: agents["bad name"].name: may hold only'),
        (
            {"agents": {"a": {"systemPrompt": "x", "system_prompt": "y"}}},
            "cfg.json: agents.a.system_prompt: the same key as 'systemPrompt'",
        ),
    ],
)
def test_agent_errors_name_the_key_path(data: object, expected: str) -> None:
    assert error_of(data).startswith(expected)


def test_config_built_in_python_checks_agent_keys_and_server_names() -> None:
    with pytest.raises(ValidationError, match="holds the agent named 'b'"):
        TaskorchConfig(agents={"a": AgentConfig(name="b")})
    with pytest.raises(ValidationError, match="cannot be used"):
        TaskorchConfig(servers={"a.b": StdioServerSpec(command="x")})


# --- the file itself -------------------------------------------------------------------------


def test_bad_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "mcpServers": {\n    "fs": {"command": "x",}\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (
        f"{path}: invalid JSON at line 3, column 27: Expecting property name enclosed in "
        "double quotes (a trailing comma? JSON allows none)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "invalid JSON at line 1, column 1: Expecting value (the file is empty; write {}"),
        ('{\n  // servers\n  "mcpServers": {}\n}', "at line 2, column 3:"),
        ("{'mcpServers': {}}", "(JSON strings take double quotes)"),
        ('{"mcpServers": {"a": {"command": "x"}}} trailing', "line 1, column 41: Extra data"),
    ],
)
def test_more_bad_json(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_comment_hint(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  // servers\n  "mcpServers": {}\n}')
    with pytest.raises(ConfigError, match=r"JSON allows no comments"):
        load_config(path, env={})


def test_not_utf8_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model": "\xff"}')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(bad byte at offset 11\)"):
        load_config(path, env={})
    # Windows editors write a byte-order mark; it is not an error.
    path.write_bytes(b'\xef\xbb\xbf{"model": "m"}')
    assert load_config(path, env={}).model == "m"


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        '{"mcpServers": {"fs": {"command": "a"}, "fs": {"command": "b"}}, "model": "m"}'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (
        f"{path}: mcpServers.fs: given more than once in the same object; keep one"
    )
    path.write_text('{"mcpServers": {"fs": {"command": "a", "env": {"K": "1", "K": "2"}}}}')
    with pytest.raises(ConfigError, match=r"mcpServers\.fs\.env\.K: given more than once"):
        load_config(path, env={})


def test_explicit_missing_file_and_directory_are_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value) == f"{missing}: config file not found (given explicitly); check the path"
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"TASKORCH_CONFIG": str(missing)})
    assert str(info.value) == (
        f"{missing}: config file not found (named by TASKORCH_CONFIG); check the path"
    )
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path, env={})


def test_config_errors_are_user_errors() -> None:
    with pytest.raises(UserError):
        parse(servers(fs={}))


def test_missing_default_file_is_an_empty_config(isolated_dirs: Path) -> None:
    assert not default_config_path().exists()
    assert str(default_config_path()).startswith(str(isolated_dirs))
    config = load_config(env={})
    assert config == TaskorchConfig()
    assert config.servers == {} and config.config_path is None


# --- where things are ------------------------------------------------------------------------


def test_config_path_resolution_order(isolated_dirs: Path) -> None:
    explicit = write(isolated_dirs / "explicit.json", servers(explicit={"command": "x"}))
    named = write(isolated_dirs / "named.json", servers(named={"command": "x"}))
    default = write(default_config_path(), servers(default={"command": "x"}))
    env = {"TASKORCH_CONFIG": str(named)}

    assert resolve_config_path(explicit, env=env) == explicit
    assert resolve_config_path(None, env=env) == named
    assert resolve_config_path("", env=env) == named
    assert resolve_config_path(None, env={}) == default
    assert resolve_config_path(None, env={"TASKORCH_CONFIG": ""}) == default
    assert default == Path(platformdirs.user_config_dir("taskorch")) / "config.json"

    assert list(load_config(explicit, env=env).servers) == ["explicit"]
    assert list(load_config(str(explicit), env=env).servers) == ["explicit"]
    assert list(load_config(env=env).servers) == ["named"]
    loaded = load_config(env={})
    assert list(loaded.servers) == ["default"]
    assert loaded.config_path == default


def test_db_path_resolution_order(isolated_dirs: Path) -> None:
    config_file = write(isolated_dirs / "conf" / "config.json", {"database": "data/orch.db"})
    config = load_config(config_file, env={})
    from_config = isolated_dirs / "conf" / "data" / "orch.db"
    assert config.database == from_config
    env = {"TASKORCH_DB": str(isolated_dirs / "env.db")}

    assert resolve_db_path("cli.db", config, env) == Path("cli.db")
    assert resolve_db_path(isolated_dirs / "cli.db", config, env) == isolated_dirs / "cli.db"
    assert resolve_db_path(None, config, env) == isolated_dirs / "env.db"
    assert resolve_db_path("", config, env) == isolated_dirs / "env.db"
    assert resolve_db_path(None, config, {}) == from_config
    assert resolve_db_path(None, config, {"TASKORCH_DB": ""}) == from_config
    assert resolve_db_path(None, TaskorchConfig(), {}) == default_db_path()
    assert resolve_db_path(None, None, {}) == default_db_path()
    assert default_db_path() == Path(platformdirs.user_data_dir("taskorch")) / "taskorch.db"
    assert str(default_db_path()).startswith(str(isolated_dirs))


def test_absolute_and_home_database_paths(tmp_path: Path) -> None:
    config_file = write(tmp_path / "config.json", {"database": str(tmp_path / "abs.db")})
    assert load_config(config_file, env={}).database == tmp_path / "abs.db"
    config = parse({"database": "~/t.db"})
    assert config.database == Path("~/t.db").expanduser()
    # Without a file there is no directory to be relative to.
    assert parse({"database": "rel.db"}).database == Path("rel.db")


# --- model choice ----------------------------------------------------------------------------


def test_model_for_prefers_agent_then_config_then_environment() -> None:
    env = {
        "TASKORCH_MODEL": "env/model",
        "TASKORCH_API_BASE": "http://env",
        "TASKORCH_API_KEY_ENV": "ENV_KEY",
    }
    empty = TaskorchConfig()
    configured = TaskorchConfig(model="cfg/model", api_base="http://cfg", api_key_env="CFG_KEY")
    own = AgentConfig(name="own", model="agent/model", api_key_env="AGENT_KEY")
    inherits = AgentConfig(name="inherits", api_base="http://agent")

    assert _reach(model_for(None, empty, {})) == (None, None, None)
    assert _reach(model_for(None, empty, env)) == ("env/model", "http://env", "ENV_KEY")
    assert _reach(model_for(None, configured, env)) == ("cfg/model", "http://cfg", "CFG_KEY")
    # An agent's own model never goes to another level's endpoint.
    assert _reach(model_for(own, configured, env)) == ("agent/model", None, "AGENT_KEY")
    # An agent without a model inherits it, and may still point it elsewhere.
    assert _reach(model_for(inherits, configured, env)) == ("cfg/model", "http://agent", "CFG_KEY")
    assert _reach(model_for(inherits, empty, env)) == ("env/model", "http://agent", "ENV_KEY")
    # The config's endpoint goes with the environment's model when it sets no model.
    partial = TaskorchConfig(api_base="http://cfg")
    assert _reach(model_for(None, partial, env)) == ("env/model", "http://cfg", "ENV_KEY")
    assert model_for(None, empty, {"TASKORCH_MODEL": ""}).model is None


def _reach(choice: ModelChoice) -> tuple[str | None, str | None, str | None]:
    return choice.model, choice.api_base, choice.api_key_env


def test_model_settings_go_with_the_model_they_are_set_beside() -> None:
    configured = TaskorchConfig(
        model="cfg/model",
        api_base="http://cfg",
        model_settings=ModelSettings(max_tokens=700, timeout_s=300, response_mode=JSON_OBJECT),
    )
    tweaks = AgentConfig(name="tweaks", model_settings=ModelSettings(timeout_s=30))
    own = AgentConfig(name="own", model="agent/model", model_settings=ModelSettings(max_tokens=99))

    assert model_for(None, configured, {}).settings == configured.model_settings
    # An agent without a model: the config's model and settings, the agent's on top.
    choice = model_for(tweaks, configured, {})
    assert choice.settings == ModelSettings(max_tokens=700, timeout_s=30, response_mode=JSON_OBJECT)
    assert choice.keys["timeout_s"] == "agents.tweaks.model_settings.timeout_s"
    assert choice.keys["max_tokens"] == "model_settings.max_tokens"
    assert choice.keys["api_base"] == "api_base"
    # An agent with its own model: none of the config's endpoint or settings.
    choice = model_for(own, configured, {})
    assert (choice.api_base, choice.settings) == (None, ModelSettings(max_tokens=99))
    assert choice.keys["timeout_s"] == "agents.own.model_settings.timeout_s"  # where to set it
    assert choice.keys["api_base"] == "agents.own.api_base"
    # The environment's model takes the config's settings; its endpoint is a variable.
    env = {"TASKORCH_MODEL": "env/model", "TASKORCH_API_BASE": "http://env"}
    choice = model_for(None, TaskorchConfig(model_settings=ModelSettings(timeout_s=5)), env)
    assert (choice.model, choice.settings.timeout_s) == ("env/model", 5)
    assert choice.keys["api_base"] == "TASKORCH_API_BASE"


def test_model_settings_are_read_in_either_spelling_and_checked() -> None:
    config = parse(
        {
            "modelSettings": {"maxTokens": 800, "timeoutS": "${T}", "responseMode": "json_object"},
            "agents": {"a": {"model_settings": {"timeout_s": 9}}},
        },
        env={"T": "300"},
    )
    assert config.model_settings == ModelSettings(
        max_tokens=800, timeout_s=300, response_mode=JSON_OBJECT
    )
    assert config.agents["a"].model_settings.timeout_s == 9
    assert error_of({"model_settings": {"timeout_s": 0}}) == (
        "cfg.json: model_settings.timeout_s: must be greater than 0"
    )
    assert "model_settings.response_mode" in error_of({"model_settings": {"response_mode": "xml"}})
    assert "unknown key" in error_of({"agents": {"a": {"model_settings": {"timeout": 9}}}})
    assert "must be an object" in error_of({"model_settings": 5})


def test_a_postgresql_url_names_the_database_and_never_says_its_password(
    tmp_path: Path,
) -> None:
    url = "postgresql://orch:s3cret-pw@db.internal:5433/taskorch?sslmode=require"
    config_file = write(tmp_path / "config.json", {"database": "${PG_URL}", "mcpServers": {}})
    config = load_config(config_file, env={"PG_URL": url})
    # A URL is kept as it is: not a path, and never made relative to the config file.
    assert isinstance(config.database, DatabaseUrl)
    assert config.database.secret() == url
    assert resolve_db_path(None, config, {}) == config.database
    from_env = resolve_db_path(None, None, {"TASKORCH_DB": "postgres://me@127.0.0.1/x"})
    assert isinstance(from_env, DatabaseUrl)
    from_cli = resolve_db_path(url, config, {"TASKORCH_DB": str(tmp_path / "env.db")})
    assert isinstance(from_cli, DatabaseUrl) and from_cli.secret() == url
    assert resolve_db_path(str(tmp_path / "x.db"), config, {}) == tmp_path / "x.db"

    shown = [
        str(config.database),
        repr(config.database),
        repr(config),
        config.model_dump_json(),
        str(config.model_dump()),
    ]
    for text in shown:
        assert "s3cret-pw" not in text
    assert str(config.database) == (
        "postgresql://orch:***@db.internal:5433/taskorch?sslmode=require"
    )
    assert str(DatabaseUrl.parse("postgresql://h/db?password=abc&user=u")) == (
        "postgresql://h/db?password=***&user=u"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mysql://u:hunter2x@h/db", "unsupported URL scheme 'mysql'"),
        ("postgresql://u:hunter2x@h:notaport/db", "not a valid URL"),
        ("postgresql://u:hunter2x#y@h/db", "'#' in the password must be written %23"),
    ],
)
def test_a_bad_database_url_is_refused_saying_where_and_why(
    tmp_path: Path, value: str, expected: str
) -> None:
    config_file = write(tmp_path / "config.json", {"database": value})
    with pytest.raises(ConfigError) as info:
        load_config(config_file, env={})
    message = str(info.value)
    assert expected in message and "database" in message and str(config_file) in message
    assert "hunter2x" not in message
    with pytest.raises(ConfigError, match=re.escape(expected)):
        resolve_db_path(value, None, {})


def test_the_log_levels_are_one_list() -> None:
    # The config model's type and the list reads check without building the model.
    from typing import get_args

    from server.config.model import LogLevel
    from server.config.paths import LOG_LEVELS

    assert get_args(LogLevel) == LOG_LEVELS
