"""Writing shared files safely: a file replaced in one step, with the mode the umask gives, so a
reader (another job, a teammate) never sees half of it and can read it; and a full disk named as such,
with the file that could not be written (the OS's own error names none for a failed write)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

#: The errors of a write that found no room: no space left, or the user's disk quota reached.
_NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFull(OSError):
    """A write that found no space left on its device (or no quota left), naming the file."""

    def __init__(self, path: Path | str, cause: OSError):
        super().__init__(cause.errno, cause.strerror, str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {_NO_ROOM.get(self.errno, self.strerror)}"


def finds_no_room(exc: BaseException) -> bool:
    """Whether `exc` is a write that found no space (or quota) left."""
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


@contextmanager
def naming_a_full_disk(path: Path | str) -> Iterator[None]:
    """Within the block, a write that finds no room raises DiskFull naming `path`, and nothing chained."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as e:
        if not finds_no_room(e):
            raise
        raise DiskFull(path, e) from None


@contextmanager
def replaced_atomically(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file to write (`mode` "w" or "wb") that replaces `path` in one step when the block ends. Its
    mode follows the umask like any new file (tempfile's own 0600 would lock teammates out). A full disk
    raises DiskFull naming `path`, and leaves `path` as it was."""
    with naming_a_full_disk(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~umask())
            with os.fdopen(fd, mode) as f:
                yield f
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def append_bytes(f: IO[bytes], data: bytes) -> None:
    """Append `data` to an unbuffered file, however many writes the OS takes: a full disk raises
    DiskFull (naming the file) at once, with no buffered rest left to fail again when the file closes."""
    with naming_a_full_disk(f.name):
        view = memoryview(data)
        while view:
            view = view[f.write(view) :]


def umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask
