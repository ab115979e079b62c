"""Which runs a bench makes. Runs that a target compares sit in one group; a group's runs are made
one after another (warm-up first), repetition by repetition, so compared figures come from runs
side by side in time on the same machine."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvexp.bench.models import SMOLLM2
from kvexp.bench.runner import HF, KVEXP, RunSpec
from kvexp.policies import evicting_policies

EVICTING = evicting_policies()


@dataclass
class Group:
    name: str
    model: str
    specs: list[RunSpec]
    reps: int = 1


@dataclass
class Plan:
    mode: str
    groups: list[Group]
    prompt_len: int = 64
    budget: int = 256  # the budget the targets compare at
    slack_hi: int = 16
    slack_lo: int = 1
    long_tokens: int = 4096  # the KV-heavy target's length
    batch_hi: int = 8
    block: int = 32  # steps per block of the robust statistic (a multiple of slack_hi)
    notes: list[str] = field(default_factory=list)

    def models(self) -> list[str]:
        return list(dict.fromkeys(g.model for g in self.groups))


def _pick(preferred: tuple[str, ...], policies: tuple[str, ...]) -> list[str]:
    chosen = [p for p in preferred if p in policies]
    return chosen or list(policies[:1])


def build_plan(
    mode: str,
    device: str,
    models: list[str] | None,
    policies: list[str] | None,
    reps: int | None = None,
    new_tokens: int | None = None,
    long_tokens: int | None = None,
) -> Plan:
    pols = tuple(p for p in EVICTING if policies is None or p in policies)
    # default: SmolLM2 (slow) once, the random models twice (forward then reverse order, cancelling drift)
    real_reps, reps = (reps or 1), (reps or (2 if mode == "default" else 1))
    if mode == "quick":
        plan = _sweep_plan(
            "quick",
            shaped="tiny_shaped",
            heavy="tiny_kv_heavy",
            real=None,
            pols=pols,
            reps=reps,
            new=new_tokens or 64,
            long=long_tokens or 128,
            prompt_len=16,
            budget=48,
            slack_hi=8,
            batch_hi=4,
            block=8,
        )
    elif mode == "full":
        plan = _full_plan(device, pols, reps, new_tokens or 512, long_tokens or 4096)
    elif device == "cuda":
        plan = _sweep_plan(
            "default",
            shaped="llama8b_shaped",
            heavy="llama8b_shaped",
            real=None,
            pols=pols,
            reps=reps,
            new=new_tokens or 512,
            long=long_tokens or 4096,
        )
    else:
        plan = _sweep_plan(
            "default",
            shaped="shaped_random",
            heavy="kv_heavy_random",
            real=SMOLLM2,
            pols=pols,
            reps=reps,
            real_reps=real_reps,
            new=new_tokens or 512,
            long=long_tokens or 4096,
        )
    if models is not None:
        plan.groups = [g for g in plan.groups if g.model in models]
    return plan


def _sweep_plan(
    mode,
    *,
    shaped,
    heavy,
    real,
    pols,
    reps,
    new,
    real_reps=1,
    long,
    prompt_len=64,
    budget=256,
    slack_hi=16,
    slack_lo=1,
    batch_hi=8,
    block=32,
) -> Plan:
    """The default matrix: every target measured once, at the least cost.

    real (SmolLM2): full vs generate and two policies, new tokens, batch 1.
    shaped: generate, full, every policy x slack {lo, hi} at the target budget; batch hi vs 1.
    heavy: full vs generate at `new`; at `long` tokens full vs generate vs the budget (recency and an
    attention-scored policy; slack hi and lo)."""

    def kv(model, policy, slack, n, batch=1):
        return RunSpec(model, KVEXP, policy, budget, slack, n, batch)

    def base(model, n, batch=1):
        return [RunSpec(model, HF, "full", None, None, n, batch), RunSpec(model, KVEXP, "full", None, None, n, batch)]

    groups = []
    if real:
        groups.append(
            Group(
                f"{real} n={new}",
                real,
                base(real, new) + [kv(real, p, slack_hi, new) for p in _pick(("streaming_llm", "h2o"), pols)],
                real_reps,
            )
        )
    # runs a target compares sit next to each other (batch pairs, slack pairs), against load drift
    ref = _pick(("streaming_llm",), pols)
    sweep = [spec for one, hi_ in zip(base(shaped, new), base(shaped, new, batch_hi)) for spec in (one, hi_)]
    for p in ref + [p for p in pols if p not in ref]:
        sweep += [kv(shaped, p, slack_hi, new)] + ([kv(shaped, p, slack_hi, new, batch_hi)] if p in ref else [])
        sweep.append(kv(shaped, p, slack_lo, new))
    groups.append(Group(f"{shaped} n={new}", shaped, sweep, reps))
    if heavy != shaped:
        groups.append(Group(f"{heavy} n={new}", heavy, base(heavy, new), reps))
    long_specs = base(heavy, long)
    for p in _pick(("streaming_llm", "h2o"), pols):
        long_specs += [kv(heavy, p, s, long) for s in ((slack_hi, slack_lo) if p == "streaming_llm" else (slack_hi,))]
    groups.append(Group(f"{heavy} n={long}", heavy, long_specs, reps))
    return Plan(
        mode,
        groups,
        prompt_len=prompt_len,
        budget=budget,
        slack_hi=slack_hi,
        slack_lo=slack_lo,
        long_tokens=long,
        batch_hi=batch_hi,
        block=block,
    )


def _full_plan(device, pols, reps, new, long) -> Plan:
    """The whole cross product: full and every policy, budgets {64, 256}, slack {1, 16}, `new` tokens
    (and `long` on the random models), batch {1, 8}, generate on the full cache alongside."""
    models = ["llama8b_shaped"] if device == "cuda" else [SMOLLM2, "shaped_random", "kv_heavy_random"]
    groups = []
    for model in models:
        lengths = (new,) if model == SMOLLM2 else (new, long)
        for n in lengths:
            specs = []
            for batch in (1, 8):
                specs += [
                    RunSpec(model, HF, "full", None, None, n, batch),
                    RunSpec(model, KVEXP, "full", None, None, n, batch),
                ]
                specs += [RunSpec(model, KVEXP, p, b, s, n, batch) for p in pols for b in (64, 256) for s in (1, 16)]
            groups.append(Group(f"{model} n={n}", model, specs, reps))
    return Plan("full", groups, long_tokens=long)
