"""Service functions: what the API (and the CLI) do, over Temporal and the database."""
