"""Errors that reach the user as one clear line.

Library code raises :class:`InputError` (bad file, bad option value, bad data);
the CLI turns it into ``click.ClickException``-style output with exit code 2.
"""
from __future__ import annotations


class CrossmodalError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    exit_code = 1


class InputError(CrossmodalError, ValueError):
    """Bad input: a file that is missing, corrupt, of the wrong kind or shape.

    The message names the file (when there is one) and the problem, in one line.
    """

    exit_code = 2

    def __init__(self, message: str, path: object | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UnsupportedError(InputError):
    """The input is well formed but uses something the toolkit cannot convert."""


class FormatNote(UserWarning):
    """Something a reader ignored and says so (a field of a newer minor IR format): the CLI prints
    it as one ``note:`` line; in Python it is an ordinary warning."""
