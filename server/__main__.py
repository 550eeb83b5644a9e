"""`python -m server`: the `taskorch` command line."""

from server.cli.main import main

main()
