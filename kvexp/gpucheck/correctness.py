"""Correctness on the device with the organism in fp32 (README, "The model organism"): the full cache and
three policies at B=128 on the first problems of the README's held-out set (chain, 20 steps, seed 0).

- batching: each policy's rows under continuous batching (ROWS rows, requests entering as rows free
  up) equal the same requests run one at a time;
- accuracy: the correct count is within one problem of the committed CPU reference on the same
  problems (reference.json, `python -m kvexp.gpucheck --device cpu --write-reference ...`);
- generate: the full cache's tokens equal transformers' greedy `generate`, one problem at a time.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from kvexp.data.chain import load_chain_problems
from kvexp.gpucheck.verdicts import Findings, all_equal, count_within, info
from kvexp.organism.evaluate import graded_outputs, load_organism, organism_preset, prompt_ids
from kvexp.policies import policy_class

POLICIES = ("full", "h2o", "snapkv", "streaming_llm")
BUDGET = 128
ROWS = 8  # fewer rows than problems, so most requests enter a running batch
REFERENCE = Path(__file__).resolve().parent / "reference.json"
# the README's organism table: dataset=chain with its conf defaults (first `n` of its 100 problems)
CHAIN = dict(seed=0, steps=20, facts=8, distractors=4, split="test")


def token_digest(ids: list[int]) -> str:
    """A short fingerprint of a row's tokens, to compare rows with a reference made elsewhere."""
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:12]


def load_reference(path: Path = REFERENCE) -> dict:
    return json.loads(path.read_text())


def check_problem_count(n: int, reference: dict) -> None:
    """Refuse, before any model loads, more problems than the reference holds."""
    have = reference["problems"]
    if not 1 <= n <= have:
        raise SystemExit(
            f"--problems {n}: the committed CPU reference covers 1 to {have} problems; choose one of those"
        )


def run_policy(model, tokenizer, problems, policy: str) -> dict:
    """One policy at BUDGET: continuous batching and one at a time, each row's tokens and grade."""
    t0 = time.perf_counter()
    batched = {
        out.key: (out, ok) for out, ok in graded_outputs(model, tokenizer, problems, policy, BUDGET, batch_size=ROWS)
    }
    t1 = time.perf_counter()
    alone = {out.key: out for out, _ in graded_outputs(model, tokenizer, problems, policy, BUDGET, batch_size=1)}
    t2 = time.perf_counter()
    keys = [p.id for p in problems]
    return {
        "policy": policy,
        "budget": BUDGET if policy_class(policy).evicts else None,
        "rows": ROWS,
        "problems": len(keys),
        "errors": sum(batched[k][0].error is not None for k in keys),
        "correct": [batched[k][1] for k in keys],
        "digests": [token_digest(batched[k][0].output_ids) for k in keys],
        "equal_alone": sum(batched[k][0].output_ids == alone[k].output_ids and not alone[k].error for k in keys),
        "output_ids": {k: batched[k][0].output_ids for k in keys},
        "batched_s": round(t1 - t0, 2),
        "alone_s": round(t2 - t1, 2),
    }


def generate_rows(model, tokenizer, problems, max_new_tokens: int) -> dict:
    """transformers' greedy `generate`, one problem at a time (no padding): output ids per problem id."""
    preset = organism_preset()
    device = next(model.parameters()).device
    rows = {}
    with torch.inference_mode():
        for p in problems:
            ids = torch.tensor([prompt_ids(tokenizer, p.question, preset)], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id,
            )
            rows[p.id] = out[0, ids.shape[1] :].tolist()
    return rows


def run(device: torch.device, n_problems: int, reference: dict | None, findings: Findings) -> None:
    """Every correctness check on `device`, into `findings` (section "organism"). Without a reference
    (while making one), the checks against it are left out."""
    model, tokenizer = load_organism()
    model = model.to(device=device, dtype=torch.float32).eval()
    problems = load_chain_problems(n_problems, **CHAIN)
    figures = findings.section("organism")
    figures.update(problems=n_problems, budget=BUDGET, rows=ROWS, policies={})
    for policy in POLICIES:
        r = run_policy(model, tokenizer, problems, policy)
        figures["policies"][policy] = {k: v for k, v in r.items() if k != "output_ids"}
        name = f"organism {policy}" if policy == "full" else f"organism {policy} B={BUDGET}"
        found = [
            all_equal(
                f"organism.{policy}.batching",
                f"{name}: rows under continuous batching ({ROWS} rows) = run one at a time",
                r["equal_alone"],
                n_problems,
            )
        ]
        if reference is not None:
            ref = reference["policies"][policy]
            found.append(
                count_within(
                    f"organism.{policy}.accuracy",
                    f"{name}: correct problems vs the CPU reference",
                    sum(r["correct"]),
                    sum(ref["correct"][:n_problems]),
                    n_problems,
                )
            )
            same = sum(d == rd for d, rd in zip(r["digests"], ref["digests"][:n_problems]))
            found.append(
                info(
                    f"organism.{policy}.vs_cpu",
                    f"{name}: rows token for token = the CPU reference's",
                    f"{same}/{n_problems} equal",
                )
            )
        if policy == "full":
            steps = max(p.meta["steps"] for p in problems)
            hf = generate_rows(model, tokenizer, problems, 15 * steps + 16)  # graded_outputs' default length
            equal = sum(hf[p.id] == r["output_ids"][p.id] for p in problems)
            figures["generate_equal"] = equal
            found.append(
                all_equal("organism.full.generate", f"{name}: tokens = transformers' generate", equal, n_problems)
            )
        for v in found:
            findings.add(v)
        findings.log(f"{'':9}({policy}: continuous batching {r['batched_s']}s, one at a time {r['alone_s']}s)")


def reference_from(figures: dict, device: torch.device) -> dict:
    """The reference file's content from a run's figures (made on a CPU and committed)."""
    import transformers

    return {
        "made_by": f"python -m kvexp.gpucheck --device cpu --problems {figures['problems']} "
        "--write-reference kvexp/gpucheck/reference.json",
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "problems": figures["problems"],
        "chain": CHAIN,
        "budget": BUDGET,
        "policies": {
            name: {"correct": p["correct"], "digests": p["digests"], "accuracy": sum(p["correct"]) / len(p["correct"])}
            for name, p in figures["policies"].items()
        },
    }
