"""Subcommands of the ``stepcrawl`` CLI: argument parsing and progress display only; the work
is done by the stage functions in ``stepcrawl``'s other modules."""
