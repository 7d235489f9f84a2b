#!/usr/bin/env bash
# Multi-host without a scheduler: run this on every host with the same
# coordinator (host 0's address and a free port), the number of processes and
# this host's index. The workdir must be on storage all hosts share.
#
#   launch/multihost.sh 10.0.0.1:1234 2 0 configs/cifar_class.py /shared/runs/cifar_class   # host 0
#   launch/multihost.sh 10.0.0.1:1234 2 1 configs/cifar_class.py /shared/runs/cifar_class   # host 1
set -euo pipefail
export JAX_COORDINATOR_ADDRESS=$1 JAX_NUM_PROCESSES=$2 JAX_PROCESS_ID=$3
config=$4 workdir=$5
shift 5
python -m mixunlearn_jax.main --config="$config" --workdir="$workdir" "$@"
