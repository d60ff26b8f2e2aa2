"""`python -m bratskeras.cli` runs the command line."""

from bratskeras.cli import main

main()
