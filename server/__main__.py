"""`python -m server`: the `taskorch` command line."""

from server.cli import main

main()
