"""A disk that fills up, for the job's and the report's writers, without root or a real small filesystem.

`FullDisk.install(monkeypatch)` replaces, in kvexp's own modules only, what their writes go through: the job
folder's `open` (samples.jsonl, traces.jsonl), the temporary files of atomic replaces (status.json,
metrics.json, run_meta.json) and OmegaConf.save (config.yaml). Once full, a write fails as the OS fails it
on a full disk: OSError ENOSPC without a file name. Space comes back only as the job frees it: a removed
file under the folder (the status reserve) lets one more atomic replace in. In a subprocess:
`python -c "import fakedisk; fakedisk.FullDisk(after_rows=2).install(); from kvexp.main import cli; cli()"`.
"""

from __future__ import annotations

import builtins
import errno
import os
import tempfile
from pathlib import Path

NO_SPACE = (errno.ENOSPC, "No space left on device")


class _FillingFile:
    """A file whose writes fail once the disk is full; counts the sample rows written before that."""

    def __init__(self, disk: FullDisk, f):
        self._disk, self._f, self.name = disk, f, f.name

    def write(self, data):
        if self._disk.full:
            raise OSError(*NO_SPACE)
        n = self._f.write(data)
        if Path(self.name).name == "samples.jsonl" and self._disk.after_rows is not None:
            self._disk.rows += 1
            self._disk.full = self._disk.rows >= self._disk.after_rows
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class FullDisk:
    def __init__(self, after_rows: int | None = None, after_replaces: int | None = None):
        """Full after `after_rows` sample rows, or after `after_replaces` atomic replaces (0: full now)."""
        self.after_rows, self.after_replaces, self.rows, self.replaces = after_rows, after_replaces, 0, 0
        self.full = after_replaces == 0 or after_rows == 0
        self.reserves: set[Path] = set()  # files seen that the job may free to make room

    def open(self, path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FillingFile(self, f) if any(c in mode for c in "wa") else f

    def mkstemp(self, prefix="", dir=None, **kwargs):
        folder = Path(dir)
        held = {p for p in folder.glob(".*reserve*")}
        freed = self.reserves - held
        self.reserves |= held
        if self.full and not freed:
            raise OSError(*NO_SPACE)
        self.reserves -= freed  # the space freed is used up by this file
        self.replaces += 1
        self.full = self.full or self.replaces == self.after_replaces
        return tempfile.mkstemp(prefix=prefix, dir=dir, **kwargs)

    def save_config(self, real_save):
        def save(config, f, resolve=False):
            if self.full:
                raise OSError(*NO_SPACE)
            return real_save(config, f, resolve=resolve)

        return save

    def install(self, monkeypatch=None) -> FullDisk:
        """With pytest's `monkeypatch` (undone after the test), else for good (a subprocess)."""
        import types

        from omegaconf import OmegaConf

        import kvexp.files
        import kvexp.pipeline.folder

        put = (lambda *a: monkeypatch.setattr(*a, raising=False)) if monkeypatch else setattr
        put(kvexp.pipeline.folder, "open", self.open)
        put(kvexp.files, "tempfile", types.SimpleNamespace(mkstemp=self.mkstemp))
        put(OmegaConf, "save", self.save_config(OmegaConf.save))
        return self


def install_in_subprocess() -> None:
    """For `python -c`: the disk fills after KVEXP_TEST_FULL_AFTER_ROWS sample rows."""
    FullDisk(after_rows=int(os.environ["KVEXP_TEST_FULL_AFTER_ROWS"])).install()
