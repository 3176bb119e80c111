#!/usr/bin/env bash
# The SLURM test (tests/test_slurm_cluster.py) starts a single-node cluster from Debian's slurm-wlm and munge
# (scripts/slurm_cluster.sh). Install them when they are missing and we may (root with apt-get); otherwise say what
# to install. The test fails, not skips, without them.
set -uo pipefail
if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 \
        && command -v sbatch >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_slurm: installing Debian's slurm-wlm and munge for the SLURM cluster test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null) \
        || echo "ensure_slurm: could not install slurm-wlm munge; tests/test_slurm_cluster.py will fail" >&2
else
    echo "ensure_slurm: slurmctld, slurmd, sbatch or munged not found; install your distribution's slurm-wlm and" \
         "munge packages (Debian/Ubuntu: apt-get install slurm-wlm munge) for tests/test_slurm_cluster.py" >&2
fi
exit 0
