"""How many rows fit: the device memory left after the weights, divided by what one row costs.

A row (one request decoding) costs its KV capacity times the K/V bytes of a token, the policy's
persistent state, and its share of the decode workspace: one layer's attention scores at a time, the
eviction's transient tensors, the logits and the sampling buffers. Shared by all rows and counted
once: the prefill of a group of newcomers (`max_prefill_tokens` tokens of activations and one
attention chunk) and the fixed part of an eviction's workspace (R-KV's similarity blocks).
Everything comes from the model config and the policy; no weights are needed, so the accounting is
tested on the CPU with the real configs of the 8B models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from kvexp.engine.cache import PREFILL_CHUNK_BYTES, head_dim
from kvexp.errors import ConfigError
from kvexp.policies.base import Policy

GiB = 2**30
# on a GPU, the share of the free memory (after the weights) the plan may fill: the rest absorbs the
# allocator's fragmentation and kernels' own workspaces
GPU_HEADROOM = 0.9
DEFAULT_CPU_MEMORY_GB = 4.0


@dataclass(frozen=True)
class ModelShape:
    layers: int
    kv_heads: int
    query_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int

    @classmethod
    def of(cls, config, dtype: torch.dtype) -> ModelShape:
        return cls(
            config.num_hidden_layers,
            config.num_key_value_heads,
            config.num_attention_heads,
            head_dim(config),
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
            torch.empty((), dtype=dtype).element_size(),
        )

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token across all layers and KV heads."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def activation_bytes_per_token(self) -> int:
        """One token's activations in one layer: residual and norm, MLP, Q/K/V and attention output."""
        return (
            4 * self.hidden + 3 * self.intermediate + 2 * (self.query_heads + 2 * self.kv_heads) * self.head_dim
        ) * self.dtype_bytes

    def weight_bytes(self) -> int:
        """Embedding, attention and MLP projections, LM head (untied), in the model's dtype."""
        attn = self.hidden * self.head_dim * (2 * self.query_heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        return (self.layers * (attn + mlp) + 2 * self.vocab * self.hidden) * self.dtype_bytes


@dataclass(frozen=True)
class RowCost:
    """Bytes one decoding row costs."""

    kv: int
    policy_state: int
    workspace: int

    @property
    def total(self) -> int:
        return self.kv + self.policy_state + self.workspace


@dataclass(frozen=True)
class RowPlan:
    rows: int
    limited_by: str  # memory | max_batch_size | requests
    capacity: int  # KV slots per row
    per_row: RowCost
    shared_bytes: int  # prefill and fixed eviction workspace, counted once
    available_bytes: int  # memory the rows and the shared workspace may use

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "limited_by": self.limited_by,
            "capacity": self.capacity,
            "bytes_per_row": self.per_row.total,
            "per_row": asdict(self.per_row),
            "shared_bytes": self.shared_bytes,
            "available_bytes": self.available_bytes,
        }


def row_cost(shape: ModelShape, policy: Policy, capacity: int) -> RowCost:
    n, h = capacity, shape.kv_heads
    state = shape.layers * policy.state_bytes(h, n)
    eviction, _ = policy.eviction_workspace_bytes(h, shape.query_heads, n, shape.head_dim) if policy.evicts else (0, 0)
    if policy.needs_attention:  # scores in the model's dtype, fp32 probabilities, their group aggregate
        attention = shape.query_heads * n * (shape.dtype_bytes + 8) + h * n * 4
    else:  # the fused kernel; its boolean mask
        attention = shape.query_heads * n * 4 + h * n
    logits = shape.vocab * (shape.dtype_bytes + 4 + 4 + 8)  # LM head out, fp32 copy, sampling sort
    return RowCost(
        kv=n * shape.kv_bytes_per_token,
        policy_state=state,
        workspace=max(attention, eviction) + logits + shape.activation_bytes_per_token,
    )


def shared_workspace(shape: ModelShape, policy: Policy, longest_prompt: int, max_prefill_tokens: int) -> int:
    tokens = max(longest_prompt, max_prefill_tokens)
    per_token = shape.activation_bytes_per_token
    prompt_state = policy.state_bytes(shape.kv_heads, longest_prompt)
    _, fixed = (
        policy.eviction_workspace_bytes(shape.kv_heads, shape.query_heads, longest_prompt, shape.head_dim)
        if policy.evicts
        else (0, 0)
    )
    return tokens * per_token + 3 * PREFILL_CHUNK_BYTES + prompt_state + fixed


def plan_rows(
    shape: ModelShape,
    policy: Policy,
    capacity: int,
    longest_prompt: int,
    *,
    available_bytes: int,
    max_rows: int,
    n_requests: int,
    max_prefill_tokens: int,
    fixed_rows: int | None = None,
) -> RowPlan:
    """The most rows that fit in `available_bytes` (memory after the weights), capped by
    `max_rows` and by the number of requests. Refuses a plan where not even one row fits.
    fixed_rows: the user chose the number; only the costs are worked out."""
    per_row = row_cost(shape, policy, capacity)
    shared = shared_workspace(shape, policy, longest_prompt, max_prefill_tokens)
    if fixed_rows is not None:
        return RowPlan(fixed_rows, "generation.batch_size", capacity, per_row, shared, available_bytes)
    fit = (available_bytes - shared) // per_row.total
    if fit < 1:
        raise ConfigError(
            f"not even one row fits: a row needs {per_row.total / GiB:.2f} GiB (KV {per_row.kv / GiB:.2f}, policy "
            f"state {per_row.policy_state / GiB:.2f}, workspace {per_row.workspace / GiB:.2f}) plus "
            f"{shared / GiB:.2f} GiB shared, but {available_bytes / GiB:.2f} GiB are left after the weights; "
            f"lower generation.max_new_tokens or the budget, or raise generation.memory_gb"
        )
    rows, limited_by = min(
        (fit, "memory"), (max_rows, "max_batch_size"), (max(1, n_requests), "requests"), key=lambda t: t[0]
    )
    return RowPlan(int(rows), limited_by, capacity, per_row, shared, available_bytes)


def available_bytes(device: torch.device, weight_bytes: int, memory_gb: float | None) -> int:
    """Memory the rows may use: `memory_gb` (total, weights included) when given; else on a GPU
    the free memory now (the weights already loaded) times GPU_HEADROOM; on a CPU
    DEFAULT_CPU_MEMORY_GB, a conservative figure for a shared machine."""
    if memory_gb is not None:
        return int(memory_gb * GiB) - weight_bytes
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_HEADROOM)
    return int(DEFAULT_CPU_MEMORY_GB * GiB) - weight_bytes


def row_capacity(policy: Policy, budget_tokens: int | None, longest_prompt: int, max_new_tokens: int) -> int:
    """KV slots per row: the budget for an evicting policy, else room for the longest prompt plus
    max_new_tokens (the last sampled token is never appended, so this is one more than needed)."""
    need = longest_prompt + max_new_tokens
    return min(need, budget_tokens) if policy.evicts else need


def weight_bytes(model) -> int:
    """Bytes of a loaded model's parameters, as they sit on the device."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def plan_for_model(
    model,
    policy: Policy,
    budget_tokens: int | None,
    prompt_lengths: list[int],
    *,
    max_new_tokens: int,
    max_rows: int,
    memory_gb: float | None,
    max_prefill_tokens: int,
    fixed_rows: int | None = None,
) -> RowPlan:
    """`plan_rows` for a loaded model: its config, dtype, device and the bytes of its weights."""
    param = next(model.parameters())
    shape = ModelShape.of(model.config, param.dtype)
    longest = max(prompt_lengths)
    return plan_rows(
        shape,
        policy,
        row_capacity(policy, budget_tokens, longest, max_new_tokens),
        longest,
        available_bytes=available_bytes(param.device, weight_bytes(model), memory_gb),
        max_rows=max_rows,
        n_requests=len(prompt_lengths),
        max_prefill_tokens=max_prefill_tokens,
        fixed_rows=fixed_rows,
    )
