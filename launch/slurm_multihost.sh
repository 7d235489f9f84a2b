#!/usr/bin/env bash
# Data-parallel over several hosts with SLURM: one process per GPU, as
# jax.distributed.initialize() gives each SLURM task on GPUs the GPU of its
# local task id (set JAX_LOCAL_DEVICE_IDS for another split). It reads the
# SLURM environment, each process feeds its slice of every global batch, and
# process 0 writes results. Submit from the repository root, the workdir on
# storage all hosts share:
#
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 launch/slurm_multihost.sh \
#       configs/cifar_class.py runs/cifar_class [--config.overrides ...]
#
# It runs $PYTHON, else the active virtual environment's python, else python3.
# To try several processes on one machine without SLURM, see launch/multihost.sh.
set -euo pipefail
config=$1 workdir=$2
shift 2
python=${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}
srun "${python:-python3}" -m mixunlearn_jax.main --config="$config" --workdir="$workdir" "$@"
