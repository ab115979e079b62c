"""Budget semantics (README, "Budget semantics") and the checks that run before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvexp.errors import ConfigError

if TYPE_CHECKING:
    from kvexp.policies.base import Policy


#: When a row evicts (README, "Budget semantics"): `cap` when an append would exceed B; `interval` on a step
#: count, as the authors' code does (kvpress's DecodingPress, R-KV, G-KV, TriAttention, Random Attention).
SCHEDULES = ("cap", "interval")


@dataclass(frozen=True)
class Budget:
    """`tokens` (B): the most KV entries any (sequence, layer, KV head) holds when attention is computed,
    the new token included; None means no cap (policy `full`). `slack` (S) and `schedule` say when a row
    evicts and down to what:

    - `cap`: when an append would exceed B, evict S entries (down to B - S) in one selection, so residency
      stays within [B - S, B] once the cache is full;
    - `interval`: after every S-th decode step of a row (counted from 1, its first generated token), a row
      holding more than B - S entries is cut down to B - S: kvpress's
      `DecodingPress(target_size=B - S, compression_interval=S)`, whose `forward_hook` compresses after the
      attention of every S-th decode step; kvexp makes that cut before the next step appends, which is the
      same selection (no query or key comes in between). A prompt longer than B - S is compressed to B - S
      at prefill, as G-KV does for a prompt longer than its budget (DecodingPress never compresses the
      prompt, so with a prompt over B - S its cache holds more than B until step S: kvexp keeps B a hard
      cap instead). The phase of the cuts is the row's step count, whatever its prompt length.
    """

    tokens: int | None
    slack: int = 1
    schedule: str = "cap"

    @classmethod
    def for_policy(cls, policy: Policy, tokens: int | None, slack: int = 1, schedule: str = "cap") -> Budget:
        """The budget `policy` runs under: (tokens, slack, schedule), or no cap for a policy that never evicts."""
        return cls(tokens, slack, schedule) if policy.evicts else cls(None)

    def evictions(self, resident: int, step: int) -> int:
        """How many entries a row holding `resident` evicts before decode step `step` (1 appends the first
        generated token's K/V) appends its token: 0 if none (always, with no cap: the full cache)."""
        if self.tokens is None:
            return 0
        if self.schedule == "cap":
            return self.slack if resident + 1 > self.tokens else 0
        target = self.tokens - self.slack
        return resident - target if step > 1 and (step - 1) % self.slack == 0 and resident > target else 0

    def prefill_room(self, capacity: int) -> int:
        """The most prompt tokens a row keeps at prefill, given its `capacity` slots."""
        if self.tokens is None or self.schedule == "cap":
            return capacity
        return min(capacity, self.tokens - self.slack)

    def check(self, policy: Policy) -> None:
        """Refuse a budget/policy pair that cannot run, before anything expensive starts."""
        if not policy.evicts:
            return
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"budget.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}; "
                f"cap (the default) evicts when an append would exceed budget.tokens, interval every budget.slack steps"
            )
        if self.tokens is None:
            raise ConfigError(
                f"policy '{policy.name}' evicts and needs a token budget, got budget.tokens=null; "
                f"set budget=<N> (e.g. budget=128) or use policy=full"
            )
        if not isinstance(self.tokens, int) or self.tokens <= 0:
            raise ConfigError(f"budget.tokens must be a positive integer, got {self.tokens!r}; set e.g. budget=128")
        if not isinstance(self.slack, int) or not 1 <= self.slack < self.tokens:
            raise ConfigError(
                f"budget.slack must satisfy 1 <= slack < tokens, got slack={self.slack!r} with "
                f"tokens={self.tokens}; use budget.slack=1 for per-step eviction or a value below {self.tokens}"
            )
        protected = policy.n_protected(self.tokens)
        room = self.tokens - self.slack
        if protected > room:
            raise ConfigError(
                f"policy '{policy.name}' protects {protected} tokens (n_sink={policy.n_sink}, "
                f"recent window={policy.recent_window(self.tokens)}) but budget.tokens={self.tokens} with "
                f"budget.slack={self.slack} leaves room for {room} after an eviction; raise budget.tokens to at "
                f"least {protected + self.slack}, lower the policy's window/n_sink, or lower budget.slack"
            )

    def recorded(self, policy: Policy) -> int | None:
        """The budget as results record it: null for a policy that never evicts."""
        return self.tokens if policy.evicts else None
