"""Config: one JSON file, Claude Desktop's `mcpServers` pasted verbatim, plus taskorch's keys.

`model` (what the file says), `load` (where things are, reading the file),
`parse` (the top level, agents, sections), `mcp_servers` (server entries),
`env` (`${VAR}` references), `keys` (snake_case and camelCase), `errors`
(key paths, never values), `llm` (the one model selector). The file's format
is described in the README ("Configuration").
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from server.config.llm import API_BASE_ENV_VAR as API_BASE_ENV_VAR
    from server.config.llm import API_KEY_ENV_ENV_VAR as API_KEY_ENV_ENV_VAR
    from server.config.llm import MODEL_ENV_VAR as MODEL_ENV_VAR
    from server.config.llm import ModelChoice as ModelChoice
    from server.config.llm import model_for as model_for
    from server.config.load import CONFIG_ENV_VAR as CONFIG_ENV_VAR
    from server.config.load import DB_ENV_VAR as DB_ENV_VAR
    from server.config.load import default_config_path as default_config_path
    from server.config.load import default_db_path as default_db_path
    from server.config.load import load_config as load_config
    from server.config.load import local_dir as local_dir
    from server.config.load import resolve_config_path as resolve_config_path
    from server.config.load import resolve_db_path as resolve_db_path
    from server.config.model import HttpLimits as HttpLimits
    from server.config.model import Limits as Limits
    from server.config.model import LogLevel as LogLevel
    from server.config.model import TaskorchConfig as TaskorchConfig
    from server.config.parse import parse_config as parse_config
