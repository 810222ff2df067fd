"""One error base for everything softprompt raises on purpose; the CLI prints any of them in one line.

`UsageError` is what the user can fix (a bad flag, file, task or input: the message says what to do);
other `SoftpromptError`s are failures of a run (a NaN loss, a corrupt checkpoint). A UsageError is a
ValueError too, and a class that was built on another built-in keeps it as a second base (TrainingError:
RuntimeError, DataNotFoundError: FileNotFoundError), so code catching the built-in classes keeps working.
"""

from __future__ import annotations


class SoftpromptError(Exception):
    """Base of every error softprompt raises on purpose (message: what was wrong, what to do)."""


class UsageError(SoftpromptError, ValueError):
    """A bad argument, file or input; fixing the input fixes the run."""
