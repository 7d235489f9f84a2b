#!/usr/bin/env bash
# Data-parallel over several hosts with SLURM: one process per host, all of its
# accelerators. jax.distributed.initialize() reads the SLURM environment, each
# process feeds its slice of every global batch, and process 0 writes results.
#
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_multihost.sh \
#       configs/cifar_class.py runs/cifar_class [--config.overrides ...]
set -euo pipefail
config=$1 workdir=$2
shift 2
srun python -m mixunlearn_jax.main --config="$config" --workdir="$workdir" "$@"
