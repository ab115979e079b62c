#!/usr/bin/env bash
# jobs/sync_wandb.sh - upload the offline W&B runs of a sweep.
#
# Compute nodes usually have no network, so jobs write their W&B runs offline under each job folder
# (<job folder>/wandb/offline-run-*). Upload them from a machine with network: the login node (it sees
# the same filesystem), or any machine after copying the sweep folder there
# (rsync -a --include='*/' --include='wandb/**' --exclude='*' cluster:SWEEP_DIR/ ./sweep/).
#
#   export WANDB_API_KEY=...        # or `wandb login` once
#   bash jobs/sync_wandb.sh SWEEP_DIR [--all] [wandb sync options, e.g. --project kvexp-ref --entity me]
#
# A job that was preempted and requeued wrote one run per start; the last one holds the finished
# cell (its complete samples table and metrics), so by default only the newest run of each job folder
# is uploaded. --all uploads every run. Already uploaded runs are skipped by wandb itself.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,15p' "$0"; exit 2; }
SWEEP=$1; shift
ALL=0; opts=()
for a in "$@"; do if [ "$a" = --all ]; then ALL=1; else opts+=("$a"); fi; done
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${KVEXP_LAUNCH_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
runs=()
while IFS= read -r -d '' wdir; do
  mapfile -t found < <(find "$wdir" -maxdepth 1 -type d -name 'offline-run-*' | sort)
  [ ${#found[@]} -gt 0 ] || continue
  if [ $ALL = 1 ]; then runs+=("${found[@]}"); else runs+=("${found[-1]}"); fi
done < <(find "$SWEEP" -type d -name wandb -print0)
[ ${#runs[@]} -gt 0 ] || { echo "no offline W&B runs below $SWEEP" >&2; exit 1; }
echo "[kvexp] uploading ${#runs[@]} run(s) from $SWEEP"
WANDB_MODE=online "$PY" -m wandb sync "${opts[@]}" "${runs[@]}"
