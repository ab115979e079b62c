#!/usr/bin/env bash
# jobs/local_slurm/stop.sh - stop what jobs/local_slurm/start.sh started, by the PIDs it recorded
# (never by process name). A munged that was already running before start.sh is kept.
# Jobs still running are cancelled first. LOCAL_SLURM_DIR must match the one start.sh used.
set -uo pipefail
D=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
stop() {  # stop NAME PIDFILE
  local p; p=$(cat "$2" 2>/dev/null) || return 0
  if [ -n "$p" ] && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ]; then
    kill "$p" 2>/dev/null
    for _ in $(seq 50); do [ -e /proc/"$p" ] || break; sleep 0.2; done
    [ -e /proc/"$p" ] && kill -9 "$p" 2>/dev/null
    echo "[local-slurm] stopped $1 ($p)" >&2
  fi
  rm -f "$2"
}
# jobs still running are killed with slurmd's steps; cancel them first so they end cleanly
command -v scancel >/dev/null && [ -e "$D/slurmctld.pid" ] && timeout 5 scancel --user=root 2>/dev/null
stop slurmd    "$D/slurmd.pid"
stop slurmctld "$D/slurmctld.pid"
stop slurmdbd  "$D/slurmdbd.pid"
stop mariadbd  "$D/mariadbd.pid"
stop munged    "$D/munged.pid"
exit 0
