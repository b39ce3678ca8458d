"""CLI subcommands, one module each; each defines a click command named `command`."""
