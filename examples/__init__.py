"""Example downstream MCP servers shipped with taskorch (stdio, no network).

Run one with `python -m examples.text_server` (or `stats_server`,
`clock_server`, `notes_server`); `examples/config.json` wires all four into
taskorch, and `taskorch demo` uses them.
"""
