"""The one decode loop: prefill, then token by token, for the full cache and every policy."""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from kvexp.engine.attention import ATTN_IMPLEMENTATION, SUPPORTED_MODEL_TYPES
from kvexp.engine.budget import Budget, ConfigError, PromptDoesNotFit
from kvexp.engine.cache import KVCache
from kvexp.engine.sampling import Sampler
from kvexp.engine.stopping import RepetitionStop
from kvexp.policies.base import Policy, StepContext


def check_model_config(config) -> None:
    """Refuse, before weights load, a model whose attention kvexp cannot drive."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"kvexp cannot drive the attention of model_type {model_type!r}; supported: "
                          f"{', '.join(SUPPORTED_MODEL_TYPES)} (decoder-only models with grouped-query attention)")
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", model_type == "mistral")
    if window and uses_window:
        raise ConfigError(f"model uses sliding-window attention (sliding_window={window}), which kvexp does not "
                          f"emulate; use a checkpoint without it or set sliding_window=null in its config")
    if config.num_attention_heads % config.num_key_value_heads:
        raise ConfigError(f"num_attention_heads={config.num_attention_heads} is not a multiple of "
                          f"num_key_value_heads={config.num_key_value_heads}")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    batch_size: int = 8
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    eos_token_ids: tuple[int, ...] = ()
    repetition: RepetitionStop | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError(f"generation.max_new_tokens and generation.batch_size must be >= 1, got "
                              f"{self.max_new_tokens} and {self.batch_size}")
        object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))
        if isinstance(self.repetition, dict):
            object.__setattr__(self, "repetition", RepetitionStop(**self.repetition))


@dataclass(frozen=True)
class Request:
    key: Hashable
    prompt_ids: list[int]
    seed: int = 0


@dataclass
class Output:
    key: Hashable
    output_ids: list[int] = field(default_factory=list)
    stop_reason: str | None = None          # eos | max_new_tokens | repetition; None on error
    n_prompt_tokens: int = 0
    n_output_tokens: int = 0
    peak_resident_tokens: int = 0
    n_evicted_tokens: int = 0               # per (layer, KV head); every head evicts the same count
    kv_bytes_peak: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    trace: list[dict] | None = None
    error: str | None = None


@dataclass
class _Row:
    """Host-side bookkeeping of one active row; the device tensors live in the cache."""

    request: Request
    next_pos: int
    resident: int
    peak: int
    evicted: int
    tokens: list[int] = field(default_factory=list)
    trace: list[dict] | None = None
    generator: torch.Generator | None = None


class Engine:
    """Runs a transformers causal LM (Llama, Mistral, Qwen2, Qwen3) with kvexp's cache and a policy."""

    def __init__(self, model, policy: Policy, budget: Budget, settings: GenerationSettings,
                 observer: Callable[[KVCache, list], None] | None = None):
        """observer(cache, keys): called after every forward pass with the cache and the keys of its
        rows, for tests and debugging tools that inspect or perturb the cache."""
        check_model_config(model.config)
        budget.check(policy)
        self.model, self.policy, self.budget, self.settings = model, policy, budget, settings
        self.observer = observer
        self.sampler = Sampler(settings.temperature, settings.top_p, settings.top_k)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    # ---- public ----
    def generate(self, requests: Iterable[Request], trace_keys: set | frozenset = frozenset()) -> Iterator[Output]:
        """Yields one Output per request as rows finish. A batch that fails is retried row by row, so
        one bad sample becomes one error Output and the rest go on."""
        requests = list(requests)
        for start in range(0, len(requests), self.settings.batch_size):
            batch = requests[start:start + self.settings.batch_size]
            runnable = []
            for req in batch:
                problem = self._prompt_problem(req)
                if problem:
                    yield Output(req.key, n_prompt_tokens=len(req.prompt_ids), error=problem)
                else:
                    runnable.append(req)
            yield from self._run_safely(runnable, trace_keys)

    # ---- internals ----
    def _prompt_problem(self, req: Request) -> str | None:
        if not req.prompt_ids:
            return "empty prompt"
        if self.policy.evicts and self.policy.protect_prompt:
            b, s = self.budget.tokens, self.budget.slack
            need = max(len(req.prompt_ids), self.policy.n_sink) + self.policy.recent_window(b)
            if need > b - s:
                return (f"{PromptDoesNotFit.__name__}: pinned prompt of {len(req.prompt_ids)} tokens plus a recent "
                        f"window of {self.policy.recent_window(b)} needs {need} slots but budget {b} with slack "
                        f"{s} leaves {b - s}; raise budget.tokens or set policy.protect_prompt=false")
        return None

    def _run_safely(self, batch: list[Request], trace_keys) -> Iterator[Output]:
        if not batch:
            return
        done: list[Output] = []
        try:
            for out in self._run_batch(batch, trace_keys):
                done.append(out)
                yield out
        except Exception:
            finished = {o.key for o in done}
            rest = [r for r in batch if r.key not in finished]
            if len(batch) == 1:
                yield Output(batch[0].key, n_prompt_tokens=len(batch[0].prompt_ids), error=traceback.format_exc())
                return
            for req in rest:  # same seeds, so a single-row rerun gives the batch's result
                yield from self._run_safely([req], trace_keys)

    @contextmanager
    def _kvexp_attention(self):
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = ATTN_IMPLEMENTATION
        try:
            yield
        finally:
            config._attn_implementation = previous

    def _forward(self, ids: Tensor, position_ids: Tensor, cache: KVCache) -> Tensor:
        """ids, position_ids [B, Q] -> next-token logits [B, V] fp32 (last position only)."""
        body = self.model.model
        hidden = body.embed_tokens(ids)
        rope = body.rotary_emb(hidden, position_ids=position_ids)
        for layer in body.layers[: self.model.config.num_hidden_layers]:
            hidden = layer(hidden, attention_mask=None, position_ids=position_ids, past_key_values=cache,
                           use_cache=True, position_embeddings=rope, kv_cache=cache)
        return self.model.lm_head(body.norm(hidden[:, -1:]))[:, -1].float()

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @torch.inference_mode()
    def _run_batch(self, batch: list[Request], trace_keys) -> Iterator[Output]:
        s = self.settings
        lengths = [len(r.prompt_ids) for r in batch]
        longest = max(lengths)
        evicting = self.policy.evicts
        capacity = longest + s.max_new_tokens
        if evicting:
            capacity = min(capacity, self.budget.tokens)
        cache = KVCache(self.model.config, len(batch), capacity, self.dtype, self.device, self.policy,
                        self.budget.tokens, self.budget.slack)
        bytes_per_token = cache.bytes_per_token()

        # left padding: every row's last prompt token sits in the last column
        ids = torch.zeros(len(batch), longest, dtype=torch.long)
        prompt_pos = torch.full((len(batch), longest), -1, dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, longest - lengths[i]:] = torch.tensor(r.prompt_ids)
            prompt_pos[i, longest - lengths[i]:] = torch.arange(lengths[i])
        ids, prompt_pos = ids.to(self.device), prompt_pos.to(self.device)
        prompt_len = torch.tensor(lengths, device=self.device)
        row_seed = torch.tensor([r.seed % 2**62 for r in batch], device=self.device)
        cache.prompt_pos = prompt_pos
        cache.ctx = StepContext(prefill=True, incoming=prompt_len.clone(), prompt_len=prompt_len, row_seed=row_seed)

        rows = []
        for r, n in zip(batch, lengths):
            resident = min(n, capacity)
            rows.append(_Row(r, n, resident, resident, n - resident,
                             trace=[] if r.key in trace_keys else None))
        generators = self.sampler.generators([r.seed for r in batch], self.device)
        if generators:
            for row, g in zip(rows, generators):
                row.generator = g

        t0 = self._sync()
        with self._kvexp_attention():
            logits = self._forward(ids, prompt_pos.clamp(min=0), cache)
            if self.observer:
                self.observer(cache, [row.request.key for row in rows])
            t_prefill = self._sync()
            prefill_s = t_prefill - t0
            incoming = prompt_len.clone()
            slots_in_use = min(longest, capacity)  # each step needs at most one slot beyond the last
            while True:
                gens = [row.generator for row in rows] if generators else None
                tokens = self.sampler(logits, gens).tolist()
                finished = []
                for i, (row, tok) in enumerate(zip(rows, tokens)):
                    row.tokens.append(tok)
                    reason = self._stop_reason(row.tokens)
                    if reason:
                        finished.append(i)
                        yield self._output(row, reason, prefill_s, self._sync() - t_prefill, bytes_per_token)
                if finished:
                    keep = [i for i in range(len(rows)) if i not in set(finished)]
                    if not keep:
                        break
                    rows = [rows[i] for i in keep]
                    index = torch.tensor(keep, device=self.device)
                    cache.select_rows(index)
                    incoming, prompt_len, row_seed = (t.index_select(0, index) for t in (incoming, prompt_len, row_seed))
                    tokens = [tokens[i] for i in keep]
                # the sampled tokens go in at positions `incoming`; full rows evict first
                needs = [evicting and row.resident + 1 > capacity for row in rows]
                for row, evict in zip(rows, needs):
                    if evict:
                        row.resident -= self.budget.slack
                        row.evicted += self.budget.slack
                    row.resident += 1
                    row.peak = max(row.peak, row.resident)
                    row.next_pos += 1
                cache.ctx = StepContext(
                    prefill=False, incoming=incoming, prompt_len=prompt_len, row_seed=row_seed,
                    evict_rows=torch.tensor(needs, device=self.device) if any(needs) else None,
                    evict_all=all(needs), slots_in_use=min(slots_in_use + 1, capacity))
                slots_in_use = cache.ctx.slots_in_use
                step_ids = torch.tensor(tokens, device=self.device).view(-1, 1)
                logits = self._forward(step_ids, incoming.view(-1, 1), cache)
                incoming = incoming + 1
                if self.observer:
                    self.observer(cache, [row.request.key for row in rows])
                if any(row.trace is not None for row in rows):
                    self._record_trace(rows, cache, prompt_len)

    def _stop_reason(self, tokens: list[int]) -> str | None:
        if tokens[-1] in self.settings.eos_token_ids:
            return "eos"
        if len(tokens) >= self.settings.max_new_tokens:
            return "max_new_tokens"
        if self.settings.repetition is not None and self.settings.repetition.triggered(tokens):
            return "repetition"
        return None

    @staticmethod
    def _record_trace(rows: list[_Row], cache: KVCache, prompt_len: Tensor) -> None:
        share = cache.resident_prompt_share(prompt_len).tolist()
        for row, sh in zip(rows, share):
            if row.trace is not None:
                row.trace.append({"step": len(row.tokens), "resident_tokens": row.resident,
                                  "evicted_tokens": row.evicted, "prompt_resident_share": round(sh, 6)})

    @staticmethod
    def _output(row: _Row, reason: str, prefill_s: float, decode_s: float, bytes_per_token: int) -> Output:
        return Output(key=row.request.key, output_ids=list(row.tokens), stop_reason=reason,
                      n_prompt_tokens=len(row.request.prompt_ids), n_output_tokens=len(row.tokens),
                      peak_resident_tokens=row.peak, n_evicted_tokens=row.evicted,
                      kv_bytes_peak=row.peak * bytes_per_token, prefill_s=prefill_s, decode_s=decode_s,
                      trace=row.trace)
