"""Errors of the drug library: bad facts, a missing or corrupt library file, a bad query."""

from __future__ import annotations


class LibraryError(ValueError):
    """A library file or the manifest it is built from is missing, corrupt or malformed.

    The library does not import ``rxvision.data`` (and so torch): searching a library is
    light. The CLI reports this error as the user's to fix.
    """


class QueryError(LibraryError):
    """A search query that cannot be answered: nothing to search by, or a value out of range."""
