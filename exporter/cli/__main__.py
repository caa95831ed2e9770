"""`python -m exporter.cli`: the same as the `vitexport` command."""

from . import main

main()
