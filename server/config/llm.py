"""The model selector: which litellm model an agent plans with, and how to reach and ask it.

`model_for()` picks the agent's `model`, else the config's `model`, else
`$TASKORCH_MODEL`; `api_base`, `api_key_env` and each field of
`model_settings` come from that level or a more specific one
(`$TASKORCH_API_BASE` and `$TASKORCH_API_KEY_ENV` go with `$TASKORCH_MODEL`).
It is the only place that makes this choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from executor.policy import AgentConfig, ModelSettings
from server.config.model import TaskorchConfig

__all__ = ["API_BASE_ENV_VAR", "API_KEY_ENV_ENV_VAR", "MODEL_ENV_VAR", "ModelChoice", "model_for"]

MODEL_ENV_VAR = "TASKORCH_MODEL"
"""Environment variable naming the litellm model when neither agent nor config does."""
API_BASE_ENV_VAR = "TASKORCH_API_BASE"
"""Environment variable giving the model endpoint that goes with `TASKORCH_MODEL`."""
API_KEY_ENV_ENV_VAR = "TASKORCH_API_KEY_ENV"
"""Environment variable naming the variable that holds the key for `TASKORCH_MODEL`."""


class ModelChoice(NamedTuple):
    """The model an agent plans with, how to reach it and how to ask it."""

    model: str | None
    """litellm model string; `None` when nothing names one."""
    api_base: str | None
    """Endpoint, when not the provider's default."""
    api_key_env: str | None
    """Name of the environment variable holding the key."""
    settings: ModelSettings = ModelSettings()
    """How the planner asks it (fields unset take the planner's defaults)."""
    keys: Mapping[str, str] = {}
    """Where each of `api_base`, `api_key_env` and the settings' fields is set, or
    would be set for this model: a key path in the config, or a variable's name."""


# Where a level of the choice writes its keys: (prefix of config keys, environment variables).
_ENV_KEYS = {
    "model": MODEL_ENV_VAR,
    "api_base": API_BASE_ENV_VAR,
    "api_key_env": API_KEY_ENV_ENV_VAR,
}


def model_for(
    agent: AgentConfig | None, config: TaskorchConfig, env: Mapping[str, str] | None = None
) -> ModelChoice:
    """Pick the model for an agent: its own, else the config's, else `TASKORCH_MODEL`.

    The endpoint, key and settings go with the model: `api_base`, `api_key_env`
    and each field of `model_settings` are taken from the level that named the
    model or a more specific one (agent over config over environment), never
    from a less specific one, so an agent that names its own model is never
    sent to another model's endpoint, nor asked with another model's settings.
    When nothing names a model, they are the most specific ones set.

    Args:
        agent: The agent, or `None` for the config's defaults.
        config: The loaded config.
        env: The environment; `os.environ` when `None`.
    """
    environ = os.environ if env is None else env
    # (values, where each key is written), most specific first.
    levels: list[tuple[dict[str, Any], dict[str, str]]] = []
    if agent is not None:
        levels.append(_level(agent, f"agents.{agent.name}."))
    levels.append(_level(config, ""))
    levels.append(
        (
            {
                "model": environ.get(MODEL_ENV_VAR) or None,
                "api_base": environ.get(API_BASE_ENV_VAR) or None,
                "api_key_env": environ.get(API_KEY_ENV_ENV_VAR) or None,
            },
            {**_level(config, "")[1], **_ENV_KEYS},  # its settings go in the config
        )
    )
    chosen = next((i for i, (values, _) in enumerate(levels) if values["model"]), len(levels) - 1)
    usable = levels[: chosen + 1]
    merged: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for name in ("api_base", "api_key_env", *ModelSettings.model_fields):
        setter = next((lv for lv in usable if lv[0].get(name) is not None), usable[-1])
        merged[name] = setter[0].get(name)
        keys[name] = setter[1][name]
    return ModelChoice(
        model=levels[chosen][0]["model"],
        api_base=merged.pop("api_base"),
        api_key_env=merged.pop("api_key_env"),
        settings=ModelSettings.model_validate(merged),
        keys=keys,
    )


def _level(
    owner: AgentConfig | TaskorchConfig, prefix: str
) -> tuple[dict[str, Any], dict[str, str]]:
    settings = owner.model_settings.model_dump()
    values = {"model": owner.model, "api_base": owner.api_base, "api_key_env": owner.api_key_env}
    keys = {name: f"{prefix}{name}" for name in values}
    keys.update({name: f"{prefix}model_settings.{name}" for name in settings})
    return {**values, **settings}, keys
