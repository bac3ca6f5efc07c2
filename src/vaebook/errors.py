"""Errors that vaebook reports to a user as one message, never as a traceback.

Every problem a user can cause or fix (missing data, a corrupt checkpoint, a
diverged run, an unknown experiment) raises a subclass of `VaebookError` whose
message says what was wrong and how to fix it. The command line catches these and
prints the message alone; library users can catch `VaebookError`.
"""

from __future__ import annotations


class VaebookError(Exception):
    """Base class: a problem with the user's input or environment, with a fix in its message.

    ``str(error)`` is the message in Python's words (``root=``, ``download=True``). Where
    the fix reads differently on the command line (``--data-root``, ``--no-download``),
    ``cli`` holds that wording, and the command line prints it instead.
    """

    def __init__(self, message: str, *, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli = cli or message


class DataNotFoundError(VaebookError):
    """A data set was not found in any of the places searched."""


class DataCorruptError(VaebookError):
    """A data file exists but cannot be read as what it claims to be."""


class CheckpointError(VaebookError):
    """A checkpoint or weights file is missing, truncated, tampered with or does not match its config."""


class TrainingDivergedError(VaebookError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class DeviceError(VaebookError):
    """The requested device (cuda, mps, cpu) or precision is not available."""


class OutputError(VaebookError):
    """A folder or file vaebook must write cannot be created or written (read-only, missing, disk full)."""
