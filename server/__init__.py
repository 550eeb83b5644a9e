"""The face: the MCP server, the Python API, the CLI and config loading."""

__all__: list[str] = []
