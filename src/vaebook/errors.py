"""Errors that vaebook reports to a user as one message, never as a traceback.

Every problem a user can cause or fix (missing data, a corrupt checkpoint, a
diverged run, an unknown experiment) raises a subclass of `VaebookError` whose
message says what was wrong and how to fix it. The command line catches these and
prints the message alone; library users can catch `VaebookError`.
"""

from __future__ import annotations


class VaebookError(Exception):
    """Base class: a problem with the user's input or environment, with a fix in its message."""


class DataNotFoundError(VaebookError):
    """A data set was not found in any of the places searched."""


class DataCorruptError(VaebookError):
    """A data file exists but cannot be read as what it claims to be."""


class CheckpointError(VaebookError):
    """A checkpoint or weights file is missing, truncated, tampered with or does not match its config."""


class TrainingDivergedError(VaebookError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class DeviceError(VaebookError):
    """The requested device (cuda, mps, cpu) is not available."""
