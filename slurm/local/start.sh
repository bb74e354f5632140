#!/usr/bin/env bash
# slurm/local/start.sh - install (if missing), configure and start a single-node
# Slurm cluster on localhost (Debian 12 / Ubuntu, run as root, no systemd needed).
# Idempotent: re-running leaves a healthy cluster alone, restarts our daemons if
# the generated config changed, and always waits until the node is usable.
#
# Env knobs:
#   LOCAL_SLURM_DIR        state/log/pid dir                 (default /tmp/local-slurm)
#   LOCAL_SLURM_CLUSTER    ClusterName                       (default localci)
#   LOCAL_SLURM_FAKE_GPUS  N>0: advertise N fake GPUs (gres) (default 0 = no gres)
#   LOCAL_SLURM_WAIT       seconds to wait for the node      (default 60)
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
CLUSTER=${LOCAL_SLURM_CLUSTER:-localci}
FAKE_GPUS=${LOCAL_SLURM_FAKE_GPUS:-0}
WAIT_S=${LOCAL_SLURM_WAIT:-60}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# managed by start-local-slurm.sh"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { echo "[local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# alive PID [COMM]: running, not a zombie (PID 1 in sandboxes may reap late),
# and (if given) named COMM, so a stale pid file with a reused pid is ignored
alive() {
  local pid=$1 comm=${2:-}
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  [ -z "$comm" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}
pid_of() { [ -s "$1" ] && cat "$1" || true; }

# ---------------------------------------------------------------- 1. install
if ! [ -x /usr/sbin/slurmctld ] || ! [ -x /usr/sbin/slurmd ] || \
   ! [ -x /usr/bin/sbatch ] || ! [ -x /usr/sbin/munged ]; then
  log "installing slurm + munge via apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$DIR"/{state,spool,log,run}
chmod 755 "$DIR"

# ---------------------------------------------------------------- 2. munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  install -d -o munge -g munge -m 0700 /etc/munge
  if command -v mungekey >/dev/null; then mungekey --create --force
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
install -d -o munge -g munge -m 0755 "$DIR/run/munge"

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/run/munge/munged.pid" \
    --log-file="$DIR/run/munge/munged.log" \
    || die "munged failed; see $DIR/run/munge/munged.log"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munge self-test failed"
  log "munged started (pid $(pid_of "$DIR/run/munge/munged.pid"))"
fi

# ---------------------------------------------------------------- 3. config
HOST=$(hostname -s)
# "NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=.."
NODE_HW=$(slurmd -C | head -n1)
case "$NODE_HW" in NodeName=*) ;; *) die "slurmd -C failed: $NODE_HW";; esac
GRES_NODE=""; GRES_TYPES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  # gres/gpu needs real char devices: make /dev/null clones as fake GPUs
  mkdir -p "$DIR/fakegpu"
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    [ -c "$DIR/fakegpu/nvidia$i" ] || mknod "$DIR/fakegpu/nvidia$i" c 1 3
  done
  GRES_NODE=" Gres=gpu:$FAKE_GPUS"
  GRES_TYPES="GresTypes=gpu"
fi

NEW=$(cat <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
$GRES_TYPES
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=3600
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
$NODE_HW NodeAddr=127.0.0.1${GRES_NODE} State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
NEW_GRES="$MARK"
[ "$FAKE_GPUS" -gt 0 ] && NEW_GRES+=$'\n'"NodeName=$HOST Name=gpu File=$DIR/fakegpu/nvidia[0-$((FAKE_GPUS - 1))]"

CHANGED=0
mkdir -p /etc/slurm
write_if_changed() {  # file content
  if [ "$(cat "$1" 2>/dev/null)" != "$2" ]; then
    if [ -e "$1" ] && ! grep -qF "$MARK" "$1"; then
      cp -a "$1" "$1.bak.$(date +%s)"; log "backed up foreign $1"
    fi
    printf '%s\n' "$2" > "$1"; CHANGED=1; log "wrote $1"
  fi
}
write_if_changed "$CONF" "$NEW"
write_if_changed "$GRES_CONF" "$NEW_GRES"

# ---------------------------------------------------------------- 4. daemons
CTLD_PID=$(pid_of "$DIR/run/slurmctld.pid"); SLURMD_PID=$(pid_of "$DIR/run/slurmd.pid")
if [ "$CHANGED" = 1 ] && { alive "$CTLD_PID" slurmctld || alive "$SLURMD_PID" slurmd; }; then
  log "config changed: restarting our slurm daemons"
  alive "$SLURMD_PID" slurmd && kill -TERM "$SLURMD_PID"
  alive "$CTLD_PID" slurmctld && kill -TERM "$CTLD_PID"
  for _ in $(seq 150); do alive "$SLURMD_PID" slurmd || alive "$CTLD_PID" slurmctld || break; sleep 0.1; done
fi

if alive "$(pid_of "$DIR/run/slurmctld.pid")" slurmctld; then
  log "slurmctld already running"
else
  slurmctld || die "slurmctld failed; see $DIR/log/slurmctld.log"
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  scontrol ping | grep -q UP || die "slurmctld not responding; see $DIR/log/slurmctld.log"
  log "slurmctld started (pid $(pid_of "$DIR/run/slurmctld.pid"))"
fi

if alive "$(pid_of "$DIR/run/slurmd.pid")" slurmd; then
  log "slurmd already running"
else
  slurmd || die "slurmd failed; see $DIR/log/slurmd.log"
  for _ in $(seq 50); do alive "$(pid_of "$DIR/run/slurmd.pid")" slurmd && break; sleep 0.1; done
  log "slurmd started (pid $(pid_of "$DIR/run/slurmd.pid"))"
fi

# ---------------------------------------------------------------- 5. wait
resumed=0
for _ in $(seq $((WAIT_S * 5))); do
  st=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
  case "$st" in
    idle|mixed|allocated|completing) log "node $HOST is $st"; sinfo; exit 0;;
    *drain*|*down*|*inval*|*fail*)
      if [ "$resumed" = 0 ]; then
        log "node $HOST is $st: $(sinfo -h -n "$HOST" -o %E); resuming"
        scontrol update nodename="$HOST" state=resume 2>/dev/null || true
        resumed=1
      fi;;
  esac
  sleep 0.2
done
sinfo -N -l || true
die "node $HOST not ready after ${WAIT_S}s (state: ${st:-?}; reason: $(sinfo -h -n "$HOST" -o %E 2>/dev/null)); logs in $DIR/log"
