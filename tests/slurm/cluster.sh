#!/usr/bin/env bash
# A real single-node SLURM (Debian's slurm-wlm 22.05) for testing profiles/slurm.
#
#   bash tests/slurm/cluster.sh start   install (if missing), configure, start munged/slurmctld/slurmd
#   bash tests/slurm/cluster.sh env     print the `export SLURM_CONF=...` line for a shell
#   bash tests/slurm/cluster.sh stop    stop the daemons this script started (by their pid files)
#
# Needs root (apt-get, munge user, daemons). Everything it writes lives in $DIFFCOMP_SLURM_DIR
# (default /tmp/diffcomp-slurm): slurm.conf, state, logs, pid files and the job-completion log
# (jobcomp.log, one line per finished job with its JobId and JobState). Daemons it did not start
# (a munged that already answers, say) are used but never stopped.
# Sourcing the file (as run_slurm_test.sh does) defines the functions without running anything.

SLURM_DIR=${DIFFCOMP_SLURM_DIR:-/tmp/diffcomp-slurm}
SLURM_PARTITION=${DIFFCOMP_SLURM_PARTITION:-debug}
# The node is declared big enough for four of profiles/slurm's GPU jobs at once (4 CPUs per GPU,
# 16 GB each), so the test submits the profile's requests unchanged even on a 2-core machine and
# its concurrent runs (tests/test_slurm.py) do not queue behind one another
# (SlurmdParameters=config_overrides; nothing enforces CPU or memory limits here). The GPUs are
# fake: SLURM drops file-less GPUs, so each is an empty file in $SLURM_DIR. Jobs get SLURM_GPUS=1,
# no CUDA_VISIBLE_DEVICES and no CUDA device, so GPU code must fall back to the CPU here.
SLURM_FAKE_GPUS=${DIFFCOMP_SLURM_FAKE_GPUS:-4}
SLURM_MIN_CPUS=${DIFFCOMP_SLURM_MIN_CPUS:-16}
SLURM_MIN_MEM_MB=${DIFFCOMP_SLURM_MIN_MEM_MB:-98304}
export SLURM_CONF="$SLURM_DIR/slurm.conf"

_log() { echo "[slurm-cluster $(date +%T)] $*" >&2; }

_alive() {  # _alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ -r /proc/$pid/comm ]] && [[ $(</proc/"$pid"/comm) == "$2" ]]
}

_stop_pidfile() {  # _stop_pidfile PIDFILE NAME: TERM, wait up to 10 s, then KILL
    local pid i
    _alive "$1" "$2" || return 0
    pid=$(<"$1")
    _log "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

slurm_install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    _log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

slurm_write_conf() {
    local host cpus mem_mb
    host=$(hostname)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mem_mb=$((mem_mb * 9 / 10))
    ((cpus >= SLURM_MIN_CPUS)) || cpus=$SLURM_MIN_CPUS
    ((mem_mb >= SLURM_MIN_MEM_MB)) || mem_mb=$SLURM_MIN_MEM_MB
    mkdir -p "$SLURM_DIR"/{state,spool,log}
    cat >"$SLURM_CONF" <<EOF
# Written by tests/slurm/cluster.sh for host $host.
ClusterName=diffcomp-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd, no cgroups in containers: track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without DefMemPerCPU every job takes the whole node and jobs run one at a time.
DefMemPerCPU=256
# Finished jobs stay visible to squeue for 10 minutes: the plugin's squeue status command needs it.
MinJobAge=600
# Time limits are enforced at once (default OverTimeLimit=0); KillWait is the grace between
# SIGTERM and SIGKILL at the limit (SLURM's default, stated for the signal tests).
KillWait=30
# No accounting database: SLURM's own record of finished jobs is the job-completion log.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/jobcomp.log
GresTypes=gpu
SlurmdParameters=config_overrides
NodeName=localhost NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$SLURM_FAKE_GPUS State=UNKNOWN
PartitionName=$SLURM_PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    local i
    : >"$SLURM_DIR/gres.conf"
    echo "AutoDetect=off" >>"$SLURM_DIR/gres.conf"
    for ((i = 0; i < SLURM_FAKE_GPUS; i++)); do
        : >"$SLURM_DIR/fakegpu$i"
        echo "NodeName=localhost Name=gpu File=$SLURM_DIR/fakegpu$i" >>"$SLURM_DIR/gres.conf"
    done
}

# The jobstep executor inside each job drops every SLURM_* variable but a few ids (SLURM_CONF
# included) before its `srun`, so srun only finds a config at the default path: link ours there
# (never over a slurm.conf that is not ours), and remove the link on stop.
ETC_CONF=/etc/slurm/slurm.conf

slurm_link_conf() {
    if [[ -e $ETC_CONF || -L $ETC_CONF ]] && [[ $(readlink "$ETC_CONF" || true) != "$SLURM_CONF" ]]; then
        _log "$ETC_CONF exists and is not ours; refusing to replace it"
        return 1
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$SLURM_CONF" "$ETC_CONF"
}

slurm_unlink_conf() {
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$SLURM_CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
}

_munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

slurm_start_munge() {
    if _munge_works; then
        _log "munged already answers; using it"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        _log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 "$SLURM_DIR/munge"
    runuser -u munge -- munged --force --pid-file="$SLURM_DIR/munge/munged.pid"
    local i
    for i in $(seq 50); do
        _munge_works && return 0
        sleep 0.2
    done
    _log "munged did not come up"
    return 1
}

slurm_stop() {
    local jobs i
    # Jobs still on this (test-only) controller would leave slurmstepd processes behind.
    if _alive "$SLURM_DIR/slurmctld.pid" slurmctld; then
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            _log "cancelling leftover jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for i in $(seq 30); do
                [[ -z $(squeue -h -t running,completing -o %i 2>/dev/null) ]] && break
                sleep 0.5
            done
        fi
    fi
    _stop_pidfile "$SLURM_DIR/slurmd.pid" slurmd
    _stop_pidfile "$SLURM_DIR/slurmctld.pid" slurmctld
    _stop_pidfile "$SLURM_DIR/munge/munged.pid" munged
    slurm_unlink_conf
}

slurm_start() {
    local t0=$SECONDS i state
    [[ $(id -u) == 0 ]] || { _log "needs root"; return 1; }
    slurm_install
    _log "packages ready after $((SECONDS - t0)) s"
    # Leftovers of an earlier, aborted run of this script (its own pid files only).
    slurm_stop
    if [[ -d $SLURM_DIR && -n $(ls -A "$SLURM_DIR") && ! -f $SLURM_DIR/slurm.conf ]]; then
        _log "$SLURM_DIR is not empty and not ours (no slurm.conf); set DIFFCOMP_SLURM_DIR"
        return 1
    fi
    rm -rf "$SLURM_DIR"
    slurm_write_conf
    slurm_link_conf
    slurm_start_munge
    slurmctld -i
    slurmd -N localhost
    for i in $(seq 120); do
        state=$(sinfo -h -N -o %T 2>/dev/null || true)
        if [[ $state == idle ]]; then
            _log "node idle after $((SECONDS - t0)) s (SLURM_CONF=$SLURM_CONF)"
            return 0
        fi
        sleep 0.5
    done
    _log "node not idle after 60 s (state: '${state:-no answer}'); last log lines:"
    tail -n 20 "$SLURM_DIR"/log/*.log >&2 || true
    return 1
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-} in
        start) slurm_start ;;
        stop) slurm_stop ;;
        env) echo "export SLURM_CONF=$SLURM_CONF" ;;
        *)
            echo "usage: $0 start|stop|env" >&2
            exit 2
            ;;
    esac
fi
