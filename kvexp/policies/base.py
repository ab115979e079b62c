"""The policy protocol: what the engine tells a policy (`StepContext`, `LayerView`), the state it keeps
(`PolicyState`), and `Policy` itself with the protection rules and GQA aggregation every policy shares.
A policy only says how it scores resident tokens (and, if it keeps accumulators, how it updates them);
the engine owns storage, selection (`kvexp.engine.selection`) and gathering. Scoring helpers shared by
several policies live in `kvexp.policies.scoring`.

Shapes: B rows (sequences), H KV heads, N slots, Q queries, G query heads per KV head.
Every tensor of a policy's state carries the batch axis first and the slot axis last.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import Tensor

from kvexp.errors import ConfigError

GROUP_AGGREGATIONS = ("mean", "max", "sum")


@dataclass
class StepContext:
    """What the engine tells every layer about the current forward pass.

    incoming: [B] absolute position of the token being generated next (decode: the token whose K/V
        this pass appends; prefill: the prompt length, i.e. the first generated token).
    prompt_len: [B] real prompt tokens per row.
    row_seed: [B] per-row seed (problem, sample), so random choices do not depend on the batch.
    evict_rows: [B] bool, rows whose cache is full and must evict before this append; None if none.
    slots_in_use: slots [0, slots_in_use) can hold entries this step (free slots are taken lowest
        first, so no entry lies beyond); attention reads only those. None means all.
    query_pos: [B, Q] positions of the queries of this pass (prefill: of the current chunk), for
        rules that index queries by position.
    prefill_rows: prefill only, on the host: (cache row, prompt length) of each packed prompt, in
        order (newcomers replace finished requests in place), so layers split the packed prompts
        without reading the device.
    """

    prefill: bool
    incoming: Tensor
    prompt_len: Tensor
    row_seed: Tensor
    evict_rows: Tensor | None = None
    evict_all: bool = False
    slots_in_use: int | None = None
    query_pos: Tensor | None = None
    prefill_rows: tuple[tuple[int, int], ...] = ()
    layer_idx: int = 0

    def one(self, p: int) -> StepContext:
        """The context of packed prompt `p` alone (a prefill handles its prompts one by one)."""
        return replace(
            self,
            incoming=self.incoming[p : p + 1],
            prompt_len=self.prompt_len[p : p + 1],
            row_seed=self.row_seed[p : p + 1],
            prefill_rows=(),
        )


@dataclass
class LayerView:
    """Read-only view of one layer's resident entries: keys [B, H, N, D], positions [B, H, N]
    (-1 marks an empty slot) and values [B, H, N, D] (None where a caller has none)."""

    keys: Tensor
    pos: Tensor
    values: Tensor | None = None


@dataclass
class PolicyState:
    """Per-layer, per-run accumulators: tensors [B, ..., N] with the batch axis first and the slot
    axis last (e.g. H2O's [B, H, N], a query window's [B, H, W, N]). One value per slot per row keeps
    the state O(N) per (layer, KV head); work that needs more (R-KV's pairwise similarities) is
    transient, done at eviction."""

    tensors: dict[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def __setitem__(self, name: str, value: Tensor) -> None:
        self.tensors[name] = value

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @staticmethod
    def _per_slot(idx: Tensor, t: Tensor) -> Tensor:
        """Slot indices [B, H, K] broadcast over any middle axes of t [B, H, ..., N]."""
        while idx.dim() < t.dim():
            idx = idx.unsqueeze(-2)
        return idx.expand(*t.shape[:-1], idx.shape[-1])

    def clear_slots(self, slots: Tensor, rows: Tensor | None) -> None:
        """Zero the state of evicted slots [B, H, S] (only in `rows` [B] bool when given)."""
        for name, t in self.tensors.items():
            idx = self._per_slot(slots, t)
            if rows is None:
                t.scatter_(-1, idx, 0.0)
            else:
                self.tensors[name] = torch.where(rows.view(-1, *([1] * (t.dim() - 1))), t.scatter(-1, idx, 0.0), t)

    def gather_slots(self, keep: Tensor, n_slots: int) -> PolicyState:
        """Move state from prompt index space to slot space: slot i takes index keep[..., i]
        (keep: [B, H, K]); slots K..n_slots-1 start empty."""
        out = {}
        for name, t in self.tensors.items():
            kept = t.gather(-1, self._per_slot(keep, t))
            out[name] = torch.nn.functional.pad(kept, (0, n_slots - keep.shape[-1]))
        return PolicyState(out)

    def select_rows(self, rows: Tensor) -> None:
        """Keep only the batch rows `rows` (finished rows leave the batch)."""
        for name, t in self.tensors.items():
            self.tensors[name] = t.index_select(0, rows)

    def load_row(self, row: int, other: PolicyState) -> None:
        """Row `row` takes `other`'s state (one row): a newcomer replaces a finished request."""
        for name, t in self.tensors.items():
            t[row] = other[name][0]


class Policy:
    """Base of every policy. Subclasses set `name`, override `score`, and where they accumulate
    something, `init_state`/`observe`.

    window: recent tokens (by position) never evicted; None takes the policy's default
        (`default_window(budget)`). n_sink: first positions never evicted. protect_prompt: pin
        every prompt token. group_agg: how the query heads of one KV head combine attention.
    """

    name: ClassVar[str] = ""
    evicts: ClassVar[bool] = True
    needs_attention: ClassVar[bool] = False  # observe() receives aggregated attention probs

    def __init__(
        self, *, window: int | None = None, n_sink: int = 0, protect_prompt: bool = False, group_agg: str = "mean"
    ):
        if group_agg not in GROUP_AGGREGATIONS:
            raise ConfigError(f"policy.group_agg must be one of {GROUP_AGGREGATIONS}, got {group_agg!r}")
        if window is not None and window < 0 or n_sink < 0:
            raise ConfigError(f"policy.window and policy.n_sink must be >= 0, got window={window}, n_sink={n_sink}")
        self.window = window
        self.n_sink = n_sink
        self.protect_prompt = protect_prompt
        self.group_agg = group_agg

    def __repr__(self) -> str:
        params = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if isinstance(v, (int, float, str, bool, type(None)))
        )
        return f"{type(self).__name__}({params})"

    # ---- protection (shared mechanics) ----
    def default_window(self, budget: int) -> int:
        return 0

    def recent_window(self, budget: int) -> int:
        return self.default_window(budget) if self.window is None else self.window

    def n_protected(self, budget: int) -> int:
        """Tokens that may be protected at an eviction, not counting a pinned prompt."""
        return self.n_sink + self.recent_window(budget)

    def protected_mask(self, pos: Tensor, ctx: StepContext, budget: int) -> Tensor:
        """[B, H, N] bool: sinks, the recent window (the `window` positions before the incoming
        token) and, with protect_prompt, the prompt."""
        shape = (-1,) + (1,) * (pos.dim() - 1)
        prot = pos < self.n_sink
        window = self.recent_window(budget)
        if window:
            prot |= pos >= (ctx.incoming.view(shape) - window)
        if self.protect_prompt:
            prot |= pos < ctx.prompt_len.view(shape)
        return prot & (pos >= 0)

    # ---- scoring (per policy) ----
    def prepare(self, model) -> None:
        """Called by the engine with the model before it generates anything: a policy that needs
        per-model data (TriAttention's calibration) gets it here, so a failure comes before any work."""

    def init_state(self, batch: int, heads: int, n_slots: int, device: torch.device) -> PolicyState:
        return PolicyState()

    def observe(self, state: PolicyState, probs: Tensor, ctx: StepContext) -> None:
        """probs [B, H, Q, N] fp32: attention the Q newest queries paid to each slot (zero on
        empty slots). Called once per decode step, per chunk of queries in prefill."""

    def score(self, state: PolicyState, view: LayerView, ctx: StepContext) -> Tensor:
        """[B, H, N] fp32, higher means keep. Values on empty or protected slots are ignored."""
        raise NotImplementedError

    # ---- memory (for batch sizing and `make bench`) ----
    def state_bytes(self, heads: int, n_slots: int) -> int:
        """Persistent state of one row in one layer, measured from `init_state` without allocating."""
        return self.init_state(1, heads, n_slots, torch.device("meta")).nbytes()

    def eviction_workspace_bytes(self, heads: int, query_heads: int, n_slots: int, head_dim: int) -> tuple[int, int]:
        """Peak transient memory of one layer's eviction as (bytes per row, bytes shared by the
        batch), for `heads` KV heads shared by `query_heads` query heads: the score, the eviction
        order (two sorts) and the masks, [H, N] each per row. Policies that need more say so."""
        return heads * n_slots * (4 + 3 * 8 + 2), 0

    # ---- helpers shared by policies ----
    def aggregate_groups(self, probs: Tensor) -> Tensor:
        """[B, H, G, Q, N] -> [B, H, Q, N] with `group_agg`."""
        if probs.shape[2] == 1:  # one query head per KV head: nothing to aggregate
            return probs.squeeze(2)
        if self.group_agg == "mean":
            return probs.mean(dim=2)
        if self.group_agg == "max":
            return probs.amax(dim=2)
        return probs.sum(dim=2)
