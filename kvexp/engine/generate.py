"""The one decode loop: prefill, then token by token, for the full cache and every policy."""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from kvexp.engine.attention import ATTN_IMPLEMENTATION, SUPPORTED_MODEL_TYPES
from kvexp.engine.budget import Budget
from kvexp.engine.cache import KVCache
from kvexp.engine.memory import row_capacity
from kvexp.engine.sampling import Sampler
from kvexp.engine.stopping import RepetitionStop
from kvexp.errors import ConfigError
from kvexp.policies.base import Policy, StepContext


def check_model_config(config) -> None:
    """Refuse, before weights load, a model whose attention kvexp cannot drive."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"kvexp cannot drive the attention of model_type {model_type!r}; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (decoder-only models with grouped-query attention)"
        )
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", model_type == "mistral")
    if window and uses_window:
        raise ConfigError(
            f"model uses sliding-window attention (sliding_window={window}), which kvexp does not "
            f"emulate; use a checkpoint without it or set sliding_window=null in its config"
        )
    if config.num_attention_heads % config.num_key_value_heads:
        raise ConfigError(
            f"num_attention_heads={config.num_attention_heads} is not a multiple of "
            f"num_key_value_heads={config.num_key_value_heads}"
        )


@dataclass(frozen=True)
class GenerationSettings:
    """batch_size: rows decoding at once (`kvexp.engine.memory.plan_rows` sizes it from memory).
    continuous: a finished row takes the next request at once; False runs static batches (each
    batch until its longest request ends), kept to measure what continuous batching gains.
    max_prefill_tokens: prompt tokens one prefill forward may hold (newcomers arriving together are
    prefilled together, packed end to end, up to this), which bounds the prefill's activation memory."""

    max_new_tokens: int = 256
    batch_size: int = 8
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    eos_token_ids: tuple[int, ...] = ()
    repetition: RepetitionStop | None = None
    continuous: bool = True
    max_prefill_tokens: int = 8192

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size", "max_prefill_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"generation.{name} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))
        if isinstance(self.repetition, dict):
            object.__setattr__(self, "repetition", RepetitionStop(**self.repetition))


@dataclass(frozen=True)
class Request:
    """max_new_tokens: this request's own cap (at most the settings'), e.g. to impose a length."""

    key: Hashable
    prompt_ids: list[int]
    seed: int = 0
    max_new_tokens: int | None = None


@dataclass
class Output:
    key: Hashable
    output_ids: list[int] = field(default_factory=list)
    stop_reason: str | None = None  # eos | max_new_tokens | max_positions | repetition; None on error
    n_prompt_tokens: int = 0
    n_output_tokens: int = 0
    peak_resident_tokens: int = 0
    n_evicted_tokens: int = 0  # per (layer, KV head); every head evicts the same count
    kv_bytes_peak: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    trace: list[dict] | None = None
    error: str | None = None
    # at the end: share of (prompt token, layer, KV head) entries resident, and of prompt tokens
    # resident in any head of any layer (KVCache.prompt_kept); None on error
    prompt_kept_share: float | None = None
    prompt_kept_any: float | None = None


@dataclass
class _Row:
    """Host-side bookkeeping of one request in a cache row; the device tensors live in the cache."""

    request: Request
    resident: int
    peak: int  # also the slot extent: slots [0, peak) may hold entries (free slots are taken lowest first)
    evicted: int
    prefill_s: float = 0.0
    started: float = 0.0  # when its decode began (after its prefill)
    tokens: list[int] = field(default_factory=list)
    pending: int | None = None  # the token sampled last, appended by the next decode step
    trace: list[dict] | None = None
    generator: torch.Generator | None = None

    @property
    def next_pos(self) -> int:
        """Position of the next token appended (its K/V and its query): the pending one, which follows
        the prompt and the tokens sampled before it."""
        return len(self.request.prompt_ids) + len(self.tokens) - 1


class Engine:
    """Runs a transformers causal LM (Llama, Mistral, Qwen2, Qwen3) with kvexp's cache and a policy.

    Up to `settings.batch_size` requests decode together, one cache row each. When a request ends,
    the next one takes its row: it is prefilled (with any others arriving at the same step) into
    that row with fresh policy state, and decoding goes on; rows leave the batch only once no
    request waits. A request's tokens never depend on its row, its entry step or its neighbours:
    every rule (sampling, eviction, query windows) is per row and per position."""

    def __init__(
        self,
        model,
        policy: Policy,
        budget: Budget,
        settings: GenerationSettings,
        observer: Callable[[KVCache, list], None] | None = None,
    ):
        """observer(cache, keys): called after every forward pass (a decode step or a prefill of
        newcomers) with the cache and the request key of each of its rows (None: a free row)."""
        check_model_config(model.config)
        budget.check(policy)
        policy.prepare(model)
        self.model, self.policy, self.budget, self.settings = model, policy, budget, settings
        self._budget_fields = dict(budget=budget.tokens, slack=budget.slack, schedule=budget.schedule)
        self.observer = observer
        self.sampler = Sampler(settings.temperature, settings.top_p, settings.top_k)
        self.generated_tokens = 0  # sampled so far by every row, finished or not: a host count for progress
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        # positions the model was trained for: prompt + output never exceed them (None: no limit)
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)

    # ---- public ----
    def generate(self, requests: Iterable[Request], trace_keys: set | frozenset = frozenset()) -> Iterator[Output]:
        """Yields one Output per request as rows finish. When a forward pass fails, the requests it
        held are rerun one by one, so one bad sample becomes one error Output and the rest go on."""
        queue: deque[Request] = deque()
        for req in requests:
            problem = self._prompt_problem(req)
            if problem:
                yield Output(req.key, n_prompt_tokens=len(req.prompt_ids), error=problem)
            else:
                queue.append(req)
        while queue:
            held: dict[Hashable, Request] = {}
            try:
                yield from self._decode(queue, held, trace_keys, self.settings.batch_size)
            except Exception:
                if self.settings.batch_size == 1:
                    for req in held.values():
                        yield Output(req.key, n_prompt_tokens=len(req.prompt_ids), error=traceback.format_exc())
                    continue
                for req in held.values():  # same seeds, so a row run alone gives the batch's result
                    try:
                        yield from self._decode(deque([req]), {}, trace_keys, 1)
                    except Exception:
                        yield Output(req.key, n_prompt_tokens=len(req.prompt_ids), error=traceback.format_exc())

    # ---- internals ----
    def _prompt_problem(self, req: Request) -> str | None:
        if not req.prompt_ids:
            return "empty prompt"
        if self.max_positions is not None and len(req.prompt_ids) >= self.max_positions:
            return (
                f"prompt of {len(req.prompt_ids)} tokens leaves no room for output in the model's "
                f"max_position_embeddings={self.max_positions}; use a shorter prompt or a model with more positions"
            )
        if self.policy.evicts and self.policy.protect_prompt:
            b, s = self.budget.tokens, self.budget.slack
            need = max(len(req.prompt_ids), self.policy.n_sink) + self.policy.recent_window(b)
            if need > b - s:
                return (
                    f"prompt does not fit: pinned prompt of {len(req.prompt_ids)} tokens plus a recent "
                    f"window of {self.policy.recent_window(b)} needs {need} slots but budget {b} with slack "
                    f"{s} leaves {b - s}; raise budget.tokens or set policy.protect_prompt=false"
                )
        return None

    def capacity(self, requests: Iterable[Request]) -> int:
        """KV slots per row for these requests (`kvexp.engine.memory.row_capacity`)."""
        return row_capacity(
            self.policy, self.budget.tokens, max(len(r.prompt_ids) for r in requests), self.settings.max_new_tokens
        )

    @contextmanager
    def _kvexp_attention(self):
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = ATTN_IMPLEMENTATION
        try:
            yield
        finally:
            config._attn_implementation = previous

    def _forward(self, ids: Tensor, position_ids: Tensor, cache: KVCache, last: Tensor | None = None) -> Tensor:
        """ids, position_ids [B, Q] -> next-token logits [B, V] fp32 at the last position; a packed
        prefill (B = 1) takes them at the prompts' last tokens `last` [P] instead -> [P, V]."""
        body = self.model.model
        hidden = body.embed_tokens(ids)
        rope = body.rotary_emb(hidden, position_ids=position_ids)
        for layer in body.layers[: self.model.config.num_hidden_layers]:
            hidden = layer(
                hidden,
                attention_mask=None,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                position_embeddings=rope,
                kv_cache=cache,
            )
        if last is not None:
            return self.model.lm_head(body.norm(hidden[0, last])).float()
        return self.model.lm_head(body.norm(hidden[:, -1:]))[:, -1].float()

    def synchronize(self) -> float:
        """Wait for the work queued on the model's device, then return `time.perf_counter()`: a clock
        reading that includes that work (for timings around `generate`)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _observe(self, cache: KVCache, rows: list[_Row | None]) -> None:
        if self.observer:
            self.observer(cache, [row.request.key if row else None for row in rows])

    @torch.inference_mode()
    def _decode(self, queue: deque[Request], held: dict, trace_keys, max_rows: int) -> Iterator[Output]:
        """Decode until `queue` is empty, taking requests from it as rows free up. `held` holds the
        requests admitted and not yet finished, for the caller to rerun if a forward pass fails."""
        capacity = self.capacity(queue)
        cache, rows, logits = None, [], None
        with self._kvexp_attention():
            while True:
                if queue and (cache is None or not held):  # the first batch, or a static batch's next
                    n = min(max_rows, len(queue))
                    cache = KVCache(
                        self.model.config,
                        n,
                        capacity,
                        self.dtype,
                        self.device,
                        self.policy,
                        self.budget,
                    )
                    rows, logits = [None] * n, None
                free = [i for i, row in enumerate(rows) if row is None]
                if free and queue and (self.settings.continuous or not held):
                    logits = self._admit(cache, rows, free, queue, held, logits, trace_keys)
                    continue  # more free rows may wait for the next prefill group
                need = [i for i, row in enumerate(rows) if row is not None and row.pending is None]
                gens = [rows[i].generator for i in need] if not self.sampler.greedy else None
                chosen = logits if len(need) == len(rows) else logits[need]
                self.generated_tokens += len(need)
                for i, token in zip(need, self.sampler(chosen, gens).tolist()):
                    row = rows[i]
                    row.pending = token
                    row.tokens.append(token)
                    reason = self._stop_reason(row)
                    if reason:
                        rows[i] = None
                        del held[row.request.key]
                        now = self.synchronize()
                        kept = cache.prompt_kept(i, len(row.request.prompt_ids))  # once per row, as it finishes
                        yield self._output(row, reason, now, cache.bytes_per_token(), kept)
                if any(row is None for row in rows):
                    if queue and (self.settings.continuous or not held):
                        continue  # newcomers take the free rows
                    keep = [i for i, row in enumerate(rows) if row is not None]
                    if not keep:
                        if queue:
                            continue
                        return
                    index = torch.tensor(keep, device=self.device)
                    cache.select_rows(index)  # finished rows stop costing compute
                    rows, logits = [rows[i] for i in keep], logits.index_select(0, index)
                logits = self._step(cache, rows, capacity)
                self._observe(cache, rows)
                if any(row.trace is not None for row in rows):
                    self._record_trace(rows, cache)

    def _admit(self, cache: KVCache, rows: list, free: list[int], queue: deque, held: dict, logits, trace_keys):
        """Prefill the next requests from `queue` into free rows (as many as fit one prefill of
        `max_prefill_tokens` tokens, at least one); returns the logits of every row."""
        batch: list[Request] = []
        tokens = 0
        while queue and len(batch) < len(free):
            if batch and tokens + len(queue[0].prompt_ids) > self.settings.max_prefill_tokens:
                break
            batch.append(queue.popleft())
            held[batch[-1].key] = batch[-1]
            tokens += len(batch[-1].prompt_ids)
        lengths = [len(r.prompt_ids) for r in batch]
        capacity = cache.layers[0].capacity
        # packed: the prompts end to end in one row, each attending to itself (no padding to depend on)
        ids = torch.tensor([[t for r in batch for t in r.prompt_ids]], device=self.device)
        positions = torch.cat([torch.arange(n) for n in lengths]).view(1, -1).to(self.device)
        last = torch.tensor(lengths).cumsum(0).sub(1).to(self.device)
        prompt_len = torch.tensor(lengths, device=self.device)
        targets = free[: len(batch)]
        cache.ctx = StepContext(
            prefill=True,
            incoming=prompt_len.clone(),
            prompt_len=prompt_len,
            row_seed=torch.tensor([r.seed % 2**62 for r in batch], device=self.device),
            prefill_rows=tuple(zip(targets, lengths)),
            **self._budget_fields,
        )
        t0 = self.synchronize()
        new_logits = self._forward(ids, positions, cache, last)
        t1 = self.synchronize()
        generators = self.sampler.generators([r.seed for r in batch], self.device) or [None] * len(batch)
        room = self.budget.prefill_room(capacity)
        for i, r, n, g in zip(targets, batch, lengths, generators):
            kept = min(n, room)
            rows[i] = _Row(
                r,
                kept,
                kept,
                n - kept,
                prefill_s=t1 - t0,
                started=t1,
                trace=[] if r.key in trace_keys else None,
                generator=g,
            )
        if logits is None:
            logits = new_logits.new_zeros(len(rows), new_logits.shape[-1])
        logits[targets] = new_logits
        self._observe(cache, rows)
        return logits

    def _step(self, cache: KVCache, rows: list[_Row], capacity: int) -> Tensor:
        """One decode forward: every row appends its pending token (rows the budget cuts evict first)."""
        counts = [self.budget.evictions(row.resident, len(row.tokens)) if self.policy.evicts else 0 for row in rows]
        slots_in_use = max(min(row.peak + 1, capacity) for row in rows)
        # one host-to-device copy per step: [5, B] positions, prompt lengths, seeds, tokens, evictions
        incoming, prompt_len, row_seed, step_ids, evict = torch.tensor(
            [
                [row.next_pos for row in rows],
                [len(row.request.prompt_ids) for row in rows],
                [row.request.seed % 2**62 for row in rows],
                [row.pending for row in rows],
                counts,
            ],
            device=self.device,
        )
        evicting = [c for c in counts if c]
        cache.ctx = StepContext(
            prefill=False,
            incoming=incoming,
            query_pos=incoming.view(-1, 1),
            prompt_len=prompt_len,
            row_seed=row_seed,
            evict_rows=evict > 0 if evicting else None,
            evict_all=len(evicting) == len(rows),
            evict_count=max(evicting, default=0),
            evict_counts=evict if len(set(evicting)) > 1 else None,
            slots_in_use=slots_in_use,
            **self._budget_fields,
        )
        step_ids = step_ids.view(-1, 1)
        for row, count in zip(rows, counts):
            row.resident += 1 - count
            row.evicted += count
            if row.resident > capacity:  # the budget's rules keep B a hard cap; this would be a bug in them
                raise RuntimeError(f"row would hold {row.resident} entries in {capacity} slots")
            row.peak = max(row.peak, row.resident)
            row.pending = None
        return self._forward(step_ids, incoming.view(-1, 1), cache)

    def _stop_reason(self, row: _Row) -> str | None:
        tokens, cap = row.tokens, row.request.max_new_tokens or self.settings.max_new_tokens
        if tokens[-1] in self.settings.eos_token_ids:
            return "eos"
        if len(tokens) >= min(cap, self.settings.max_new_tokens):
            return "max_new_tokens"
        if self.max_positions is not None and len(row.request.prompt_ids) + len(tokens) >= self.max_positions:
            return "max_positions"  # the next token would sit past the model's last position
        if self.settings.repetition is not None and self.settings.repetition.triggered(tokens):
            return "repetition"
        return None

    @staticmethod
    def _record_trace(rows: list[_Row], cache: KVCache) -> None:
        share = cache.resident_prompt_share(cache.ctx.prompt_len).tolist()  # the step's own prompt lengths
        for row, sh in zip(rows, share):
            if row.trace is not None:
                row.trace.append(
                    {
                        "step": len(row.tokens),
                        "resident_tokens": row.resident,
                        "evicted_tokens": row.evicted,
                        "prompt_resident_share": round(sh, 6),
                    }
                )

    @staticmethod
    def _output(row: _Row, reason: str, now: float, bytes_per_token: int, kept: tuple[float, float]) -> Output:
        return Output(
            key=row.request.key,
            output_ids=list(row.tokens),
            stop_reason=reason,
            n_prompt_tokens=len(row.request.prompt_ids),
            n_output_tokens=len(row.tokens),
            peak_resident_tokens=row.peak,
            n_evicted_tokens=row.evicted,
            kv_bytes_peak=row.peak * bytes_per_token,
            prefill_s=row.prefill_s,
            decode_s=now - row.started,
            trace=row.trace,
            prompt_kept_share=kept[0],
            prompt_kept_any=kept[1],
        )
