"""Train the model organism: a tiny Llama (grouped-query attention) on its generated tasks (`chain`,
`recall`, `read_once`, `local_state`: one model for all four), on the CPU.

    python -m kvexp.organism.train                      # the committed checkpoint (see TRAINING.json)
    python -m kvexp.organism.train --max-steps 20 --out /tmp/o --layers 1 --hidden 32   # smoke run

Seeded and reproducible: the weights, the data order and every training problem are functions of
`--seed` (for a given torch version and thread count; CPU kernels are deterministic). The loss is
on the assistant's reply only (trace, boxed answer, end token); the prompt is context. Training
problems come from the `train` seed range of each task (`kvexp.data.synthetic`), disjoint from every
test problem. Each example's task is drawn from `--tasks` with `--task-weights` (with one task, no draw
is made, so `--tasks chain` gives the data stream of the chain-only organism).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shlex
import string
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from kvexp.data import chain, local_state, read_once, recall, synthetic
from kvexp.organism import CHECKPOINT_DIR
from kvexp.organism.tokenizer import build_tokenizer, training_text

DEFAULT_OUT = CHECKPOINT_DIR
IGNORE = -100
TASKS = ("chain", "recall", "read_once", "local_state")

# Each task's held-out problems at its default difficulty (the knobs of conf/dataset/<task>.yaml).
EVAL_PROBLEMS = {
    "chain": chain.load_chain_problems,
    "recall": recall.load_recall_problems,
    "read_once": read_once.load_read_once_problems,
    "local_state": local_state.load_local_state_problems,
}


@dataclass
class TrainConfig:
    # model
    layers: int = 4
    hidden: int = 128
    intermediate: int = 384
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 1024
    # optimisation
    max_steps: int = 2400
    batch_size: int = 8
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    # continue from this checkpoint folder (same tokenizer): its weights, the composed embedding starting
    # as its embedding matrix (free rows) with the shared parts at zero; None trains from scratch
    init: str | None = None
    threads: int = 1  # one thread: on a shared 2-core machine, two threads contend and run slower
    # data: the tasks, one drawn per example (task_weights); knobs are drawn per problem, uniformly in these
    # ranges. chain: steps (short or long), facts, distractors (facts + distractors <= 26)
    tasks: tuple[str, ...] = ("chain", "recall", "read_once", "local_state")
    # relative share of each task: chain (the longest lookups) and recall (a lookup ~220 tokens back)
    # learn slowest; read_once and local_state are learned within 2000 steps at any share tried
    task_weights: tuple[float, ...] = (0.35, 0.35, 0.15, 0.15)
    steps_short: tuple[int, int] = (1, 16)
    steps_long: tuple[int, int] = (17, 40)
    long_share: float = 0.35
    facts: tuple[int, int] = (1, 12)
    distractors: tuple[int, int] = (0, 8)
    # read_once: facts on the one-lap walk, distractors
    read_once_facts: tuple[int, int] = (1, 18)
    read_once_distractors: tuple[int, int] = (0, 4)
    # recall: walk (steps to the memo), steps (lines between the memo and its use), distractors
    recall_walk: tuple[int, int] = (1, 6)
    recall_steps: tuple[int, int] = (1, 36)
    recall_distractors: tuple[int, int] = (0, 4)
    # local_state: steps
    local_steps: tuple[int, int] = (1, 50)
    # bookkeeping
    log_every: int = 25
    eval_problems: int = 64  # per task, at the end (teacher-forced, test split, default knobs)
    eval_every: int = 0  # also every this many steps, on eval_problems // 2 per task (0: never)


def model_config(cfg: TrainConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02,
    )


class Batches:
    """Seeded stream of training batches. Problems are drawn in groups of 8 batches and sorted by
    length inside the group, so a batch pads little; the group's batches come out in a seeded order."""

    def __init__(self, cfg: TrainConfig, tokenizer):
        self.cfg, self.tok = cfg, tokenizer
        self.rng = random.Random(f"kvexp-organism-data:{cfg.seed}")
        self.index = 0
        self.queue: list[list[tuple[list[int], list[int]]]] = []

    def knobs(self) -> tuple[int, int, int]:
        c, r = self.cfg, self.rng
        steps = r.randint(*(c.steps_long if r.random() < c.long_share else c.steps_short))
        facts = r.randint(*c.facts)
        distractors = min(r.randint(*c.distractors), chain.MAX_VARIABLES - facts)
        return steps, facts, distractors

    def problem(self, task: str, seed: int) -> tuple[str, str]:
        """(question, trace) of one training problem of `task`, its knobs drawn from the config's ranges."""
        c, r = self.cfg, self.rng
        if task == "chain":
            question, trace, _ = chain.make_problem(seed, *self.knobs())
        elif task == "read_once":
            facts = r.randint(*c.read_once_facts)
            distractors = min(r.randint(*c.read_once_distractors), chain.MAX_VARIABLES - facts)
            question, trace, _ = read_once.make_problem(seed, facts, distractors)
        elif task == "recall":
            walk, steps = r.randint(*c.recall_walk), r.randint(*c.recall_steps)
            distractors = min(r.randint(*c.recall_distractors), chain.MAX_VARIABLES - walk)
            question, trace, _ = recall.make_problem(seed, walk, steps, distractors)
        elif task == "local_state":
            question, trace, _ = local_state.make_problem(seed, r.randint(*c.local_steps))
        else:
            raise ValueError(f"unknown organism task {task!r}; choose from {', '.join(TASKS)}")
        return question, trace

    def example(self) -> tuple[list[int], list[int]]:
        tasks = self.cfg.tasks
        task = tasks[0] if len(tasks) == 1 else self.rng.choices(tasks, self.cfg.task_weights)[0]
        seed = synthetic.problem_seed("train", self.cfg.seed, self.index, task)
        self.index += 1
        return encode_example(self.tok, *self.problem(task, seed))

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.queue:
            group = sorted((self.example() for _ in range(8 * self.cfg.batch_size)), key=lambda e: len(e[0]))
            self.queue = [group[i : i + self.cfg.batch_size] for i in range(0, len(group), self.cfg.batch_size)]
            self.rng.shuffle(self.queue)
        return collate(self.queue.pop(), self.tok.pad_token_id)


def encode_example(tokenizer, question: str, trace: str) -> tuple[list[int], list[int]]:
    """(input ids, labels): the labels are IGNORE on the prompt."""
    prompt, completion = training_text(question, trace)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return p + c, [IGNORE] * len(p) + c


def collate(examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and next-token labels (shifted here, so the model gets no `labels`)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y) - 1] = torch.tensor(y[1:])
    return ids, labels


class ComposedEmbedding(torch.nn.Module):
    """The token embedding (tied with the output layer) as a free row per token plus shared parts:
    a fused table token `` d=4`` is free + S[d] + G[4] + kind, `` d>h`` is free + S[d] + L[h] + kind, the
    trace's queries ``d=`` / ``d>`` are free + S[d] + kind, a letter ``h`` free + L[h], a digit free + G[d].
    Tokens that name the same variable or value start related and stay related, which is what a
    lookup keyed on a variable needs; the model learns its lookups in minutes instead of hours.
    `matrix()` is an ordinary embedding matrix: it is written into the Llama's tied embedding when
    training ends, so the saved checkpoint is a plain LlamaForCausalLM."""

    KINDS = ("value_fact", "link_fact", "value_query", "link_query")

    def __init__(self, tokenizer, hidden: int, std: float = 0.02):
        super().__init__()
        letters, digits = string.ascii_lowercase, string.digits
        self.free = torch.nn.Parameter(torch.randn(len(tokenizer), hidden) * std)
        n_parts = 2 * len(letters) + len(digits) + len(self.KINDS)
        self.parts = torch.nn.Parameter(torch.randn(n_parts, hidden) * std)
        S = {c: i for i, c in enumerate(letters)}
        L = {c: len(letters) + i for i, c in enumerate(letters)}
        G = {c: 2 * len(letters) + i for i, c in enumerate(digits)}
        K = {k: 2 * len(letters) + len(digits) + i for i, k in enumerate(self.KINDS)}
        recipe = torch.zeros(len(tokenizer), n_parts)
        for token, index in tokenizer.get_vocab().items():
            uses = []
            if len(token) == 4 and token[0] == " " and token[1] in S and token[2] == "=" and token[3] in G:
                uses = [S[token[1]], G[token[3]], K["value_fact"]]
            elif len(token) == 4 and token[0] == " " and token[1] in S and token[2] == ">" and token[3] in L:
                uses = [S[token[1]], L[token[3]], K["link_fact"]]
            elif len(token) == 2 and token[0] in S and token[1] in "=>":
                uses = [S[token[0]], K["value_query" if token[1] == "=" else "link_query"]]
            elif len(token) == 1 and token in L:
                uses = [L[token]]
            elif len(token) == 1 and token in G:
                uses = [G[token]]
            for u in uses:
                recipe[index, u] = 1.0
        self.register_buffer("recipe", recipe)

    def matrix(self) -> torch.Tensor:
        return self.free + self.recipe @ self.parts


def hidden_and_weight(model, embedding: ComposedEmbedding, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last hidden states [batch, seq, hidden] under the composed tied embedding, and that embedding
    [vocab, hidden]."""
    weight = embedding.matrix()
    return model.model(inputs_embeds=torch.nn.functional.embedding(ids, weight)).last_hidden_state, weight


def forward_loss(model, embedding: ComposedEmbedding, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions, with the composed tied embedding."""
    hidden, weight = hidden_and_weight(model, embedding, ids)
    mask = labels != IGNORE
    logits = hidden[mask] @ weight.T
    return torch.nn.functional.cross_entropy(logits, labels[mask])


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.max_steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def teacher_forced_accuracy(model, tokenizer, problems, embedding: ComposedEmbedding | None = None) -> float:
    """Share of problems whose whole reply is the argmax at every position under teacher forcing,
    which is exactly the share greedy decoding (full cache) gets right. `problems`: (question, trace)
    pairs. With `embedding`, the model runs on the composed embedding (during training)."""
    model.eval()
    examples = [encode_example(tokenizer, question, trace) for question, trace in problems]
    right = 0
    for i in range(0, len(examples), 16):
        ids, labels = collate(examples[i : i + 16], tokenizer.pad_token_id)
        if embedding is None:
            pred = model(input_ids=ids).logits.argmax(-1)
        else:
            hidden, weight = hidden_and_weight(model, embedding, ids)
            pred = (hidden @ weight.T).argmax(-1)
        ok = (pred == labels) | (labels == IGNORE)
        right += int(ok.all(dim=1).sum())
    model.train()
    return right / len(examples)


def task_accuracies(model, tokenizer, tasks, n: int, embedding: ComposedEmbedding | None = None) -> dict[str, float]:
    """Teacher-forced accuracy per task on `n` held-out problems at its default difficulty (`task_eval_problems`)."""
    return {task: teacher_forced_accuracy(model, tokenizer, task_eval_problems(task, n), embedding) for task in tasks}


def train(cfg: TrainConfig, out: Path | None, *, log=print, argv: list[str] | None = None) -> dict:
    """Train; save into `out` (when given) the weights, config, tokenizer and TRAINING.json (which
    records `argv`, the command-line arguments). Returns the training record (losses included)."""
    from transformers import LlamaForCausalLM

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    config = model_config(cfg, tokenizer)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    embedding = ComposedEmbedding(tokenizer, cfg.hidden)
    if cfg.init is not None:
        start = LlamaForCausalLM.from_pretrained(cfg.init, dtype=torch.float32)
        if start.config.vocab_size != config.vocab_size:
            raise SystemExit(
                f"--init {cfg.init}: its vocabulary has {start.config.vocab_size} tokens, the organism's tokenizer "
                f"{config.vocab_size}; continue only from a checkpoint of this tokenizer"
            )
        model.load_state_dict(start.state_dict())
        with torch.no_grad():
            embedding.free.copy_(model.model.embed_tokens.weight)
            embedding.parts.zero_()
    model.train()
    model.model.embed_tokens.weight.requires_grad_(False)  # replaced by embedding.matrix() when done
    body = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in body if p.dim() >= 2] + list(embedding.parameters())
    no_decay = [p for p in body if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    batches = Batches(cfg, tokenizer)
    losses, tokens, t0 = [], 0, time.perf_counter()
    window: list[float] = []
    for step in range(cfg.max_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        ids, labels = next(batches)
        loss = forward_loss(model, embedding, ids, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(body + list(embedding.parameters()), cfg.grad_clip)
        opt.step()
        tokens += ids.numel()
        window.append(loss.item())
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.max_steps:
            accs = task_accuracies(model, tokenizer, cfg.tasks, max(1, cfg.eval_problems // 2), embedding)
            log(
                f"step {step + 1} teacher-forced held-out accuracy: "
                + ", ".join(f"{k} {v:.3f}" for k, v in accs.items())
            )
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            mean = sum(window) / len(window)
            losses.append({"step": step + 1, "loss": float(f"{mean:.4g}")})
            window = []
            elapsed = time.perf_counter() - t0
            log(
                f"step {step + 1}/{cfg.max_steps} loss {mean:.4f} lr {lr_at(step, cfg):.2e} "
                f"{tokens / elapsed:.0f} tok/s {elapsed:.0f}s"
            )
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(embedding.matrix())
    model.tie_weights()
    model.eval()
    record = {
        "config": asdict(cfg),
        "train_s": round(train_s, 1),
        "tokens": tokens,
        "final_loss": losses[-1]["loss"] if losses else None,
        "losses": losses,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if cfg.eval_problems:
        accs = task_accuracies(model, tokenizer, cfg.tasks, cfg.eval_problems)
        record["teacher_forced_accuracy"] = {
            "problems": cfg.eval_problems,
            "knobs": "each task's default (conf/dataset/<task>.yaml)",
            "split": "test, seed 1",
            "accuracy": accs,
        }
        log(
            f"teacher-forced exact accuracy on {cfg.eval_problems} held-out problems per task: "
            + ", ".join(f"{k} {v:.3f}" for k, v in accs.items())
        )
    record["command"] = " ".join(["python -m kvexp.organism.train", *(shlex.quote(a) for a in (argv or []))])
    if out is not None:
        save(model, tokenizer, out, record)
    record["model"] = model
    return record


def task_eval_problems(task: str, n: int, seed: int = 1) -> list[tuple[str, str]]:
    """(question, trace) of `n` held-out problems of `task` (test split, base seed `seed`) at its default knobs."""
    return [(p.question, p.meta["reference_trace"]) for p in EVAL_PROBLEMS[task](n, seed=seed)]


def save(model, tokenizer, out: Path, record: dict) -> None:
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {k: v for k, v in record.items() if k != "model"}
    meta.update(
        {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "threads": torch.get_num_threads(),
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    (out / "TRAINING.json").write_text(json.dumps(meta, indent=2) + "\n")


# the (low, high) ranges of TrainConfig
PAIRS = (
    "steps_short",
    "steps_long",
    "facts",
    "distractors",
    "read_once_facts",
    "read_once_distractors",
    "recall_walk",
    "recall_steps",
    "recall_distractors",
    "local_steps",
)


def parse_args(argv=None) -> tuple[TrainConfig, Path | None]:
    defaults = TrainConfig()
    ap = argparse.ArgumentParser(prog="python -m kvexp.organism.train", description=__doc__.split("\n\n")[0])
    for name in (
        "layers",
        "hidden",
        "intermediate",
        "heads",
        "kv_heads",
        "max_positions",
        "max_steps",
        "batch_size",
        "warmup",
        "seed",
        "threads",
        "log_every",
        "eval_problems",
        "eval_every",
    ):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "long_share"):
        ap.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(defaults.tasks))
    ap.add_argument("--task-weights", nargs="+", type=float, default=list(defaults.task_weights))
    for name in PAIRS:
        ap.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            nargs=2,
            default=list(getattr(defaults, name)),
            metavar=("LOW", "HIGH"),
        )
    ap.add_argument("--init", default=None, help="continue from this checkpoint folder (default: from scratch)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"checkpoint folder (default {DEFAULT_OUT})")
    ap.add_argument("--no-save", action="store_true")
    args = vars(ap.parse_args(argv))
    out = None if args.pop("no_save") else args.pop("out")
    args.pop("out", None)
    if len(args["tasks"]) == 1:
        args["task_weights"] = [1.0]
    if len(args["task_weights"]) != len(args["tasks"]):
        ap.error(f"--task-weights needs one weight per task ({len(args['tasks'])}), got {len(args['task_weights'])}")
    for name in (*PAIRS, "tasks", "task_weights"):
        args[name] = tuple(args[name])
    return TrainConfig(**args), out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, out = parse_args(argv)
    record = train(cfg, out, argv=argv)
    if out is not None:
        print(f"saved to {out} ({record['train_s']:.0f}s, final loss {record['final_loss']})")


if __name__ == "__main__":
    main()
