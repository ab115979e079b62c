"""Progress of a job: problems done (a problem is done when all its samples are), rows, tokens/s.

A tqdm bar when stderr is a terminal (tqdm ships with `datasets`), else a plain log line every
`interval` seconds, which reads well in SLURM and submitit log files.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter

log = logging.getLogger("kvexp.progress")


class Progress:
    def __init__(
        self,
        *,
        problems: int,
        rows: int,
        samples_per_problem: int,
        problems_done: int = 0,
        rows_done: int = 0,
        interval: float = 10.0,
        label: str = "",
    ):
        self.problems, self.rows, self.k = problems, rows, samples_per_problem
        self.problems_done, self.rows_done = problems_done, rows_done
        self.interval, self.label = interval, label
        self.tokens = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._pending: Counter[str] = Counter()  # rows finished per problem that is not complete yet
        self._bar = self._make_bar()

    def _make_bar(self):
        if not sys.stderr.isatty():
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(
            total=self.problems,
            initial=self.problems_done,
            desc=self.label or "problems",
            unit="problem",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    @property
    def tokens_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def update(self, problem_id: str, n_tokens: int, *, already_done: int = 0) -> None:
        """One row of `problem_id` finished (`already_done`: its rows finished in earlier runs)."""
        self.rows_done += 1
        self.tokens += n_tokens
        self._pending[problem_id] += 1
        if self._pending[problem_id] + already_done >= self.k:
            del self._pending[problem_id]
            self.problems_done += 1
            if self._bar is not None:
                self._bar.update(1)
        if self._bar is not None:
            self._bar.set_postfix(rows=f"{self.rows_done}/{self.rows}", tok_s=f"{self.tokens_per_s:.1f}", refresh=False)
        elif time.perf_counter() - self._last >= self.interval or self.rows_done == self.rows:
            self._last = time.perf_counter()
            log.info(
                "%s%d/%d problems, %d/%d samples, %.1f tokens/s",
                f"{self.label}: " if self.label else "",
                self.problems_done,
                self.problems,
                self.rows_done,
                self.rows,
                self.tokens_per_s,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
