"""Example downstream MCP servers shipped with taskorch (stdio, no network), and a plan.

Run one with `python -m server.examples.text_server` (or `stats_server`,
`clock_server`, `notes_server`) from any Python where taskorch is installed;
`examples/config.json` in the repository wires all four into taskorch, and
`taskorch demo` runs `plan.json` on them.
"""
