"""Short result tables: one per job when it ends, one over a whole sweep when the sweep ends
(a Hydra callback that reads every metrics.json below the sweep folder)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from kvexp.pipeline.folder import METRICS

log = logging.getLogger(__name__)

COLUMNS = (  # header, metrics key, format
    ("model", "model", "{}"),
    ("dataset", "dataset", "{}"),
    ("policy", "policy", "{}"),
    ("budget", "budget", "{}"),
    ("n", "n", "{}"),
    ("err", "n_errors", "{}"),
    ("acc", "accuracy", "{:.3f}"),
    ("ci95", "accuracy_ci95", "[{:.2f},{:.2f}]"),
    ("out_tok", "mean_output_tokens", "{:.0f}"),
    ("trunc", "truncation_rate", "{:.2f}"),
    # the job's throughput (tokens of every row over the wall time of decoding them together), which rises
    # with the rows decoding at once; metrics.json's decode_tokens_per_s is what one row sees
    ("throughput_tok/s", "throughput_tokens_per_s", "{:.1f}"),
    ("kv_peak_MiB", "kv_bytes_peak", "{:.2f}"),
)


def _cell(metrics: dict[str, Any], key: str, fmt: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "-"
    if key == "kv_bytes_peak":
        value = value / 2**20
    return fmt.format(*value) if isinstance(value, (list, tuple)) else fmt.format(value)


#: Swept keys that the cell name does not show (kvexp.launch.axes), read from the folder name.
AXES = ("swept", "axes", "{}")


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    columns = COLUMNS + ((AXES,) if any(m.get("axes") for m in rows) else ())
    body = [[_cell(m, key, fmt) for _, key, fmt in columns] for m in rows]
    header = [h for h, _, _ in columns]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def collect_metrics(root: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(Path(root).rglob(METRICS)):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        # `h2o-b128-s1,policy.window=16`: the swept values after the cell name
        metrics["axes"] = path.parent.name.partition(",")[2] or None
        found.append(metrics)
    return found


class SweepSummaryCallback(Callback):
    """Prints the table of every finished cell below the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        metrics = collect_metrics(root)
        if metrics:
            print(f"\nkvexp sweep {root} ({len(metrics)} cells)\n{format_table(metrics)}", flush=True)
