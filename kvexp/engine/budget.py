"""Budget semantics (README, "Budget semantics") and the checks that run before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvexp.errors import ConfigError

if TYPE_CHECKING:
    from kvexp.policies.base import Policy


@dataclass(frozen=True)
class Budget:
    """`tokens` (B): the most KV entries any (sequence, layer, KV head) holds when attention is computed,
    the new token included; None means no cap (policy `full`). `slack` (S): on overflow, evict down to
    B - S in one selection, so residency stays within [B - S, B] once the cache is full."""

    tokens: int | None
    slack: int = 1

    @classmethod
    def for_policy(cls, policy: Policy, tokens: int | None, slack: int = 1) -> Budget:
        """The budget `policy` runs under: (tokens, slack), or no cap for a policy that never evicts."""
        return cls(tokens, slack) if policy.evicts else cls(None)

    def check(self, policy: Policy) -> None:
        """Refuse a budget/policy pair that cannot run, before anything expensive starts."""
        if not policy.evicts:
            return
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
