"""`make gpu-check`: one prepared acceptance run for a short, offline GPU slot, with a verdict per check.

    python -m kvexp.gpucheck --out gpucheck.json      # on a GPU: everything (< 8 min on an H100)
    python -m kvexp.gpucheck --device cpu             # correctness at CPU scale; GPU-only checks NOT RUN

Nothing is downloaded: the organism ships with kvexp and the 8B model is the bench's Llama-3.1-8B-shaped
preset with random weights. Checks (kvexp.gpucheck.correctness, kvexp.gpucheck.speed):
- organism in fp32, full cache, H2O, SnapKV-D and StreamingLLM at B=128: continuous batching equals
  the same requests run one at a time; accuracy within one problem of the committed CPU reference
  (reference.json: the same problems, made on a CPU); the full cache equals transformers' `generate`;
- GPU only: batch-1 decode speed of the 8B model against the copy-bandwidth bound; `batch_size=auto`
  rows and tokens/s of an evicting policy at B=640 against the full cache at 8k tokens; the memory
  plan's bytes against the peak the run allocated.
"""

from kvexp.openmp import prefer_passive_waiting

prefer_passive_waiting()
