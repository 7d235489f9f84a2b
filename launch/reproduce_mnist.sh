#!/usr/bin/env bash
# The paper's CNN experiments (MNIST, Fashion-MNIST; class and data level) on
# the raw files in ../shared/datasets, prepared offline. The data-level runs
# reuse the class-level runs' initial models (same data, same seeds).
#
#   launch/reproduce_mnist.sh [runs] [extra overrides, e.g. --config.seeds='(0,)']
set -euo pipefail
runs=${1:-runs}
shift || true
for dataset in mnist:mnist fmnist:fashion_mnist; do
  short=${dataset%%:*} raw=${dataset##*:}
  common=(--config.data.manual_dir=../shared/datasets/$raw --config.data.data_dir="$runs/tfds" "$@")
  python -m mixunlearn_jax.main --config=configs/${short}_class.py --workdir="$runs/${short}_class" "${common[@]}"
  python -m mixunlearn_jax.main --config=configs/${short}_data.py --workdir="$runs/${short}_data" \
      --config.pretrain.reuse_workdir="$runs/${short}_class" "${common[@]}"
done
