"""Errors that are the user's to fix: the CLI prints them on one line and exits with code 2."""
from __future__ import annotations

import os


def printable(text: str) -> str:
    """``text`` with its control characters escaped (a newline inside an argument), so that
    a message quoting it stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def error_line(message: str) -> str:
    """The one line the CLI prints for bad input (exit code 2), and the app shows."""
    return f"dreamfusion: error: {printable(message)}"


class UserError(Exception):
    """Bad input (prompt, config, path): reported without a traceback."""


class WriteError(UserError):
    """A file could not be written (full disk, no permission); its previous version is intact."""

    def __init__(self, path: os.PathLike, cause: OSError) -> None:
        self.path, self.cause = path, cause
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(f"cannot write {os.fspath(path)}: {reason}; "
                         f"its previous version, if any, is intact")


class TrainingFailed(Exception):
    """Training could not go on (it diverged); the run keeps its last good checkpoint."""


class Interrupted(Exception):
    """The user stopped the run (Ctrl-C or SIGTERM) and a checkpoint was saved."""
