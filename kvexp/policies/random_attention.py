from kvexp.policies.random import Random

BUFFER = 64  # their residual_length: the newest tokens, never candidates


class RandomAttention(Random):
    """Random Attention (arXiv 2609.03430; SalesforceAIResearch/Random-Attention, `random_pp`): pin the
    prompt, keep a recent window, and evict uniformly at random among everything else, with a fresh
    independent draw per (layer, KV head) at every eviction. The draws are `random`'s
    (`kvexp.policies.random.eviction_draws`), so `random` with `protect_prompt=true` and the same
    window is this policy.

    As their `kvcompress/engine/cache_utils.py` (commit 066c520) does it:
    - L389-398 (`random_pp`): one `torch.rand` per (row, KV head, candidate); the first prompt tokens
      (L390) get +inf, so they are always kept; the `token_budget` - 64 largest draws are kept, the
      rest evicted.
    - L272-275: the candidates are every entry but the newest `residual_length` (64), the buffer
      written since the last compression, which is moved back behind the kept entries untouched: the
      newest 64 tokens are never evicted. That is the default window here, min(64, B / 2): 64 at
      any of their budgets (K >= 64, so B = K + 64 >= 128), half the budget below, so that small
      budgets still leave room for the prompt and the draws.
    - L221: a compression runs when the cache length is above `token_budget` and a multiple of 64,
      and cuts it back to `token_budget` (K). Their regime (`scripts/run_cell.sh`: `--token_budget K
      --residual_length 64`) is `budget.tokens=K+64 budget.slack=64` here: the cache grows from K to
      K + 64 and is compressed back to K, at the same steps as theirs for a budget K that is a
      multiple of 64 and a prompt that fits.

    Differences from their code:
    - The draws come from a hash of (problem and sample seed, layer, KV head, step, position), not
      from the process's global generator; same distribution, other numbers, and a row's draws do
      not depend on the batch it shares.
    - A pinned prompt that does not fit (prompt + window > B - S) is an error row, as for every
      policy with `protect_prompt` (README, "Budget semantics"); theirs then pins only the first
      K - 65 prompt tokens (L390 caps the pinned prompt one below the K - 64 candidates it keeps)
      and lets the rest compete. With `protect_prompt=false` a prompt longer than B is compressed at
      prefill by the same draws; theirs never compresses at prefill.
    - kvexp's default slack is 1 (evict one entry a step); they only run the 64-step schedule. The
      window is the same either way; `policy.window=0` lets the newest tokens compete too.
    """

    name = "random_attention"

    def __init__(self, *, protect_prompt: bool = True, **kw):
        super().__init__(protect_prompt=protect_prompt, **kw)

    def default_window(self, budget):
        return min(BUFFER, budget // 2)
