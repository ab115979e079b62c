"""The model organism: a tiny Llama trained by kvexp on its synthetic tasks (`chain`, `recall`,
`read_once`, `local_state`), and the programs that
train it (`python -m kvexp.organism.train`) and evaluate it against every policy
(`python -m kvexp.organism.evaluate`).

The tasks live with the other datasets and graders: `kvexp.data.chain` (and `recall`, `read_once`,
`local_state`) generate the problems (`load_problems("chain", ...)`, `dataset=chain`) and
`kvexp.grading.chain` grades them
(`kvexp.grade("chain", response, gold)`). The weights load like any local model's (`model=organism`,
conf/model/organism.yaml, model.path=pkg://kvexp/organism/checkpoint).

`CHECKPOINT_DIR` holds the committed weights, config and tokenizer (`from_pretrained` loads it) and
TRAINING.json, which records how they were made. Importing this package does not import torch.
"""

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"


__all__ = ["CHECKPOINT_DIR"]
