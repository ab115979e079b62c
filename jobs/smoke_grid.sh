#!/usr/bin/env bash
# jobs/smoke_grid.sh - a small grid that checks the SLURM path of a site in minutes, before the
# reference grid: every policy and the full cache on gsm8k and math500, 2 problems each, 32 tokens,
# with SmolLM2-135M (bundled with kvexp, no downloads): 16 jobs (conf/experiment/smoke.yaml).
#
#   bash jobs/smoke_grid.sh
#   SMOKE_MODEL=r1_distill_llama_8b bash jobs/smoke_grid.sh   # a study model instead (its weights in the
#       HF cache): full, h2o and snapkv at budgets 128 and 512 on gsm8k and math500, 4 problems, 256 tokens
#   bash jobs/smoke_grid.sh hydra.launcher.timeout_min=30      # extra overrides
set -uo pipefail
source "$(dirname "$0")/lib.sh"
SWEEP_DIR=${SWEEP_DIR:-$REPO/outputs/smoke/$(date +%Y-%m-%d_%H-%M-%S)}
if [ -n "${SMOKE_MODEL:-}" ]; then
  launch_all "$SWEEP_DIR" "$SMOKE_MODEL model=$SMOKE_MODEL dataset=gsm8k,math500 policy=full,h2o,snapkv budget=128,512 dataset.limit=4 generation.max_new_tokens=256" -- "$@"
else
  launch_all "$SWEEP_DIR" "smoke experiment=smoke hydra.launcher.timeout_min=60" -- "$@"
fi
