#!/usr/bin/env bash
# A single-node SLURM cluster on 127.0.0.1, for testing the `slurm` profile on one machine
# (tests/workflow/test_cluster.py, CI). Not for production: no accounting database, no cgroups.
#
#   tools/slurm_cluster.sh start    # write the config and a munge key, start munged, slurmctld, slurmd
#   tools/slurm_cluster.sh status   # the daemons' pids and `sinfo`
#   tools/slurm_cluster.sh stop     # stop the daemons by their pid files
#
# Needs root and Debian's slurm-wlm and munge (`bash tools/bootstrap.sh` installs them as root).
# Everything lives under $REUSE_SLURM_DIR (default /tmp/reuse-slurm): slurm.conf, the munge key and
# socket, pid files, spool and state folders, the daemons' logs. The client commands and the job
# steps read the config from /etc/slurm/slurm.conf (the executor plugin's job step does not keep
# SLURM_CONF), so `start` also writes it there, and refuses to replace one it did not write.
set -euo pipefail

DIR=${REUSE_SLURM_DIR:-/tmp/reuse-slurm}
ETC_CONF=/etc/slurm/slurm.conf
MARK="# written by reuse tools/slurm_cluster.sh"
MUNGE_SOCKET="$DIR/munge-run/munge.socket.2"

die() { echo "slurm_cluster: $*" >&2; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (it starts munged, slurmctld and slurmd and writes $ETC_CONF); run it with sudo"
}

need_tools() {
  local missing=()
  for t in munged mungekey slurmctld slurmd sinfo sbatch squeue scontrol; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} = 0 ] ||
    die "not installed: ${missing[*]}; on Debian run as root: apt-get install slurm-wlm munge (or bash tools/bootstrap.sh)"
}

write_config() {
  local node cpus mem_mb
  node=$(hostname -s)
  cpus=$(nproc)
  # leave a tenth of the memory (at least 512 MB) to the system and the daemons
  mem_mb=$(awk '/MemTotal/ {m = int($2 / 1024); r = int(m / 10); if (r < 512) r = 512; print m - r}' /proc/meminfo)
  mkdir -p "$DIR/slurmd" "$DIR/slurmctld"
  cat >"$DIR/slurm.conf" <<EOF
$MARK: a single-node test cluster.
ClusterName=reuse
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${REUSE_SLURMCTLD_PORT:-6817}
SlurmdPort=${REUSE_SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
MpiDefault=none
# cgroups are unavailable in containers and sandboxes: track processes by their parent pids
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes: the executor plugin polls squeue (there is
# no slurmdbd for sacct) and must see each job end.
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmdSpoolDir=$DIR/slurmd
StateSaveLocation=$DIR/slurmctld
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -e "$ETC_CONF" ] && ! grep -qF "$MARK" "$ETC_CONF"; then
    die "$ETC_CONF exists and was not written by this script (a real cluster's config?); move it away to use the test cluster"
  fi
  # One test cluster per machine: they would share $ETC_CONF, the node name and the clients.
  local other_pid
  if [ -e "$ETC_CONF" ] && ! cmp -s "$ETC_CONF" "$DIR/slurm.conf"; then
    other_pid=$(sed -n 's/^SlurmctldPidFile=//p' "$ETC_CONF")
    if [ -n "$other_pid" ] && [ "$other_pid" != "$DIR/slurmctld.pid" ] && pid_alive "$other_pid"; then
      die "another test cluster is running (its slurmctld pid file: $other_pid); stop it first: REUSE_SLURM_DIR=$(dirname "$other_pid") $0 stop"
    fi
  fi
  mkdir -p "$(dirname "$ETC_CONF")"
  cp "$DIR/slurm.conf" "$ETC_CONF"
}

start_munge() {
  # munged checks its folders' permissions: the key's folder private, the socket's world-readable
  mkdir -p "$DIR/munge" "$DIR/munge-run"
  chmod 700 "$DIR/munge"
  chmod 755 "$DIR/munge-run"
  [ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key"
  chmod 600 "$DIR/munge/munge.key"
  pid_alive "$DIR/munge/munged.pid" && return
  munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    die "munged did not start; see $DIR/munge/munged.log"
}

wait_idle() {
  local node i state
  node=$(hostname -s)
  for i in $(seq 1 300); do
    state=$(sinfo -h -N -n "$node" -o %t 2>/dev/null || true)
    case "$state" in
      idle | mix | alloc) return 0 ;;
      drain* | down*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.1
  done
  die "node $node is not idle after 30 s (sinfo says '${state:-nothing}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
}

start() {
  need_root
  need_tools
  write_config
  start_munge
  export SLURM_CONF="$ETC_CONF"
  if ! pid_alive "$DIR/slurmctld.pid"; then
    slurmctld -c || die "slurmctld did not start; see $DIR/slurmctld.log"
  fi
  if ! pid_alive "$DIR/slurmd.pid"; then
    slurmd -N "$(hostname -s)" || die "slurmd did not start; see $DIR/slurmd.log"
  fi
  wait_idle
  echo "slurm_cluster: up (node $(hostname -s), $(nproc) CPUs; state and logs in $DIR)"
}

stop_one() {  # pid file, name
  local pidfile=$1 name=$2 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "slurm_cluster: $name (pid $pid) ignored SIGTERM for 10 s; killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

stop() {
  need_root
  stop_one "$DIR/slurmd.pid" slurmd
  stop_one "$DIR/slurmctld.pid" slurmctld
  stop_one "$DIR/munge/munged.pid" munged
  if [ -f "$ETC_CONF" ] && cmp -s "$ETC_CONF" "$DIR/slurm.conf"; then
    rm -f "$ETC_CONF"  # only our own copy
  fi
  echo "slurm_cluster: stopped"
}

status() {
  local rc=0 f
  for f in munge/munged slurmctld slurmd; do
    if pid_alive "$DIR/$f.pid"; then
      echo "$(basename "$f"): running (pid $(cat "$DIR/$f.pid"))"
    else
      echo "$(basename "$f"): not running"
      rc=1
    fi
  done
  [ $rc = 0 ] && sinfo
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status (state in \$REUSE_SLURM_DIR, default /tmp/reuse-slurm)" ;;
esac
