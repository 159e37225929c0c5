"""`pymeshctl`, pymesh's command line (the typer app is `pymesh.cli.main.app`)."""
