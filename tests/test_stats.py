"""kvexp.stats against hand-computed values: pass@k, maj@k and its tie rule, the bootstraps over
problems and seeds, and a cell's metrics over several seeds and samples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from kvexp.stats import (
    Sample,
    bootstrap_mean_interval,
    cell_stats,
    default_pass_k,
    maj_at_k,
    paired_stats,
    pass_at_k,
    resolve_pass_k,
    two_level_interval,
)


def _brute_pass_at_k(outcomes: list[bool], k: int) -> float:
    """The share of k-subsets of the samples that hold a correct one: what pass@k estimates."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n, c", [(1, 0), (1, 1), (4, 1), (5, 2), (6, 3), (8, 0), (8, 8), (10, 1)])
def test_pass_at_k_equals_the_closed_form_and_enumeration(n, c):
    for k in range(1, n + 1):
        closed = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-15)
        assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k([True] * c + [False] * (n - c), k))
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 2, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_maj_at_k_majority_and_ties():
    T, F = True, False
    assert maj_at_k([("3", T), ("5", F), ("3", T)], 3) == 1.0  # 3 wins 2 to 1
    assert maj_at_k([("3", T), ("5", F), ("5", F)], 3) == 0.0  # 5 wins
    assert maj_at_k([("3", T), ("5", F), ("5", F)], 2) == 0.5  # first two: a tie of 3 and 5
    assert maj_at_k([("3", T), ("5", F), ("7", F)], 3) == pytest.approx(1 / 3)  # three-way tie
    assert maj_at_k([("3", T), ("5", F), (" 3", T), ("5", F)], 4) == 0.5  # " 3" is "3": a 2-2 tie
    # samples without an answer do not vote, so one answer outvotes two blanks
    assert maj_at_k([(None, F), (None, F), ("3", T)], 3) == 1.0
    assert maj_at_k([(None, F), (None, F)], 2) == 0.0  # nothing to vote for
    # two spellings of a correct answer tied with a wrong one: 2 of the 3 tied answers are right
    assert maj_at_k([("1/2", T), ("0.5", T), ("2", F)], 3) == pytest.approx(2 / 3)
    assert maj_at_k([("3", T), ("5", F)], 1) == 1.0  # k = 1: the first sample alone
    with pytest.raises(ValueError):
        maj_at_k([("3", T)], 2)


def test_the_k_list_defaults_and_refusals():
    assert default_pass_k(1) == [1] and default_pass_k(6) == [1, 2, 4, 6] and default_pass_k(8) == [1, 2, 4, 8]
    assert resolve_pass_k(None, 3) == [1, 2, 3]
    assert resolve_pass_k([4, 1, 4], 4) == [1, 4]
    with pytest.raises(ValueError, match=r"k=\[8\] outside 1..generation.num_samples=4"):
        resolve_pass_k([1, 8], 4)
    with pytest.raises(ValueError, match="list of integers"):
        resolve_pass_k(4, 4)


# ---------------------------------------------------------------- bootstraps


def test_one_seed_is_the_bootstrap_over_problems():
    # against a plain percentile bootstrap of the mean written out here, with its own draws
    values = np.random.default_rng(3).integers(0, 2, 60).astype(float)
    draws = np.random.default_rng(7).integers(0, len(values), (20_000, len(values)))
    plain = np.quantile(values[draws].mean(axis=1), [0.025, 0.975])
    lo, hi = two_level_interval(np.array([values]))
    assert abs(lo - plain[0]) <= 0.02 and abs(hi - plain[1]) <= 0.02
    values = [0.0, 1.0, 0.5, 1.0, 0.0, 1.0]
    lo, hi = bootstrap_mean_interval(values)
    assert 0 <= lo < np.mean(values) < hi <= 1
    assert bootstrap_mean_interval([0.4] * 5) == (pytest.approx(0.4), pytest.approx(0.4))


def test_two_level_bootstrap_hand_case():
    # Every problem scores the same within a seed, so only the draw of seeds matters: two seeds
    # scoring 0 and 1 give a resampled mean of 0, 0.5 or 1 (chances 1/4, 1/2, 1/4): [0, 1].
    x = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert two_level_interval(x) == (0.0, 1.0)
    # ... whereas a bootstrap over problems alone would see no variation at all
    assert bootstrap_mean_interval(x.mean(axis=0)) == (0.5, 0.5)


def test_two_level_interval_shrinks_as_seeds_are_added():
    """Seeds that disagree (a seed effect of +-0.15) on 40 problems: with more seeds the mean over
    seeds is better known, and the interval narrows."""
    rng = np.random.default_rng(7)
    problems = rng.uniform(0.2, 0.8, size=40)
    effects = np.tile([0.15, -0.15, 0.1, -0.1], 4)  # balanced, so the mean stays put
    widths = []
    for n_seeds in (2, 4, 8, 16):
        x = np.clip(problems[None, :] + effects[:n_seeds, None], 0, 1)
        lo, hi = two_level_interval(x)
        assert lo <= x.mean() <= hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.6 * widths[0], widths


def test_a_partial_seed_is_averaged_over_its_own_problems():
    x = np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    mask = np.array([[True, True, True, True], [True, True, False, False]])
    from kvexp.stats.bootstrap import matrix_statistic

    assert matrix_statistic(x, mask) == pytest.approx((0.5 + 1.0) / 2)  # seed means 0.5 and 1.0
    lo, hi = two_level_interval(x, mask)
    assert 0 <= lo <= 0.75 <= hi <= 1


# ---------------------------------------------------------------- a cell over seeds and samples


def _sample(
    pid: str, j: int, correct: bool, prediction=None, tokens: int = 10, stop: str = "eos", error: str | None = None
) -> Sample:
    pred = prediction if prediction is not None else ("right" if correct else f"wrong{j}")
    return Sample(pid, j, correct and error is None, None if error else pred, error, tokens, stop, 1024.0, 1.0)


def test_cell_over_seeds_and_samples_hand_values():
    # seed 0: a 2/2, b 1/2, c 0/2 -> pass@1 (1 + 0.5 + 0) / 3 = 0.5
    # seed 1: a 2/2, b 0/2, c 0/2 -> pass@1 1/3
    runs = {
        0: [
            _sample("a", 0, True),
            _sample("a", 1, True),
            _sample("b", 0, False),
            _sample("b", 1, True),
            _sample("c", 0, False),
            _sample("c", 1, False),
        ],
        1: [
            _sample("a", 0, True),
            _sample("a", 1, True),
            _sample("b", 0, False),
            _sample("b", 1, False),
            _sample("c", 0, False),
            _sample("c", 1, False, stop="max_new_tokens"),
        ],
    }
    m = cell_stats(runs, num_samples=2)
    assert m.seeds == (0, 1) and m.n_problems == 3 and m.samples_per_problem == 2 and m.n_rows == 12
    assert m.pass1.per_seed == (pytest.approx(0.5), pytest.approx(1 / 3))
    assert m.accuracy == pytest.approx(5 / 12)
    assert m.pass1.seed_sd == pytest.approx(np.std([0.5, 1 / 3], ddof=1))
    assert m.ci_method == "two-level bootstrap" and m.ci_lo <= m.accuracy <= m.ci_hi
    assert m.pass_k == (1, 2)
    # pass@2: seed 0 (1 + 1 + 0) / 3, seed 1 (1 + 0 + 0) / 3
    assert m.pass_at[2].value == pytest.approx((2 / 3 + 1 / 3) / 2)
    # maj@2: b of seed 0 ties "wrong0" against "right" -> 1/2; seed 0 (1 + 0.5 + 0) / 3, seed 1 1/3
    assert m.maj_at[2].per_seed == (pytest.approx(0.5), pytest.approx(1 / 3))
    assert m.truncation_rate == pytest.approx(1 / 12)
    # one seed: the job's own view, a bootstrap over problems
    one = cell_stats({0: runs[0]}, num_samples=2)
    assert one.accuracy == pytest.approx(0.5) and one.ci_method == "bootstrap"


def test_one_sample_per_problem_keeps_wilson():
    rows = [_sample(f"p{i}", 0, i < 7) for i in range(10)]
    m = cell_stats({0: rows})
    assert m.accuracy == pytest.approx(0.7) and m.ci_method == "wilson"
    assert (m.ci_lo, m.ci_hi) == (pytest.approx(0.396777, abs=2e-6), pytest.approx(0.892209, abs=2e-6))


def test_errors_and_unextracted_answers():
    rows = [_sample("a", 0, True), _sample("b", 0, False, prediction=None), _sample("c", 0, False, error="boom")]
    rows[1] = Sample("b", 0, False, None, None, 10, "max_new_tokens", 1.0, 1.0)
    m = cell_stats({0: rows})
    assert m.accuracy == pytest.approx(1 / 3) and m.n_errors == 1
    assert m.unextracted_rate == pytest.approx(1 / 2)  # b of a and b (the error row has no output)
    assert m.truncation_rate == pytest.approx(1 / 2)


def test_paired_comparison_pools_seeds_against_their_own_full_cache():
    full = {
        0: [_sample("a", 0, True, tokens=10), _sample("b", 0, True, tokens=20)],
        1: [_sample("a", 0, True, tokens=10), _sample("b", 0, False, tokens=40)],
    }
    policy = {
        0: [_sample("a", 0, False, tokens=20), _sample("b", 0, True, tokens=20)],  # delta -1/2
        1: [_sample("a", 0, True, tokens=30), _sample("b", 0, True, tokens=40)],  # delta +1/2
        2: [_sample("a", 0, False), _sample("b", 0, False)],  # no full cache of seed 2
    }
    p = paired_stats(policy, full)
    assert p.seeds == (0, 1) and p.unpaired_seeds == (2,) and p.n_pairs == 4
    assert p.delta.per_seed == (pytest.approx(-0.5), pytest.approx(0.5)) and p.delta.value == pytest.approx(0)
    assert (p.gains, p.losses) == (1, 1) and p.p_value == 1.0
    # length ratios: seed 0 (2 + 1) / 2, seed 1 (3 + 1) / 2 -> mean 1.75; median of 2, 1, 3, 1 = 1.5
    assert p.length_ratio.per_seed == (pytest.approx(1.5), pytest.approx(2.0))
    assert p.length_ratio.value == pytest.approx(1.75)
    assert p.length_ratio_median.value == pytest.approx(1.5)
    assert p.length_ratio.method == "two-level bootstrap"
    assert p.length_ratio.lo <= 1.75 <= p.length_ratio.hi


def test_sample_from_json_counts_an_error_row_as_wrong():
    s = Sample.from_json({"id": 7, "sample_idx": 1, "correct": True, "error": "oom", "n_output_tokens": float("nan")})
    assert s.id == "7" and not s.correct and s.is_error and s.n_output_tokens is None
