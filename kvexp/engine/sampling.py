"""Next-token choice. Each row draws from its own generator, seeded per (problem, sample), so a
sampled output does not depend on batch size or order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kvexp.errors import ConfigError


@dataclass(frozen=True)
class Sampler:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ConfigError(f"sampling needs temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def generators(self, seeds: list[int], device) -> list[torch.Generator] | None:
        if self.greedy:
            return None
        return [torch.Generator(device=device).manual_seed(int(s) % 2**63) for s in seeds]

    def filtered_probs(self, logits: Tensor) -> Tensor:
        """[B, V] fp32 logits -> sampling distribution after temperature, top-k and top-p."""
        logits = logits / self.temperature
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
            drop = cum - torch.softmax(sorted_logits, dim=-1) >= self.top_p  # keep the token that crosses top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return torch.softmax(logits, dim=-1)

    def __call__(self, logits: Tensor, generators: list[torch.Generator] | None) -> Tensor:
        """[B, V] -> [B] token ids."""
        if generators is None:
            return logits.argmax(dim=-1)
        probs = self.filtered_probs(logits)
        return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])
