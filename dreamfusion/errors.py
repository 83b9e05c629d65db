"""Errors that are the user's to fix: the CLI prints them on one line and exits with code 2."""


class UserError(Exception):
    """Bad input (prompt, config, path): reported without a traceback."""
