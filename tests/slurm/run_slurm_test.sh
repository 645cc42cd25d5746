#!/usr/bin/env bash
# `make test-slurm`: start a real single-node SLURM (tests/slurm/cluster.sh), run the SLURM tests
# (tests/test_slurm.py, marker `slurm`) through `snakemake --profile profiles/slurm`, and ALWAYS
# stop the daemons this script started, by pid. Needs root (it installs Debian packages if they
# are missing). Extra arguments go to pytest. CI runs it under `timeout 1200`; it takes about
# 5 minutes on 2 cores. DIFFCOMP_SLURM_SIGTERM_TEST=1 adds the time-limit test's SIGTERM variant
# (about 5 minutes more on its own).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-$REPO/.venv/bin/python}

# shellcheck source=tests/slurm/cluster.sh
source "$REPO/tests/slurm/cluster.sh"

TEST_PGID=
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # pytest runs in its own process group: on a timeout or ^C end it and the snakemake it started
    # (which on SIGTERM would otherwise keep waiting for its jobs), then the daemons.
    if [[ -n $TEST_PGID ]] && kill -0 -- -"$TEST_PGID" 2>/dev/null; then
        kill -TERM -- -"$TEST_PGID" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 -- -"$TEST_PGID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL -- -"$TEST_PGID" 2>/dev/null || true
    fi
    slurm_stop || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$SECONDS
slurm_start
echo "SLURM up in $((SECONDS - t0)) s (SLURM_CONF=$SLURM_CONF)"

# What a user's shell looks like with the venv active; sbatch --export=ALL hands it to the jobs.
export PATH="$REPO/.venv/bin:$PATH" VIRTUAL_ENV="$REPO/.venv"
t1=$SECONDS
setsid "$PYTHON" -m pytest -m slurm -p no:cacheprovider -q -ra -s tests/test_slurm.py "$@" &
TEST_PGID=$!
wait "$TEST_PGID"
TEST_PGID=
echo "SLURM tests took $((SECONDS - t1)) s; $((SECONDS - t0)) s in all"
