"""One module per ``interp`` subcommand; see ``interp.cli``."""
