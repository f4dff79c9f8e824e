"""The base of every error a user can cause: a bad recipe, dataset, checkpoint, image, video, flag or
store URL, offline weights, diverged training. Each module defines its own errors as subclasses of
`UserError`; the CLI catches this one class and prints the one-line message instead of a traceback.

A leaf: it imports nothing, so every module can import it.
"""


class UserError(Exception):
    """An error whose message is for the user: one line, naming what is wrong and, where it can, the fix."""


class UsageError(UserError, ValueError):
    """A flag value the command cannot use (e.g. an unknown class name)."""
