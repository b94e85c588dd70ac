#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by .ci/slurm-up.sh: exactly the daemons whose
# PIDs it saved in $SLURM_SCRATCH/pids/ (default /tmp/specscale-slurm), in reverse start
# order, SIGTERM first, SIGKILL after a grace period. Idempotent: with nothing running it
# just says so. Leaves configuration, job state and the accounting database in place, so
# the next slurm-up.sh is fast and job IDs keep increasing.
set -uo pipefail

S=${SLURM_SCRATCH:-/tmp/specscale-slurm}
GRACE=${SLURM_DOWN_GRACE:-20}   # seconds to wait for each daemon after SIGTERM
T0=$(date +%s.%N)
log() { echo "[slurm-down] $*"; }

stopped=0
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  f="$S/pids/$name.pid"
  [ -f "$f" ] || continue
  pid="" comm=""
  read -r pid comm <"$f" || true
  if [ -z "$pid" ] || [ ! -r "/proc/$pid/comm" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm" ]; then
    log "$name (pid ${pid:-?}) not running"
    rm -f "$f"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(date +%s) + GRACE ))
  while [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; do
    # a zombie (exited, parent gone/not reaping) counts as stopped
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name (pid $pid) ignored SIGTERM for ${GRACE}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  log "stopped $name (pid $pid)"
  rm -f "$f"
  stopped=$((stopped + 1))
done

# leftovers that would confuse the next start
rm -f "$S/run/mysqld.sock" "$S/run/"*.pid 2>/dev/null || true
[ "$stopped" -gt 0 ] || log "nothing to stop (no live daemons recorded in $S/pids)"
log "done in $(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.2f", a-b}') s"
exit 0
