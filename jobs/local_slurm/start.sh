#!/usr/bin/env bash
# jobs/local_slurm/start.sh - bring up a real single-node SLURM cluster on this machine, to try kvexp's
# SLURM path (hydra/launcher=slurm) without a cluster, and for the SLURM tests (tests/test_slurm.py).
# Needs root and Debian/Ubuntu packages (apt-get installs what is missing); no systemd needed.
#
#   sudo bash jobs/local_slurm/start.sh        # ~1 min the first time (apt), seconds after that
#   python -m kvexp.main -m hydra/launcher=slurm model=tiny_random dataset.limit=4 logger=none
#   sudo bash jobs/local_slurm/stop.sh
#
# Starts: munged -> [mariadbd -> slurmdbd] -> slurmctld -> slurmd, then waits until the node is idle.
# Accounting (slurmdbd + mariadb) is on by default: submitit asks `sacct` for the state of jobs that
# end without a result (scancel, time limit, out of memory), so without it a cancelled job is not
# noticed. Idempotent: daemons that are already running (by their pid files) are left alone; if
# everything is up it returns at once; a changed config restarts our daemons.
# Tested on Debian 12 (slurm 22.05.8, munge 0.5.15, mariadb 10.11) as root on a 2-core VM whose PID 1
# is not systemd.
#
# Adapted from the project's shared start_local_slurm.sh, with two changes for kvexp:
#   - fake GPUs by default (LOCAL_SLURM_FAKE_GPUS, default: the number of CPUs, at most 8), so the
#     default one-GPU request of conf/hydra/launcher/slurm.yaml is accepted as on a real GPU cluster
#     (the "GPUs" are /dev/null-like device nodes: jobs see CUDA_VISIBLE_DEVICES but no CUDA device,
#     and kvexp runs them on the CPU);
#   - a short requeue delay (LOCAL_SLURM_REQUEUE_DELAY, default 10 s): SLURM holds a requeued job for
#     AuthInfo cred_expire seconds (120 by default) before it may start again; 10 s keeps the
#     preemption test quick. Real clusters keep their own setting.
#
# Environment knobs:
#   LOCAL_SLURM_DIR           state/log dir                     (default /tmp/local-slurm)
#   LOCAL_SLURM_ACCOUNTING    1 = slurmdbd+mariadb so `sacct` works; 0 = no accounting (default 1)
#   LOCAL_SLURM_INSTALL       1 = apt-get install missing packages       (default 1)
#   LOCAL_SLURM_TIMEOUT       seconds to wait for each daemon / for idle  (default 60)
#   LOCAL_SLURM_PARTITION     partition name                              (default debug)
#   LOCAL_SLURM_KEEP_STATE    1 = keep job/accounting state of an earlier run on a cold start (default 0)
#   LOCAL_SLURM_FAKE_GPUS     N = advertise N device-less gres/gpu on the node; 0 = none
#                             (default: number of CPUs, at most 8)
#   LOCAL_SLURM_REQUEUE_DELAY seconds a requeued job waits before it may start (default 10)
#
# Writes /etc/slurm/slurm.conf (and slurmdbd.conf, gres.conf), so sbatch/srun/squeue/sacct need no
# SLURM_CONF. Stop with jobs/local_slurm/stop.sh (kills only the PIDs recorded here).
set -euo pipefail
export PATH="/usr/sbin:/sbin:$PATH"   # daemons live in sbin; CI environments may lack it

D=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
ACCT=${LOCAL_SLURM_ACCOUNTING:-1}
INSTALL=${LOCAL_SLURM_INSTALL:-1}
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}
PART=${LOCAL_SLURM_PARTITION:-debug}
KEEP=${LOCAL_SLURM_KEEP_STATE:-0}
GPUS=${LOCAL_SLURM_FAKE_GPUS:-$(n=$(nproc); echo $((n < 8 ? n : 8)))}
REQUEUE_DELAY=${LOCAL_SLURM_REQUEUE_DELAY:-10}
CLUSTER=local
DB_PORT=13306
log() { echo "[local-slurm] $*" >&2; }
die() { log "ERROR: $*"; for f in "$D"/log/*.log "$D"/log/*.err; do [ -s "$f" ] && { log "--- tail $f"; tail -n 15 "$f" >&2; }; done; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# alive NAME PIDFILE -> true if the pid in PIDFILE is a live process called NAME
alive() { local p; p=$(cat "$2" 2>/dev/null) || return 1; [ -n "$p" ] && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ]; }
# wait_for DESC CMD... -> poll CMD every 0.2 s until it succeeds or TIMEOUT
wait_for() { local desc=$1; shift; local end=$((SECONDS + TIMEOUT)); until "$@" >/dev/null 2>&1; do
  [ $SECONDS -lt $end ] || die "timed out after ${TIMEOUT}s waiting for $desc"; sleep 0.2; done; }

# node_up STATE -> true if the node accepts work (idle, or busy with jobs of an earlier call)
node_up() { case "$1" in idle|mixed|allocated|completing) return 0;; *) return 1;; esac; }

T0=$(date +%s.%N)
# ---------------------------------------------------------------- packages
pkgs=(munge slurmctld slurmd slurm-client)
[ "$ACCT" = 1 ] && pkgs+=(slurmdbd mariadb-server)
missing=(); for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || die "missing packages: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

NODE=$(hostname -s)

# ---------------------------------------------------------------- config
read -r CPUS BOARDS SOCKETS CORES THREADS < <(slurmd -C | head -1 | sed -E \
  's/.*CPUs=([0-9]+) Boards=([0-9]+) SocketsPerBoard=([0-9]+) CoresPerSocket=([0-9]+) ThreadsPerCore=([0-9]+).*/\1 \2 \3 \4 \5/')
[ -n "${THREADS:-}" ] || die "could not parse 'slurmd -C'"
MEM=$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)   # 90% of RAM, in MB
if [ "$ACCT" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none"
fi
GRES_NODE=""; GRES_TYPES=""
if [ "$GPUS" -gt 0 ]; then GRES_NODE=" Gres=gpu:$GPUS"; GRES_TYPES="GresTypes=gpu"; fi
NEWCONF=$(cat <<EOF
# generated by kvexp jobs/local_slurm/start.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$REQUEUE_DELAY
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
$ACCT_CONF
JobCompType=jobcomp/none
SwitchType=switch/none
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/spool
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM$GRES_NODE State=UNKNOWN
PartitionName=$PART Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
# ---------------------------------------------------------------- fast path
NEWGRES=""
if [ "$GPUS" -gt 0 ]; then
  files="$D/fakegpu0"; [ "$GPUS" -gt 1 ] && files="$D/fakegpu[0-$((GPUS - 1))]"
  NEWGRES="NodeName=$NODE Name=gpu File=$files"   # slurmd counts gpus from File=; /dev/null-like nodes
fi
same_conf() { [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" = "$NEWCONF" ] &&
              [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" = "$NEWGRES" ]; }
if same_conf &&
   alive slurmctld "$D/slurmctld.pid" && alive slurmd "$D/slurmd.pid" &&
   node_up "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)"; then
  log "already running, node $NODE $(sinfo -h -n "$NODE" -o %T)"; exit 0
fi
mkdir -p "$D"/{log,ctld,spool}
cold=1
for n in slurmctld slurmd slurmdbd mariadbd; do alive "$n" "$D/$n.pid" && cold=0; done
if [ $cold = 1 ] && [ "$KEEP" != 1 ]; then   # fresh, deterministic state: job ids start at 1 again,
  rm -rf "$D"/ctld/* "$D"/spool/* "$D"/mysql "$D"/log/*   # so drop the old accounting db too
fi
mkdir -p /etc/slurm
if ! same_conf; then
  if [ $cold = 0 ]; then   # config changed under running daemons: restart ours
    log "slurm.conf/gres.conf changed; restarting"; bash "$(dirname "$0")"/stop.sh; exec bash "$0" "$@"
  fi
  printf '%s\n' "$NEWCONF" > /etc/slurm/slurm.conf
  if [ "$GPUS" -gt 0 ]; then printf '%s\n' "$NEWGRES" > /etc/slurm/gres.conf; else rm -f /etc/slurm/gres.conf; fi
fi
for ((i = 0; i < GPUS; i++)); do
  [ -e "$D/fakegpu$i" ] || mknod "$D/fakegpu$i" c 1 3 || die "mknod $D/fakegpu$i failed"
done

# ---------------------------------------------------------------- munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged || die "munged failed to start"
  cp /run/munge/munged.pid "$D/munged.pid"     # remember that we started it (stop script kills it)
  wait_for "munged" sh -c 'munge -n | unmunge'
fi

# ---------------------------------------------------------------- mariadb + slurmdbd
if [ "$ACCT" = 1 ]; then
  if ! alive mariadbd "$D/mariadbd.pid"; then
    if [ ! -d "$D/mysql/mysql" ]; then
      mariadb-install-db --user=root --datadir="$D/mysql" --auth-root-authentication-method=socket \
        --skip-test-db >"$D/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
    fi
    setsid nohup mariadbd --no-defaults --user=root --datadir="$D/mysql" --socket="$D/mysqld.sock" \
      --port=$DB_PORT --bind-address=127.0.0.1 --pid-file="$D/mariadbd.pid" \
      --log-error="$D/log/mariadb.err" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
      --skip-log-bin </dev/null >/dev/null 2>&1 &
    wait_for "mariadbd" mariadb-admin --no-defaults --socket="$D/mysqld.sock" -uroot ping
    mariadb --no-defaults --socket="$D/mysqld.sock" -uroot -e "
      CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  fi
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$D/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
  if ! alive slurmdbd "$D/slurmdbd.pid"; then
    slurmdbd || die "slurmdbd failed to start"
    wait_for "slurmdbd" sacctmgr -n list cluster
  fi
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# ---------------------------------------------------------------- slurmctld + slurmd
if ! alive slurmctld "$D/slurmctld.pid"; then
  slurmctld || die "slurmctld failed to start"
  wait_for "slurmctld" scontrol ping
fi
if ! alive slurmd "$D/slurmd.pid"; then
  slurmd || die "slurmd failed to start"
fi
end=$((SECONDS + TIMEOUT))
while :; do
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  node_up "$st" && break
  case "$st" in drain*|down*|fail*|inval*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true;; esac
  [ $SECONDS -lt $end ] || die "node $NODE not idle after ${TIMEOUT}s (state: '${st}')"
  sleep 0.2
done
log "up in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: node $NODE $st, partition $PART, accounting=$ACCT"
