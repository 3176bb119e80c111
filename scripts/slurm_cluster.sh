#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for testing `lth sweep --executor slurm` (tests/test_slurm_cluster.py).
#
#   scripts/slurm_cluster.sh start DIR    munge key, slurm.conf for localhost, munged + slurmctld + slurmd started;
#                                         returns once `sinfo` shows the node idle and prints the start time
#   scripts/slurm_cluster.sh stop DIR     cancels the cluster's jobs and stops the three daemons (by their pid files)
#
# Everything lives under DIR: DIR/etc/slurm.conf, the munge key and socket, state, spool, logs and pid files. Clients
# find the cluster through SLURM_CONF=DIR/etc/slurm.conf (printed by `start`). The node declares this machine's real
# CPU count and memory. Uses Debian's slurm-wlm and munge (installed with apt-get when missing and we are root,
# otherwise the script says what to install). The daemons run as the calling user (root: munged with --force).
set -euo pipefail

usage() { echo "usage: $0 start DIR | stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/etc/slurm.conf
here=$(cd "$(dirname "$0")" && pwd)

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name=$1 file=$2 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm_cluster: $name (pid $pid) did not stop; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

if [ "$action" = stop ]; then
    if [ -f "$conf" ] && [ -f "$dir/run/slurmctld.pid" ]; then
        SLURM_CONF=$conf scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 25); do  # give cancelled jobs' steps up to 5 s to end
            [ -z "$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2
        done
    fi
    stop_pid slurmd "$dir/run/slurmd.pid"
    stop_pid slurmctld "$dir/run/slurmctld.pid"
    stop_pid munged "$dir/run/munged.pid"
    echo "slurm_cluster: stopped (logs in $dir/log)"
    exit 0
fi
[ "$action" = start ] || usage

missing=()
for tool in munged slurmctld slurmd sbatch srun sinfo squeue scancel; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    bash "$here/ensure_slurm.sh"
    for tool in "${missing[@]}"; do
        if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
            echo "slurm_cluster: $tool not found; install slurm-wlm and munge (Debian: apt-get install slurm-wlm" \
                 "munge) and run again" >&2
            exit 1
        fi
    done
fi
export PATH=$PATH:/usr/sbin

started=$(date +%s.%N)
if [ -f "$dir/run/slurmctld.pid" ] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
    echo "slurm_cluster: a cluster is already running from $dir; run '$0 stop $dir' first" >&2
    exit 1
fi
mkdir -p "$dir"/{etc,state,spool/slurmd,log,run,munge}
chmod 700 "$dir/munge"

# munge: a fresh key, a private socket (no clash with a system munged)
key=$dir/munge/munge.key
if [ ! -s "$key" ]; then
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    chmod 400 "$key"
fi
munge_flags=()
[ "$(id -u)" = 0 ] && munge_flags+=(--force)
munged "${munge_flags[@]}" --key-file="$key" --socket="$dir/munge/munge.sock" --pid-file="$dir/run/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"

free_port() {  # a TCP port nobody listens on, from a range slurm's defaults do not use
    local port
    for port in $(seq "$1" $(( $1 + 200 ))); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
    echo "$1"
}
ctld_port=$(free_port 16817)
slurmd_port=$(free_port $(( ctld_port + 1 )))
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
user=$(id -un)

cat > "$conf" <<EOF
# single-node test cluster written by scripts/slurm_cluster.sh
ClusterName=lthtest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PlugStackConfig=$dir/etc/plugstack.conf
EOF
: > "$dir/etc/plugstack.conf"

export SLURM_CONF=$conf
slurmctld -f "$conf" -i
slurmd -f "$conf" -N localhost

for _ in $(seq 300); do  # up to 60 s
    state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 0.2
done
if [ "${state:-}" != idle ]; then
    echo "slurm_cluster: the node did not become idle within 60 s (state: ${state:-none}); logs:" >&2
    tail -n 5 "$dir"/log/*.log >&2 || true
    exit 1
fi
elapsed=$(awk "BEGIN {print $(date +%s.%N) - $started}")
printf 'slurm_cluster: started in %.1f s (node localhost, %s CPUs, %s MB); export SLURM_CONF=%s\n' \
    "$elapsed" "$cpus" "$mem_mb" "$conf"
