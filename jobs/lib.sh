# jobs/lib.sh - shared by the recipes in jobs/ (sourced, not run).
# Sets REPO, PY (the Python that launches, and by default runs, the jobs) and the site settings, and
# provides launch_all: one `python -m kvexp.main -m hydra/launcher=slurm ...` per experiment, in the
# background, each with its own log, then waits for all and reports.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source=site.env
source "$HERE/site.env"
PY=${KVEXP_LAUNCH_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || { echo "no Python at $PY: run 'make install' in $REPO (or set KVEXP_LAUNCH_PYTHON)" >&2; exit 2; }
command -v sbatch >/dev/null || { echo "sbatch is not on PATH: run this on a SLURM login node" >&2; exit 2; }
cd "$REPO" || exit 2

# launch_all SWEEP_DIR "NAME OVERRIDES..." ... -- EXTRA_OVERRIDES...
#   Each quoted "NAME OVERRIDES..." is one launch (e.g. "paper_full experiment=paper_full") into
#   SWEEP_DIR/NAME; EXTRA_OVERRIDES go to every launch, after its own (so they win).
launch_all() {
  local sweep=$1; shift
  local launches=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do launches+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  extra=("$@")
  mkdir -p "$sweep"
  local pids=() names=() name args
  for args in "${launches[@]}"; do
    read -r -a argv <<<"$args"
    name=${argv[0]}; argv=("${argv[@]:1}")
    "$PY" -m kvexp.main -m hydra/launcher=slurm "${argv[@]}" "hydra.sweep.dir=$sweep/$name" "${extra[@]}" \
      >"$sweep/launcher-$name.log" 2>&1 &
    pids+=($!); names+=("$name")
    echo "[kvexp] launched ${argv[*]} -> $sweep/$name   (log: $sweep/launcher-$name.log)"
  done
  echo "[kvexp] waiting for ${#pids[@]} launch(es); jobs: squeue --me --name=kvexp. Keep this shell alive (tmux/screen/nohup)."
  local rc=0 i
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      echo "[kvexp] ${names[$i]}: every cell finished"
    else
      rc=1
      local log="$sweep/launcher-${names[$i]}.log"
      echo "[kvexp] ${names[$i]}: FAILED (from $log):"
      if grep -q "cells failed" "$log"; then sed -n '/cells failed/,$p' "$log"; else tail -n 15 "$log"; fi | sed 's/^/    /'
    fi
  done
  echo "[kvexp] report: $PY -m kvexp.report $sweep --out $sweep/report"
  "$PY" -m kvexp.report "$sweep" --out "$sweep/report" || rc=1
  if [ $rc != 0 ]; then
    echo "[kvexp] some cells failed; run the same command again with SWEEP_DIR=$sweep to retry them" \
         "(finished cells are kept, interrupted ones resume)"
  fi
  return $rc
}
