"""Errors raised by the dataset layer."""

from __future__ import annotations


class DatasetUnavailableError(RuntimeError):
    """No source that `load_problems` was allowed to use could provide the dataset.

    The message lists every place that was tried (hub id and the error it gave, the bundled path
    or 'no bundled copy') and what the user can do about it, so a failed sweep cell explains
    itself in its `status.json` without anyone reading a traceback.
    """
