"""Progress of a job while rows decode: tokens generated so far (unfinished rows included), tokens/s and
an estimate of the time left, with problems done (a problem is done when all its samples are) and rows.

A tqdm bar of tokens when stderr is a terminal (tqdm ships with `datasets`), else a plain log line
every `interval` seconds, which reads well in SLURM and submitit log files. Both move while rows decode,
not only as rows finish: the engine calls `watch(engine)` after every forward pass, and it reads only
the engine's host-side count of tokens sampled (Engine.generated_tokens), so it adds no device
synchronisation to a decode step. The first update comes `first_update_s` after decoding starts.

Time left, over tokens/s: a row still waiting is taken to need the mean length of the rows finished in
this run (before any has, max_new_tokens, an upper bound); the rows decoding need that mean minus what
they have, or, once they have outlived it, half of what is left to max_new_tokens.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable

log = logging.getLogger("kvexp.progress")

#: Seconds between log lines, and from decoding's start to the first one.
INTERVAL_S, FIRST_UPDATE_S = 10.0, 5.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    def __init__(
        self,
        *,
        problems: int,
        rows: int,
        samples_per_problem: int,
        max_new_tokens: int,
        problems_done: int = 0,
        rows_done: int = 0,
        interval: float | None = None,
        first_update_s: float | None = None,
        label: str = "",
    ):
        interval = INTERVAL_S if interval is None else interval
        first_update_s = FIRST_UPDATE_S if first_update_s is None else first_update_s
        self.problems, self.rows, self.k = problems, rows, samples_per_problem
        self.max_new_tokens = max_new_tokens
        self.problems_done, self.rows_done = problems_done, rows_done
        self.rows_at_start = rows_done
        self.interval, self.label = interval, label
        self.tokens = 0  # of the rows finished in this run
        self.sampled = 0  # by every row of this run, finished or not (the engine's count)
        self.live_rows = 0  # rows decoding now
        self.start = time.perf_counter()
        self._last = self.start - interval + first_update_s  # the first update after first_update_s
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
            total=self._total_tokens(),
            desc=self.label or "tokens",
            unit="tok",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    # ---- what is shown ----
    @property
    def tokens_per_s(self) -> float:
        """Tokens sampled per second in this run, unfinished rows included."""
        elapsed = time.perf_counter() - self.start
        return max(self.sampled, self.tokens) / elapsed if elapsed > 0 else 0.0

    def _expected_length(self) -> float:
        finished = self.rows_done - self.rows_at_start
        return min(self.tokens / finished, self.max_new_tokens) if finished else self.max_new_tokens

    def _remaining_tokens(self) -> float:
        expected = self._expected_length()
        waiting = max(0, self.rows - self.rows_done - self.live_rows)
        live_tokens = max(0, self.sampled - self.tokens)
        live_length = live_tokens / self.live_rows if self.live_rows else 0.0
        if live_length >= expected:  # the rows decoding have outlived that mean: halfway to the cap, say
            expected_live = (live_length + self.max_new_tokens) / 2
        else:
            expected_live = expected
        return waiting * expected + self.live_rows * max(0.0, expected_live - live_length)

    def _total_tokens(self) -> int:
        return int(max(self.sampled, self.tokens) + self._remaining_tokens())

    def seconds_left(self) -> float | None:
        rate = self.tokens_per_s
        return self._remaining_tokens() / rate if rate > 0 else None

    # ---- updates ----
    def watch(self, engine) -> Callable[[object, list[Hashable | None]], None]:
        """The engine's observer (called after every forward pass with the cache and each row's key, None
        for a free row): moves the progress with the engine's host count of tokens sampled."""
        start = engine.generated_tokens

        def observe(cache, keys: list[Hashable | None]) -> None:
            self.decoding(engine.generated_tokens - start, sum(key is not None for key in keys))

        return observe

    def decoding(self, sampled: int, live_rows: int) -> None:
        """`sampled` tokens so far in this run by every row, `live_rows` of them decoding now."""
        self.sampled, self.live_rows = sampled, live_rows
        self._show()

    def update(self, problem_id: str, n_tokens: int, *, already_done: int = 0) -> None:
        """One row of `problem_id` finished (`already_done`: its rows finished in earlier runs)."""
        self.rows_done += 1
        self.tokens += n_tokens
        self.live_rows = max(0, self.live_rows - 1)
        self._pending[problem_id] += 1
        if self._pending[problem_id] + already_done >= self.k:
            del self._pending[problem_id]
            self.problems_done += 1
        self._show(force=self.rows_done == self.rows)

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self._bar is not None:
            if force or now - self._last >= 0.5:  # a bar redrawn at most twice a second
                self._last = now
                self._bar.total = self._total_tokens()
                self._bar.n = max(self.sampled, self.tokens)
                self._bar.set_postfix(
                    problems=f"{self.problems_done}/{self.problems}",
                    rows=f"{self.rows_done}/{self.rows}",
                    refresh=False,
                )
                self._bar.refresh()
            return
        if not force and now - self._last < self.interval:
            return
        self._last = now
        left = self.seconds_left()
        if self.rows_done == self.rows:
            left_text = "done"
        else:
            left_text = f"about {_duration(left)} left" if left is not None else "time left unknown yet"
        log.info(
            "%s%d/%d problems, %d/%d samples, %d tokens (%d rows decoding), %.1f tokens/s, %s",
            f"{self.label}: " if self.label else "",
            self.problems_done,
            self.problems,
            self.rows_done,
            self.rows,
            max(self.sampled, self.tokens),
            self.live_rows,
            self.tokens_per_s,
            left_text,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
