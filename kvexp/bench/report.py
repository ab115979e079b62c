"""The printed table and target lines."""

from __future__ import annotations


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_rows(rows: list[dict]) -> str:
    head = (
        f"{'model':<16} {'engine':<11} {'policy':<13} {'budget':>6} {'slack':>5} {'new':>5} {'bs':>3} "
        f"{'tok/s':>8} {'tok/s*':>8} {'ms/step':>8} {'cpu ms':>7} {'early*':>8} {'prefill s':>9} "
        f"{'peak tok':>8} {'KV MiB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        start = (
            f"{r['model']:<16} {r['engine']:<11} {r['policy']:<13} {_f(r['budget'], 'd'):>6} "
            f"{_f(r['slack'], 'd'):>5} {r['new_tokens']:>5} {r['batch']:>3} "
        )
        if r.get("error"):
            lines.append(start + "ERROR " + r["error"].splitlines()[0][:80])
            continue
        kv = r["kv_bytes_peak"] / 2**20
        lines.append(
            start + f"{_f(r['decode_tokens_per_s'], '.1f'):>8} {_f(r['decode_tokens_per_s_robust'], '.1f'):>8} "
            f"{_f(r['ms_per_step'], '.2f'):>8} {_f(r.get('cpu_ms_per_step'), '.2f'):>7} "
            f"{_f(r['early_decode_tokens_per_s'], '.1f'):>8} "
            f"{_f(r['prefill_s'], '.3f'):>9} {r['peak_resident_tokens']:>8} {kv:>8.2f}"
        )
    lines.append(
        "tok/s: batch x decode steps / decode time; tok/s*: the robust figure the targets use (batch / median "
        "of block-mean step times); early*: full cache only, tok/s* while it held <= the target budget; "
        "cpu ms: process CPU time (all threads) per step; KV MiB: per sequence at peak residency"
    )
    return "\n".join(lines)


def format_targets(targets: list[dict]) -> str:
    if not targets:
        return "targets: none measured by this selection"
    width = max(len(t["detail"]) for t in targets)
    lines = [
        "targets: ratio of tok/s* (wall clock) from runs side by side in this process; 'cpu' is the same "
        "ratio in tokens per CPU-second, a cross-check that other processes on the machine barely move:"
    ]
    for t in targets:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.3f}"
        need = (
            "reference, not a target"
            if t.get("reference")
            else f"need {'<=' if t.get('at_most') else '>='} {t['threshold']}"
        )
        cpu = "" if t.get("cpu_ratio") is None else f"  cpu {t['cpu_ratio']:.3f} {t['cpu_status']}"
        lines.append(f"  {t['status']:<4} {t['detail']:<{width}}  {ratio:>7} ({need}){cpu}")
    return "\n".join(lines)


def format_workload(section: dict) -> str:
    lines = [
        f"{'workload run':<30} {'model':<16} {'rows':>5} {'tokens':>8} {'wall s':>8} {'tok/s':>9} "
        f"{'steady':>9} {'util':>5}"
    ]
    for run in section.get("batching", []) + section.get("smollm2", []) + section.get("auto", []):
        lines.append(
            f"{run['run']:<30} {run['model']:<16} {run['rows']:>5} {run['tokens']:>8} {run['wall_s']:>8.2f} "
            f"{run['tokens_per_s']:>9.1f} {_f(run.get('steady_tokens_per_s'), '.1f'):>9} "
            f"{run['utilization']:>5.2f}"
        )
    lines.append(
        "tok/s: the whole workload (prefills and the final drain included); steady: from the first decode "
        "step to the last admission, while requests wait; util: live / allocated rows per decode step"
    )
    lines.append(
        f"\n{'policy state at B':<18} {'KV MiB/row':>10} {'state MiB/row':>13} {'state/KV':>8} "
        f"{'evict MiB/row':>13} {'evict MiB shared':>16}"
    )
    for r in section.get("state", []):
        lines.append(
            f"{r['policy'] + ' B' + str(r['budget']):<18} {r['kv_bytes_per_row'] / 2**20:>10.1f} "
            f"{r['state_bytes_per_row'] / 2**20:>13.2f} {r['state_over_kv']:>8.3f} "
            f"{r['eviction_transient_bytes_per_row'] / 2**20:>13.2f} "
            f"{r['eviction_transient_bytes_shared'] / 2**20:>16.1f}"
        )
    lines.append(f"\n{'aten ops per decode step':<26} {'ops':>7} {'/ full':>7}")
    for r in section.get("ops", []):
        cfg = r["policy"] if r["budget"] is None else f"{r['policy']} B{r['budget']}/S{r['slack']}"
        lines.append(f"{cfg:<26} {r['ops_per_step']:>7.1f} {r.get('ops_vs_full', 1.0):>7.2f}")
    return "\n".join(lines)
