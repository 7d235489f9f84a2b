#!/usr/bin/env bash
# The paper's Tables 1-4 on MNIST and Fashion-MNIST (class and data level):
# every method and MixUnlearn's ablations, beside the paper's numbers. Per
# dataset and setup, the first workdir trains f_D and Retrain, the others
# (label-aware baselines, label-agnostic ones, ablations) reuse both, and
# tables.py merges the four into <runs>/<dataset>_<setup>_table.md. The
# data-level runs reuse the class-level f_D (same data, same seeds). Every job
# resumes where it was killed: run the same command again to go on.
#
#   launch/paper_tables.sh [runs] [extra overrides, e.g. --config.seeds='(0,)']
#
# SEEDS (default '(0,1,2)') and DATASETS (default 'mnist fmnist') choose the
# runs. Cost on 2 CPU cores: about 1.5 hours per seed, dataset and setup.
set -euo pipefail
runs=${1:-runs}
shift || true
seeds=${SEEDS:-(0,1,2)}
aware="'neggrad','boundary_shrink','sisa','unrolling','teacher_student','scrub','dsmixup','gli','laf_r'"
agnostic="'laf','randlabel','lmix'"
ablations="'mixunlearn_agnostic_vanilla_mixup_alpha035','mixunlearn_agnostic_vanilla_mixup',\
'mixunlearn_agnostic_vanilla_mixup_alpha150','mixunlearn_agnostic_no_real',\
'mixunlearn_agnostic_no_mix','mixunlearn_agnostic_no_sharpen'"
declare -A raw=([mnist]=mnist [fmnist]=fashion_mnist)
for short in ${DATASETS:-mnist fmnist}; do
  for setup in class data; do
    base="$runs/${short}_${setup}_paper"
    common=(--config=configs/${short}_${setup}.py --config.seeds="$seeds"
            --config.data.manual_dir=../shared/datasets/${raw[$short]} "$@")
    # f_D lives in the class-level base (a reused stage is not passed on), Retrain in each base.
    f_d="$runs/${short}_class_paper"
    first=()
    [ "$setup" = data ] && first=(--config.pretrain.reuse_workdir="$f_d")
    python -m mixunlearn_jax.main "${common[@]}" --workdir="$base" "${first[@]}"
    reuse=(--config.pretrain.reuse_workdir="$f_d" --config.retrain.reuse_workdir="$base")
    for group in aware:"$aware" agnostic:"$agnostic" ablations:"$ablations"; do
      python -m mixunlearn_jax.main "${common[@]}" --workdir="${base}_${group%%:*}" "${reuse[@]}" \
          --config.methods="(${group#*:})"
    done
    python -m mixunlearn_jax.tables --workdirs="$base,${base}_aware,${base}_agnostic,${base}_ablations" \
        --out="$runs/${short}_${setup}_table.md"
  done
done
