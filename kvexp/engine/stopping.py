"""Stop rules other than EOS and max_new_tokens."""

from __future__ import annotations

from dataclasses import dataclass

from kvexp.errors import ConfigError


@dataclass(frozen=True)
class RepetitionStop:
    """Stop when the output ends in a loop: the last `min_span` or more tokens repeat with a period of
    at most `max_period` tokens, at least `min_repeats` times. Catches the degenerate loops that
    compressed caches provoke in reasoning models, which would otherwise run to max_new_tokens."""

    max_period: int = 64
    min_repeats: int = 4
    min_span: int = 32

    def __post_init__(self):
        if self.max_period < 1 or self.min_repeats < 2 or self.min_span < 2:
            raise ConfigError(f"repetition stop needs max_period >= 1, min_repeats >= 2, min_span >= 2, got {self}")

    def triggered(self, tokens: list[int]) -> bool:
        n = len(tokens)
        if n < self.min_span:
            return False
        for period in range(1, self.max_period + 1):
            span = max(self.min_span, period * self.min_repeats)
            if span > n:
                break
            tail = tokens[n - span :]
            if tail[period:] == tail[:-period]:
                return True
        return False
