#!/usr/bin/env bash
# jobs/reference_grid.sh - the reference study ("Hold Onto That Thought", arXiv 2512.12008) on SLURM:
# the four study models x 8 datasets x the evicting policies x budgets 128/256/384/512 (one launch per
# model, conf/experiment/paper_<model>.yaml) plus each model's full-cache baseline (paper_full),
# 100 problems per cell, 2048 new tokens, one GPU per cell: 5 launches, 800 jobs.
#
#   bash jobs/reference_grid.sh                        # after setting partition and account in jobs/site.env
#   SWEEP_DIR=/scratch/$USER/kvexp-reference bash jobs/reference_grid.sh       # choose the output folder
#   SWEEP_DIR=<the same folder> bash jobs/reference_grid.sh    # resume / retry after failures or a crash
#   EXPERIMENTS="paper_full paper_r1_distill_qwen_7b" bash jobs/reference_grid.sh   # part of the study
#   bash jobs/reference_grid.sh dataset.shard.count=2   # extra overrides go to every launch
#
# Runs on the login node for as long as the jobs run (use tmux/screen/nohup): each launch waits for its
# jobs, and exits non-zero naming every failed cell. SWEEP_DIR must be on a filesystem the compute
# nodes share. Results: SWEEP_DIR/<experiment>/<model>/<dataset>/<cell>/, report in SWEEP_DIR/report.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
SWEEP_DIR=${SWEEP_DIR:-$REPO/outputs/reference/$(date +%Y-%m-%d_%H-%M-%S)}
EXPERIMENTS=${EXPERIMENTS:-paper_full paper_llama31_8b_instruct paper_nemotron_nano_8b paper_r1_distill_llama_8b paper_r1_distill_qwen_7b}
launches=()
for e in $EXPERIMENTS; do launches+=("$e experiment=$e"); done
launch_all "$SWEEP_DIR" "${launches[@]}" -- "$@"
