#!/usr/bin/env bash
# Start a real one-node SLURM cluster (with slurmdbd accounting, so `sacct` works) on this
# machine, for CI and for developers. Idempotent: a second call with everything up only
# re-checks health (a couple of seconds). Stop it with .ci/slurm-down.sh.
#
#   bash .ci/slurm-up.sh            # scratch dir /tmp/specscale-slurm
#   SLURM_SCRATCH=/some/dir bash .ci/slurm-up.sh
#
# What it does (Debian 12, root, no systemd, no cgroups):
#   1. apt-get installs slurm-wlm munge slurmdbd mariadb-server if any binary is missing;
#   2. writes slurm.conf + slurmdbd.conf into $SLURM_SCRATCH/etc and copies them to
#      /etc/slurm/ (Debian's default path, so plain `sbatch`/`sinfo`/`sacct` work without
#      SLURM_CONF);
#   3. starts munged (as user munge), mariadbd (as root, 127.0.0.1, data dir in scratch),
#      slurmdbd, slurmctld and slurmd in the background, PIDs in $SLURM_SCRATCH/pids/;
#   4. creates cluster "specscale", account "default" and the current user with sacctmgr;
#   5. waits until the node is idle and `sbatch --wait --wrap true` completes.
#
# Environment knobs: SLURM_SCRATCH, SLURM_UP_TIMEOUT (seconds per wait, default 90),
# SPECSCALE_SLURM_DB_PORT (MariaDB TCP port on 127.0.0.1, default 3307),
# SPECSCALE_SLURM_MEM_HEADROOM_MB (default 2048).
set -euo pipefail

S=${SLURM_SCRATCH:-/tmp/specscale-slurm}
TIMEOUT=${SLURM_UP_TIMEOUT:-90}
DB_PORT=${SPECSCALE_SLURM_DB_PORT:-3307}
HEADROOM_MB=${SPECSCALE_SLURM_MEM_HEADROOM_MB:-2048}
# count-only "gpu" GRES so that rules asking for gpu=1 (sbatch --gpus=1) can be scheduled
# on the GPU-less test node; the job sees no device (code must fall back to CPU). 1 or 0.
FAKE_GPUS=${SPECSCALE_SLURM_FAKE_GPUS:-1}
[ "$FAKE_GPUS" = 0 ] || FAKE_GPUS=1   # File=/dev/null backs exactly one
CLUSTER=specscale
ACCOUNT=default
PARTITION=debug
DB_USER=slurm
DB_PASS=specscale-slurm-ci   # local-only MariaDB bound to 127.0.0.1; not a secret
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

T0=$(date +%s.%N)
declare -a TIMINGS=()
_tlast=$T0
lap() { # lap LABEL: record seconds since the previous lap
  local now; now=$(date +%s.%N)
  TIMINGS+=("$(awk -v a="$now" -v b="$_tlast" -v l="$1" 'BEGIN{printf "%-30s %6.2f s", l, a-b}')")
  _tlast=$now
}
log() { echo "[slurm-up] $*"; }
die() {
  echo "[slurm-up] ERROR: $*" >&2
  for f in "$S"/log/*.log; do
    [ -f "$f" ] || continue
    echo "---- tail $f" >&2; tail -n 20 "$f" >&2 || true
  done
  exit 1
}
# wait_for DESCRIPTION CMD...: poll CMD every 0.25 s until it succeeds or TIMEOUT passes;
# CMD exiting with 42 means "will never succeed": give up at once.
wait_for() {
  local what=$1; shift
  local deadline=$(( $(date +%s) + TIMEOUT )) rc
  while :; do
    rc=0; "$@" >/dev/null 2>&1 || rc=$?
    [ "$rc" = 0 ] && return 0
    [ "$rc" = 42 ] && die "$what failed"
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.25
  done
}

# ---------------------------------------------------------------- 1. packages
need_install=0
for b in munged slurmctld slurmd slurmdbd sbatch sacct sacctmgr mariadbd mariadb-install-db; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || need_install=1
done
if [ "$need_install" = 1 ]; then
  log "installing Debian packages (slurm-wlm munge slurmdbd mariadb-server)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq \
    slurm-wlm slurm-client munge slurmdbd mariadb-server mariadb-client >/dev/null
fi
export PATH=/usr/sbin:/sbin:$PATH
lap "packages"

# ---------------------------------------------------------------- 2. configuration
HOST=$(hostname -s 2>/dev/null || hostname)
NCPU=$(nproc)
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - HEADROOM_MB ))
[ "$MEM_MB" -ge 1024 ] || MEM_MB=1024
USER_NAME=$(id -un)

mkdir -p "$S"/{etc,state,spool,log,run,pids}
chmod 755 "$S" "$S"/{state,spool,log,run}

NEW_CONF=$(mktemp)
NEW_DBD=$(mktemp)
NEW_GRES=$(mktemp)
trap 'rm -f "$NEW_CONF" "$NEW_DBD" "$NEW_GRES"' EXIT
cat >"$NEW_CONF" <<EOF
# Written by specscale .ci/slurm-up.sh (one-node local test cluster; scratch: $S).
# Copy kept in $S/etc/slurm.conf. Safe to delete; slurm-up.sh rewrites it.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups on CI machines
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# schedule a submitted batch job at once instead of up to 3 s later (CI latency)
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
# keep finished jobs visible to squeue/scontrol for 5 min (the Snakemake plugin needs
# MinJobAge >= 3x its first polling interval to trust squeue)
MinJobAge=300
# without a default, a job with no --mem takes the whole node and jobs serialise
DefMemPerCPU=500
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
$( [ "$FAKE_GPUS" -gt 0 ] && echo "GresTypes=gpu" )
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB $( [ "$FAKE_GPUS" -gt 0 ] && echo "Gres=gpu:$FAKE_GPUS " )State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
{
  echo "# Written by specscale .ci/slurm-up.sh: count-only GPUs, no device files."
  [ "$FAKE_GPUS" -gt 0 ] && echo "NodeName=$HOST Name=gpu File=/dev/null Count=$FAKE_GPUS"
} >"$NEW_GRES"
cat >"$NEW_DBD" <<EOF
# Written by specscale .ci/slurm-up.sh (local test cluster accounting daemon).
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$S/log/slurmdbd.log
PidFile=$S/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

# pid helpers ---------------------------------------------------------------
# A PID file holds "PID COMM"; a daemon counts as ours and alive only while the PID is
# alive and still runs the same command (guards against PID reuse).
alive() { # alive NAME
  local f="$S/pids/$1.pid" pid comm
  [ -f "$f" ] || return 1
  read -r pid comm <"$f" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$comm" ]
}
any_alive() {
  local n
  for n in slurmd slurmctld slurmdbd mariadbd munged; do alive "$n" && return 0; done
  return 1
}

# If the configuration changed while our daemons run, restart them from scratch.
if any_alive && ! { cmp -s "$NEW_CONF" "$S/etc/slurm.conf" && cmp -s "$NEW_DBD" "$S/etc/slurmdbd.conf" \
     && cmp -s "$NEW_GRES" "$S/etc/gres.conf" && cmp -s "$NEW_CONF" /etc/slurm/slurm.conf; }; then
  log "configuration changed: restarting the cluster"
  SLURM_SCRATCH=$S bash "$HERE/slurm-down.sh"
fi

install -m 644 "$NEW_CONF" "$S/etc/slurm.conf"
install -m 600 "$NEW_DBD" "$S/etc/slurmdbd.conf"
install -m 644 "$NEW_GRES" "$S/etc/gres.conf"
mkdir -p /etc/slurm
if [ -f /etc/slurm/slurm.conf ] && ! grep -q 'specscale .ci/slurm-up.sh' /etc/slurm/slurm.conf \
   && [ ! -e /etc/slurm/slurm.conf.before-specscale ]; then
  cp -p /etc/slurm/slurm.conf /etc/slurm/slurm.conf.before-specscale
fi
install -m 644 "$NEW_CONF" /etc/slurm/slurm.conf
install -m 600 "$NEW_DBD" /etc/slurm/slurmdbd.conf
install -m 644 "$NEW_GRES" /etc/slurm/gres.conf
export SLURM_CONF=/etc/slurm/slurm.conf
lap "config"

# start helper: start NAME LOGFILE CMD... runs CMD detached (own session, stdin closed),
# records its PID. CMD must exec the daemon itself in the foreground (no forking).
start() {
  local name=$1 logf=$2; shift 2
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  local pid=$!
  # setsid execs directly (we are not a process-group leader), so $! is the daemon
  local comm="" i
  for i in $(seq 1 40); do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [ -n "$comm" ] && [ "$comm" != setsid ] && [ "$comm" != setpriv ] && [ "$comm" != bash ] && break
    sleep 0.05
  done
  [ -n "$comm" ] || die "$name exited right after start (see $logf)"
  echo "$pid $comm" >"$S/pids/$name.pid"
  log "started $name (pid $pid)"
}

# ---------------------------------------------------------------- 3a. munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
  start munged "$S/log/munged.out" \
    setpriv --reuid=munge --regid=munge --init-groups -- /usr/sbin/munged --foreground
  wait_for "munged" munge_ok
else
  alive munged || log "munged already running (not started by this script; left alone)"
fi
lap "munged"

# ---------------------------------------------------------------- 3b. mariadb
SOCK=$S/run/mysqld.sock
DB=(mariadb --no-defaults -S "$SOCK" -u root)
db_ok() { "${DB[@]}" -e 'SELECT 1' >/dev/null 2>&1; }
if ! alive mariadbd; then
  if [ ! -d "$S/mysql/mysql" ]; then
    log "initialising MariaDB data dir $S/mysql"
    rm -rf "$S/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$S/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$S/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (see $S/log/mariadb-install.log)"
  fi
  rm -f "$SOCK"
  start mariadbd "$S/log/mariadbd.log" /usr/sbin/mariadbd --no-defaults --user=root \
    --datadir="$S/mysql" --socket="$SOCK" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --pid-file="$S/run/mariadbd.pid" --skip-name-resolve --innodb-buffer-pool-size=64M \
    --innodb-lock-wait-timeout=900 --max-allowed-packet=64M
fi
wait_for "mariadbd" db_ok
"${DB[@]}" <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
EOF
lap "mariadbd"

# ---------------------------------------------------------------- 3c. slurmdbd
dbd_ok() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }
if ! alive slurmdbd; then
  start slurmdbd "$S/log/slurmdbd.out" /usr/sbin/slurmdbd -D
fi
wait_for "slurmdbd (sacctmgr show cluster)" dbd_ok
if [ -z "$(sacctmgr -n -P show cluster "$CLUSTER" format=cluster 2>/dev/null)" ]; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
lap "slurmdbd"

# ---------------------------------------------------------------- 3d. slurmctld + slurmd
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
if ! alive slurmctld; then
  start slurmctld "$S/log/slurmctld.out" /usr/sbin/slurmctld -D -i
fi
wait_for "slurmctld (scontrol ping)" ctld_ok
lap "slurmctld"

if [ -z "$(sacctmgr -n -P show account "$ACCOUNT" format=account 2>/dev/null)" ]; then
  sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
    Description="specscale local test account" Organization=specscale >/dev/null
fi
if ! sacctmgr -n -P show assoc user="$USER_NAME" account="$ACCOUNT" format=user 2>/dev/null \
     | grep -qx "$USER_NAME"; then
  sacctmgr -i add user "$USER_NAME" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" \
    Cluster="$CLUSTER" >/dev/null
fi
lap "sacctmgr cluster/account/user"

if ! alive slurmd; then
  start slurmd "$S/log/slurmd.out" /usr/sbin/slurmd -D
fi
node_state() { sinfo -h -n "$HOST" -o '%t' 2>/dev/null | head -n1; }
node_idle() {
  local st; st=$(node_state)
  case "$st" in
    idle|mix|alloc) return 0 ;;
    inval) return 42 ;;  # config does not match the hardware: see Reason below
    down|drain|drng|fail)
      # e.g. "Node unexpectedly rebooted" after a restart: put it back into service
      scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
      return 1 ;;
    *) return 1 ;;
  esac
}
wait_for "node $HOST to become idle (sinfo; $(scontrol show node "$HOST" 2>/dev/null | grep -o 'Reason=.*'))" node_idle
lap "slurmd + node idle"

# ---------------------------------------------------------------- 4. smoke job
# (`sbatch --wait` polls at 2, 4, 8... s intervals; polling scontrol ourselves is faster)
jobid=$(sbatch --parsable -p "$PARTITION" -A "$ACCOUNT" -t 1 -o /dev/null \
          -J specscale-slurm-up --wrap true 2>&1) || die "sbatch failed: $jobid"
jobid=${jobid%%;*}
job_state() { scontrol -o show job "$jobid" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
job_done() {
  case "$(job_state)" in
    COMPLETED) return 0 ;;
    FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) return 42 ;;
    *) return 1 ;;
  esac
}
wait_for "smoke job $jobid (sbatch --wrap true)" job_done
lap "sbatch --wrap true"

TOTAL=$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.2f", a-b}')
log "cluster '$CLUSTER' up: node $HOST ($NCPU CPUs, ${MEM_MB} MB), partition $PARTITION,"
log "  account $ACCOUNT, smoke job $jobid ok; scratch $S; SLURM_CONF=/etc/slurm/slurm.conf"
log "timings:"
for t in "${TIMINGS[@]}"; do echo "  $t"; done
printf '  %-30s %6s s\n' "total" "$TOTAL"
