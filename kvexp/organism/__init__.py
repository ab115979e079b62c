"""The model organism: the synthetic `chain` reasoning task and a tiny Llama trained on it by kvexp.

    from kvexp.organism import load_chain_problems, grade_chain, CHECKPOINT_DIR
    problems = load_chain_problems(limit=100, seed=0, steps=20, facts=8, distractors=4)

`CHECKPOINT_DIR` holds the committed weights, config and tokenizer (`from_pretrained` loads it) and
TRAINING.json, which records how they were made. Retrain with `python -m kvexp.organism.train`.
Importing this package does not import torch.
"""
from pathlib import Path

from kvexp.organism.task import ChainProblem, extract_answer, grade_chain, load_chain_problems, make_problem

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"


def checkpoint_dir() -> Path:
    """The committed checkpoint folder (weights, config, tokenizer, TRAINING.json)."""
    return CHECKPOINT_DIR


__all__ = ["CHECKPOINT_DIR", "ChainProblem", "checkpoint_dir", "extract_answer", "grade_chain",
           "load_chain_problems", "make_problem"]
