"""`python -m server.cli`: the `taskorch` command line."""

from server.cli.main import main

main()
