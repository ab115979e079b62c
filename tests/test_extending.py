"""README, "Extending kvexp", walked as a newcomer would: a toy policy (module, YAML, registry line) and a
toy generated task (generator, grader entry, YAML, registry entry) added to a copy of the package, then the
shared tests run over them there. The policy passes every shared test but the one that asks for its
reference rule, which names it and where the rule goes; the task runs a job and is reported under its
own category."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

POLICY = '''\
from kvexp.policies.base import Policy


class FirstKey(Policy):
    """Keep tokens whose key has a large first component (a newcomer's example)."""

    name = "first_key"

    def score(self, state, view, ctx):
        return view.keys[..., 0].float()
'''

TASK = '''\
"""The `toy_sum` task: add `n` digits of the prompt mod 10 (a newcomer's example)."""

import random

from kvexp.data import synthetic

TASK = "toy_sum"


def make_problem(seed: int, n: int) -> tuple[str, str, str]:
    rng = random.Random(f"kvexp-{TASK}:{seed}:{n}")
    digits = [rng.randrange(10) for _ in range(n)]
    total = str(sum(digits) % 10)
    return f"digits: {' '.join(map(str, digits))}\\nadd them mod 10. {synthetic.INSTRUCTION}", total, total


def load_toy_sum_problems(limit=100, seed=0, n=5, split="test"):
    synthetic.check_int(TASK, "n", n, 1, 50)
    return synthetic.make_problems(TASK, lambda ps: make_problem(ps, n), limit, seed, split, {"n": n})
'''


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: the README's extension point {old!r} moved"
    path.write_text(text.replace(old, new, 1))


def _newcomers_copy(root: Path) -> None:
    """The repository's package, configs and tests, with the toy policy and the toy task added."""
    for part in ("kvexp", "conf", "tests"):
        shutil.copytree(REPO / part, root / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)
    # the policy: one module, its registry line, one YAML
    (root / "kvexp/policies/first_key.py").write_text(POLICY)
    _edit(
        root / "kvexp/policies/__init__.py",
        "REGISTRY: dict[str, str] = {\n",
        'REGISTRY: dict[str, str] = {\n    "first_key": "kvexp.policies.first_key:FirstKey",\n',
    )
    (root / "conf/policy/first_key.yaml").write_text(
        "name: first_key\nwindow: null\nn_sink: 0\nprotect_prompt: false\ngroup_agg: mean\n"
    )
    # the task: one generator, its registry entry, a grader entry (an exact match of the last box), one YAML
    (root / "kvexp/data/toy_sum.py").write_text(TASK)
    registry = root / "kvexp/data/registry.py"
    _edit(
        registry, "from kvexp.data import adapters,", "from kvexp.data import toy_sum\nfrom kvexp.data import adapters,"
    )
    _edit(
        registry,
        "_GENERATED = (\n",
        '_GENERATED = (\n    GeneratedSpec("toy_sum", "Toy", toy_sum.load_toy_sum_problems, ("n", "split")),\n',
    )
    _edit(
        root / "kvexp/grading/grader.py",
        "_GRADERS: dict[str, tuple[str, Grader]] = {\n",
        '_GRADERS: dict[str, tuple[str, Grader]] = {\n    "toy_sum": ("exact", grade_chain),\n',
    )
    (root / "conf/dataset/toy_sum.yaml").write_text(
        textwrap.dedent(
            """\
            name: toy_sum
            source: generated
            seed: 0
            limit: 100
            shard:
              index: 0
              count: 1
            n: 5
            split: test
            """
        )
    )


def _run(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_newcomer_adds_a_policy_and_a_generated_task(tmp_path):
    root = tmp_path / "repo"
    _newcomers_copy(root)
    shared = _run(
        root,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_configs.py",
        "tests/test_engine.py",
        "tests/test_memory.py",
        "tests/test_datasets.py",
        "-k",
        "first_key or toy_sum or registered or every_option or documented or smoke or unknown or registry",
    )
    out = shared.stdout + shared.stderr
    ran = re.search(r"(\d+) failed, (\d+) passed", out)
    assert ran, out[-3000:]
    failed = re.findall(r"^FAILED (\S+)", out, flags=re.M)
    assert failed == ["tests/test_engine.py::test_every_policy_has_a_reference_rule[first_key]"], out[-3000:]
    assert "policy 'first_key' has no reference rule" in out and "tests/reference.py" in out
    assert int(ran.group(2)) >= 30, out[-3000:]  # engine invariants, batches, admissions, memory, configs ...

    # the toy task runs as a job with the toy policy and is reported under its own category
    job = tmp_path / "job"
    overrides = ["model=tiny_random", "dataset=toy_sum", "dataset.limit=2", "generation.max_new_tokens=8"]
    ran = _run(
        root,
        "-m",
        "kvexp.main",
        *overrides,
        "policy=first_key",
        "budget.tokens=16",
        "logger=none",
        f"hydra.run.dir={job}",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = _run(root, "-m", "kvexp.report", str(job), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    with open(tmp_path / "report" / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert [(c["dataset"], c["category"], c["policy"]) for c in cells] == [("toy_sum", "Toy", "first_key")]
