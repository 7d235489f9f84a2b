#!/usr/bin/env bash
# Multi-host without a scheduler: run this on every host with the same
# coordinator (host 0's address and a free port), the number of processes and
# this host's index. The workdir must be on storage all hosts share; process 0
# writes the results, every process reads the checkpoints.
#
#   launch/multihost.sh 10.0.0.1:1234 2 0 configs/cifar_class.py /shared/runs/cifar_class   # host 0
#   launch/multihost.sh 10.0.0.1:1234 2 1 configs/cifar_class.py /shared/runs/cifar_class   # host 1
#
# A try-out on one machine: two processes on 127.0.0.1, one CPU device each
# (on GPUs, give each process its own with JAX_LOCAL_DEVICE_IDS=0, =1, ...):
#
#   export XLA_FLAGS=--xla_force_host_platform_device_count=1
#   for id in 0 1; do
#     launch/multihost.sh 127.0.0.1:12355 2 $id configs/digits_class.py runs/digits_2proc &
#   done; wait
#
# It runs $PYTHON, else the active virtual environment's python, else python3.
set -euo pipefail
export JAX_COORDINATOR_ADDRESS=$1 JAX_NUM_PROCESSES=$2 JAX_PROCESS_ID=$3
config=$4 workdir=$5
shift 5
python=${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}
exec "${python:-python3}" -m mixunlearn_jax.main --config="$config" --workdir="$workdir" "$@"
