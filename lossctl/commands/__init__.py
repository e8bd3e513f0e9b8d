"""One module per CLI command. Each imports only typer at top level (fast ``--help``)."""
