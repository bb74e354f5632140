#!/usr/bin/env bash
# slurm/local/stop.sh - stop the daemons that slurm/local/start.sh started
# (only those whose pid files live in $LOCAL_SLURM_DIR). Cancels queued/running
# jobs of this private cluster first. Leaves config, state and logs in place.
set -uo pipefail
DIR=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
log() { echo "[local-slurm] $*" >&2; }

alive() {  # running and not a zombie
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

stop_pidfile() {  # name pidfile expected-comm
  local name=$1 pf=$2 comm=$3 pid
  pid=$(cat "$pf" 2>/dev/null || true)
  if ! alive "$pid"; then log "$name not running"; rm -f "$pf"; return 0; fi
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm" ]; then
    log "$name: pid $pid is not $comm (stale pid file), leaving it alone"; rm -f "$pf"; return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 150); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$pf"
  log "$name (pid $pid) stopped"
}

CTLD_PID=$(cat "$DIR/run/slurmctld.pid" 2>/dev/null || true)
if alive "$CTLD_PID" && scontrol ping 2>/dev/null | grep -q UP; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi

stop_pidfile slurmd    "$DIR/run/slurmd.pid"          slurmd
stop_pidfile slurmctld "$DIR/run/slurmctld.pid"       slurmctld
stop_pidfile munged    "$DIR/run/munge/munged.pid"    munged
exit 0
