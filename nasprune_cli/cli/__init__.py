"""The `nasprune` command line: a Typer app with one file per command."""
