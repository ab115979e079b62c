"""`make gpu-wheels` checks the folder it wrote: pure-Python wheels only (one `pip install --no-index
--no-deps <folder>/*.whl` then works on any GPU image), kvexp's among them, at most 60 MiB in all, so
it can be carried to a machine without network.

    python -m kvexp.gpucheck.wheels gpu-wheels
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_BYTES = 60 * 2**20


def problems(folder: Path) -> list[str]:
    """What keeps `folder` from being carried and installed as it is; empty when it is fine."""
    wheels = sorted(folder.glob("*.whl"))
    found = []
    if not any(w.name.startswith("kvexp-") for w in wheels):
        found.append(f"no kvexp wheel in {folder}")
    binary = [w.name for w in wheels if not w.name.endswith("-none-any.whl")]
    if binary:
        found.append(f"not pure-Python (a GPU image's Python or platform may not match): {', '.join(binary)}")
    others = [p.name for p in folder.iterdir() if p.suffix != ".whl"]
    if others:
        found.append(f"not wheels (the install line takes *.whl): {', '.join(others)}")
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    if total > MAX_BYTES:
        found.append(f"{total / 2**20:.1f} MiB in all, over the {MAX_BYTES / 2**20:.0f} MiB limit")
    return found


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m kvexp.gpucheck.wheels <folder of wheels>", file=sys.stderr)
        return 2
    folder = Path(args[0])
    found = problems(folder)
    for problem in found:
        print(f"gpu-wheels: {problem}", file=sys.stderr)
    if not found:
        wheels = sorted(folder.glob("*.whl"))
        size = sum(w.stat().st_size for w in wheels) / 2**20
        print(f"{folder}: {len(wheels)} pure-Python wheels, {size:.1f} MiB; on the GPU machine:")
        print(f"    pip install --no-index --no-deps {folder}/*.whl")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
