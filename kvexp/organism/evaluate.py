"""Accuracy of the organism versus KV budget, every policy, on held-out `chain` problems, through
kvexp's engine (greedy, batched), without Hydra:

    python -m kvexp.organism.evaluate                          # the table in kvexp/organism/RESULTS.md
    python -m kvexp.organism.evaluate --n 30 --policies full   # the full-cache check alone

Policies run with their conf/policy defaults, except SnapKV's observation window (and so its protected
recent window), which is capped at a quarter of the budget so that it can run at small budgets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from kvexp.data.chain import load_chain_problems
from kvexp.errors import ConfigError
from kvexp.grading import grade
from kvexp.organism import CHECKPOINT_DIR
from kvexp.policies import POLICY_NAMES, build_policy, policy_class


def organism_preset(path: Path | str | None = None):
    """The `model=organism` preset (conf/model/organism.yaml), at another checkpoint folder if given:
    the evaluator loads and prompts the model exactly as the pipeline does."""
    from omegaconf import OmegaConf

    from kvexp.models import ModelPreset
    from kvexp.pipeline.config import CONFIG_DIR

    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "organism.yaml"))
    if path is not None and Path(path).resolve() != CHECKPOINT_DIR.resolve():
        cfg["path"] = str(path)
    return ModelPreset.from_cfg(cfg)


def load_organism(path: Path | str | None = None):
    """(model, tokenizer) of the committed checkpoint (or `path`), through kvexp.models."""
    from kvexp.models import ModelSource

    loaded = ModelSource(organism_preset(path)).load()
    return loaded.model, loaded.tokenizer


def prompt_ids(tokenizer, question: str, preset=None) -> list[int]:
    """The prompt the pipeline gives the organism for `question` (`preset`: organism_preset())."""
    from kvexp.models import encode_prompt, format_prompt

    return encode_prompt(tokenizer, format_prompt(tokenizer, preset or organism_preset(), question))


def policy_params(name: str, budget: int | None) -> dict:
    params: dict = {"name": name}
    if name == "snapkv" and budget is not None:
        params["obs_window"] = min(32, budget // 4)
    return params


def graded_outputs(
    model,
    tokenizer,
    problems,
    policy: str,
    budget: int | None,
    *,
    slack: int = 1,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> list[tuple]:
    """Greedy generation over `problems` with one policy and budget through kvexp's engine:
    (Output, correct) per problem, in the order the rows finish (an error row is never correct)."""
    from kvexp.engine import Budget, Engine, GenerationSettings, Request

    pol = build_policy(policy_params(policy, budget))
    # room for the longest reference reply (any organism task) and a few tokens more
    longest = max(len(tokenizer(p.meta["reference_trace"], add_special_tokens=False)["input_ids"]) for p in problems)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens or longest + 16, batch_size=batch_size, eos_token_ids=(tokenizer.eos_token_id,)
    )
    engine = Engine(model, pol, Budget.for_policy(pol, budget, slack), settings)
    preset = organism_preset()
    requests = [Request(p.id, prompt_ids(tokenizer, p.question, preset), seed=seed + i) for i, p in enumerate(problems)]
    gold = {p.id: (p.meta["dataset"], p.gold) for p in problems}
    graded = []
    for out in engine.generate(requests):
        correct = False
        if not out.error:
            dataset, answer = gold[out.key]
            _, correct = grade(dataset, tokenizer.decode(out.output_ids, skip_special_tokens=True), answer)
        graded.append((out, bool(correct)))
    return graded


def run_cell(model, tokenizer, problems, policy: str, budget: int | None, *, slack: int = 1, **generation) -> dict:
    """Accuracy and what happened for one policy and budget (`graded_outputs`' keywords pass through)."""
    if not build_policy(policy_params(policy, budget)).evicts:
        budget = None
    t0 = time.perf_counter()
    graded = graded_outputs(model, tokenizer, problems, policy, budget, slack=slack, **generation)
    done = [out for out, _ in graded if not out.error]
    n = len(problems)
    return {
        "policy": policy,
        "budget": budget,
        "slack": slack if budget is not None else None,
        "n": n,
        "errors": n - len(done),
        "accuracy": sum(correct for _, correct in graded) / n,
        "mean_output_tokens": sum(o.n_output_tokens for o in done) / max(1, len(done)),
        "mean_evicted": sum(o.n_evicted_tokens for o in done) / max(1, len(done)),
        "seconds": round(time.perf_counter() - t0, 1),
        "mean_prompt_tokens": sum(out.n_prompt_tokens for out, _ in graded) / n,
    }


def markdown_table(results: list[dict], budgets: list[int]) -> str:
    by = {(r["policy"], r["budget"]): r for r in results}
    full = next((r for r in results if r["budget"] is None), None)
    lines = ["| policy | " + " | ".join(f"B={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    if full:
        lines.append("| full (no eviction) | " + " | ".join(f"{full['accuracy']:.2f}" for _ in budgets) + " |")
    for policy in dict.fromkeys(r["policy"] for r in results if r["budget"] is not None):
        cells = [f"{by[(policy, b)]['accuracy']:.2f}" if (policy, b) in by else "-" for b in budgets]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kvexp.organism.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT_DIR)
    ap.add_argument("--n", type=int, default=100, help="held-out problems (test split)")
    ap.add_argument("--seed", type=int, default=0, help="base seed of the test problems")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--distractors", type=int, default=4)
    ap.add_argument("--policies", nargs="+", default=list(POLICY_NAMES))
    ap.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256, 384, 512])
    ap.add_argument("--slack", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write every cell's result here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tokenizer = load_organism(args.checkpoint)
    problems = load_chain_problems(
        args.n, seed=args.seed, steps=args.steps, facts=args.facts, distractors=args.distractors, split="test"
    )
    results = []
    for policy in args.policies:
        for budget in args.budgets if policy_class(policy).evicts else [None]:
            try:
                r = run_cell(model, tokenizer, problems, policy, budget, slack=args.slack, batch_size=args.batch_size)
            except ConfigError as e:
                print(f"{policy} B={budget}: skipped ({e})", flush=True)
                continue
            results.append(r)
            print(json.dumps(r), flush=True)
    print(markdown_table(results, args.budgets))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "results": results},
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
