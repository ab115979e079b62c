"""Synthetic job folders for the report tests (README, "Reading results"), with hand-chosen rows.

`write_job` writes one job folder; `write_standard_sweep` writes a small sweep whose table values are
worked out by hand in tests/test_report.py (and in the comments below).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def job_config(
    *,
    model: str = "tiny_random",
    dataset: str = "gsm8k",
    policy: str = "h2o",
    tokens: int | None = 128,
    slack: int = 1,
    shard: tuple[int, int] = (0, 1),
    policy_params: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A resolved config as the pipeline writes it; `overrides` sets dotted keys."""
    # The shape of conf/config.yaml once resolved (kvexp.pipeline.job writes it so).
    cfg: dict[str, Any] = {
        "model": {
            "name": model,
            "source": "tiny_random",
            "path": None,
            "dtype": "float32",
            "device": "cpu",
            "sampling": {"temperature": 0.0, "top_p": 1.0, "top_k": 0},
        },
        "dataset": {
            "name": dataset,
            "source": "auto",
            "seed": 0,
            "limit": 10,
            "shard": {"index": shard[0], "count": shard[1]},
        },
        "policy": {"name": policy, **(policy_params or {})},
        # the full cache records no budget (kvexp.pipeline.folder.record_budget)
        "budget": {"tokens": None, "slack": None} if policy == "full" else {"tokens": tokens, "slack": slack},
        "generation": {
            "max_new_tokens": 64,
            "batch_size": 4,
            "num_samples": 1,
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": 0,
            "repetition": {"enabled": False, "max_period": 64, "min_repeats": 4, "min_span": 32},
        },
        "seed": 0,
        "trace": {"n_problems": 3},
        "resume": {"retry_errors": False},
        "output_root": "outputs",
        "logger": {"name": "wandb", "mode": "offline", "project": "kvexp-tests", "group": "test-sweep"},
    }
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def sample_row(
    id: str,
    correct: bool,
    *,
    sample_idx: int = 0,
    prediction: Any = None,
    output_ids: list[int] | None = None,
    stop_reason: str | None = "eos",
    kv_bytes_peak: int = 1024,
    decode_s: float | None = 1.0,
    error: str | None = None,
    prompt_kept: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One samples.jsonl row; n_output_tokens follows output_ids (default: 20 tokens 0..19);
    prompt_kept: (prompt_kept_share, prompt_kept_any), absent as in rows written before them."""
    ids = list(range(20)) if output_ids is None else list(output_ids)
    return {
        "id": id,
        "sample_idx": sample_idx,
        "prompt": f"<user>question {id}</user>",
        "output": " ".join(map(str, ids)),
        "output_ids": ids,
        "prediction": f"p{id}" if prediction is None else prediction,
        "gold": f"p{id}",
        "correct": correct,
        "n_prompt_tokens": 50,
        "n_output_tokens": len(ids),
        "stop_reason": stop_reason,
        "peak_resident_tokens": 100,
        "n_evicted_tokens": 0,
        "kv_bytes_peak": kv_bytes_peak,
        "prefill_s": 0.1,
        "decode_s": decode_s,
        "error": error,
        **({} if prompt_kept is None else {"prompt_kept_share": prompt_kept[0], "prompt_kept_any": prompt_kept[1]}),
    }


def error_row(id: str, message: str = "pinned prompt does not fit the budget") -> dict[str, Any]:
    row = sample_row(id, False, output_ids=[], stop_reason=None, decode_s=None, error=message)
    row["prediction"] = None
    return row


def write_job(
    path: Path,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    state: str = "done",
    n_target: int | None = None,
    error: str | None = None,
    traces: list[dict[str, Any]] | None = None,
    metrics: dict[str, Any] | None = None,
    torn_tail: bool = False,
    status: bool = True,
) -> Path:
    """Write one job folder. `torn_tail` appends half a JSON line, as a kill mid-write leaves."""
    path.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config), path / "config.yaml")
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn_tail:
        text += json.dumps(sample_row("torn", True))[:37]
    (path / "samples.jsonl").write_text(text)
    if status:
        target = len(rows) if n_target is None else n_target
        status_obj = {  # as kvexp.pipeline.job.StatusFile writes it
            "state": state,
            "n_target": target,
            "n_done": len(rows),
            "n_pending": target - len(rows),
            "error": error,
        }
        (path / "status.json").write_text(json.dumps(status_obj))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    if traces is not None:
        (path / "traces.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    return path


def prompt_share_trace(id: str, shares: list[float]) -> list[dict[str, Any]]:
    """traces.jsonl rows of one problem with the given prompt_resident_share per decode step."""
    return [
        {
            "id": id,
            "sample_idx": 0,
            "step": step,
            "resident_tokens": 100,
            "evicted_tokens": step,
            "prompt_resident_share": share,
        }
        for step, share in enumerate(shares)
    ]


#: Bogus metrics.json content: the report must recompute from rows and never read these numbers.
BOGUS_METRICS = {"accuracy": 0.999, "n": 1, "accuracy_ci95": [0.0, 1.0], "mean_output_tokens": 1e9}

GSM_IDS = [f"g{i}" for i in range(10)]
MATH_IDS = [f"m{i}" for i in range(4)]


def write_standard_sweep(root: Path) -> Path:
    """A sweep of model tiny_random on gsm8k (10 problems) and math500 (4 problems).

    gsm8k:
    - full: correct g0..g6 (7/10); 20 output tokens 0..19 each, eos; 1 s decode; 4096 KV bytes.
    - h2o B=128: correct g0, g7 (2/10): 6 losses (g1..g6), 1 gain (g7) -> McNemar p = 0.125.
      40 tokens each, equal to the full output for the first 5 ids; same prediction on g0, g7
      only. Stops: g0..g2 max_new_tokens, g3 repetition. 2 s decode (20 tok/s); KV 1024, g9 2048.
      Traces for g0 (10 steps) and g1 (5 steps).
    - h2o B=256: as full except g6 wrong (prediction and output differ from token 10 on).
    - snapkv B=128: two shards (g0..g4, g5..g9); correct g0..g5; g9 is an error row.
    - snapkv B=256: absent (a hole in the grid).
    - tova B=128: failed after 3 rows; tova B=256: running, 5 of 10 rows.
    math500: full correct m0, m1; h2o B=128 correct m0; h2o B=256 correct m0..m2.
    """
    sweep = root / "sweep"
    n = iter(range(100))

    def job(rows, **kw) -> Path:
        cfg_kw = {k: kw.pop(k) for k in ("dataset", "policy", "tokens", "shard") if k in kw}
        return write_job(sweep / str(next(n)), job_config(**cfg_kw), rows, **kw)

    full_ids = list(range(20))
    job([sample_row(g, i <= 6, kv_bytes_peak=4096) for i, g in enumerate(GSM_IDS)], policy="full")
    h2o_128 = []
    for i, g in enumerate(GSM_IDS):
        stop = "max_new_tokens" if i <= 2 else ("repetition" if i == 3 else "eos")
        h2o_128.append(
            sample_row(
                g,
                i in (0, 7),
                prediction=None if i in (0, 7) else f"x{i}",
                output_ids=full_ids[:5] + [999] * 35,
                stop_reason=stop,
                decode_s=2.0,
                kv_bytes_peak=2048 if i == 9 else 1024,
            )
        )
    traces = prompt_share_trace("g0", [1 - 0.1 * s for s in range(10)])
    traces += prompt_share_trace("g1", [1 - 0.2 * s for s in range(5)])
    job(h2o_128, policy="h2o", tokens=128, traces=traces)
    h2o_256 = [
        sample_row(g, i <= 5, kv_bytes_peak=2048)
        if i != 6
        else sample_row(g, False, prediction="x6", output_ids=full_ids[:10] + [999] * 10, kv_bytes_peak=2048)
        for i, g in enumerate(GSM_IDS)
    ]
    job(h2o_256, policy="h2o", tokens=256, traces=prompt_share_trace("g0", [1.0] * 10))
    snap = [sample_row(g, i <= 5) for i, g in enumerate(GSM_IDS[:9])] + [error_row("g9")]
    job(snap[:5], policy="snapkv", tokens=128, shard=(0, 2), metrics=BOGUS_METRICS)
    job(snap[5:], policy="snapkv", tokens=128, shard=(1, 2), metrics=BOGUS_METRICS)
    job(
        [sample_row(g, True) for g in GSM_IDS[:3]],
        policy="tova",
        tokens=128,
        state="failed",
        n_target=10,
        error="RuntimeError: CUDA out of memory\nTried to allocate 2.00 GiB",
    )
    job(
        [sample_row(g, i <= 2) for i, g in enumerate(GSM_IDS[:5])],
        policy="tova",
        tokens=256,
        state="running",
        n_target=10,
    )
    job([sample_row(m, i <= 1) for i, m in enumerate(MATH_IDS)], dataset="math500", policy="full")
    job([sample_row(m, i == 0) for i, m in enumerate(MATH_IDS)], dataset="math500", tokens=128)
    job([sample_row(m, i <= 2) for i, m in enumerate(MATH_IDS)], dataset="math500", tokens=256)
    return sweep
