"""Writing shared files safely: a file replaced in one step, with the mode the umask gives, so a
reader (another job, a teammate) never sees half of it and can read it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def replaced_atomically(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file to write (`mode` "w" or "wb") that replaces `path` in one step when the block ends. Its
    mode follows the umask like any new file (tempfile's own 0600 would lock teammates out)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask
