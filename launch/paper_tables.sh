#!/usr/bin/env bash
# The paper's Tables 1-4 on MNIST and Fashion-MNIST (class and data level),
# every method and MixUnlearn's ablations beside the paper's numbers, and the
# stopping rule against each method's fixed budget (README, "Stopping rule").
#
#   launch/paper_tables.sh [runs] [extra overrides, e.g. --config.seeds='(0,)']
#
# Per dataset and setup, the base workdir trains f_D and Retrain and runs
# MixUnlearn; the label-aware baselines, the label-agnostic ones and the
# ablations run in workdirs of their own that reuse both (the data level
# reuses the class level's f_D: same data, same seeds). Every run checks the
# stopping rule without stopping (stop.dry_run): the held-out pool it needs
# (100 training images per class) is left out of D, so D is 1.7% smaller than
# the paper's. tables.py merges the four into <runs>/<dataset>_<setup>_table.md.
# Then the same methods but the ablations run again with the rule on
# (<base>_rule_*, reusing f_D and Retrain), and the table file gains each
# method's fixed budget against the rule.
# Every job resumes where it was killed: run the same command again to go on.
#
# SEEDS (default '(0,1,2)') and DATASETS (default 'mnist fmnist') choose the
# runs. Cost on 2 CPU cores shared with other jobs (2026-12-01): the MNIST class
# base (f_D, Retrain, both MixUnlearn modes, 3 seeds) took 39 minutes; the
# baseline groups, with SISA's and DSMixup's shard ensembles, take longer.
set -euo pipefail
runs=${1:-runs}
shift || true
extra=("$@")
seeds=${SEEDS:-(0,1,2)}
declare -A methods
methods[base]="'mixunlearn_aware','mixunlearn_agnostic'"
methods[aware]="'neggrad','boundary_shrink','sisa','unrolling','teacher_student','scrub','dsmixup','gli',\
'laf_r'"
methods[agnostic]="'laf','randlabel','lmix'"
methods[ablations]="'mixunlearn_agnostic_vanilla_mixup_alpha035','mixunlearn_agnostic_vanilla_mixup',\
'mixunlearn_agnostic_vanilla_mixup_alpha150','mixunlearn_agnostic_no_real',\
'mixunlearn_agnostic_no_mix','mixunlearn_agnostic_no_sharpen'"
declare -A raw=([mnist]=mnist [fmnist]=fashion_mnist)

# main <workdir> <methods> [overrides...]
main() {
  local workdir=$1 methods=$2
  shift 2
  python -m mixunlearn_jax.main "${common[@]}" --workdir="$workdir" \
      --config.methods="($methods)" "$@"
}

# setup <short> <setup> <groups> <rule groups>: the fixed-budget runs of the
# groups (suffixes of the base workdir; "base" is the base itself), the rule's
# runs, then the table of everything run so far for this dataset and setup.
setup() {
  local short=$1 setup=$2 groups=$3 rule_groups=$4
  local base="$runs/${short}_${setup}_paper"
  # f_D lives in the class-level base (a reused stage is not passed on), Retrain in each base.
  local f_d="$runs/${short}_class_paper"
  common=(--config=configs/${short}_${setup}.py --config.seeds="$seeds"
          --config.data.manual_dir=../shared/datasets/${raw[$short]} --config.stop.enabled=True
          "${extra[@]}")
  local reuse=(--config.pretrain.reuse_workdir="$f_d" --config.retrain.reuse_workdir="$base")
  local group first=()
  [ "$setup" = data ] && first=(--config.pretrain.reuse_workdir="$f_d")
  for group in $groups; do
    if [ "$group" = base ]; then
      main "$base" "${methods[base]}" --config.stop.dry_run=True "${first[@]}"
    else
      main "${base}_$group" "${methods[$group]}" --config.stop.dry_run=True "${reuse[@]}"
    fi
  done
  for group in $rule_groups; do
    main "$(rule_workdir "$base" "$group")" "${methods[$group]}" "${reuse[@]}"
  done
  python -m mixunlearn_jax.tables --out="$runs/${short}_${setup}_table.md" \
      --workdirs="$(existing "$base" "${base}_aware" "${base}_agnostic" "${base}_ablations")" \
      --rule_workdirs="$(existing "${base}_rule" "${base}_rule_aware" "${base}_rule_agnostic")"
}

# rule_workdir <base> <group>: where the group's run with the rule on lives.
rule_workdir() {
  if [ "$2" = base ]; then echo "$1_rule"; else echo "$1_rule_$2"; fi
}

# existing <workdir>...: the finished workdirs among them, comma separated (a
# job writes results.md last).
existing() {
  local found=() w
  for w in "$@"; do [ -f "$w/results.md" ] && found+=("$w"); done
  (IFS=,; echo "${found[*]}")
}

# Two passes over the datasets: first what issues 19 and 21 need (MixUnlearn,
# the label-agnostic baselines, the ablations, the rule against the fixed
# budget), then the label-aware baselines, whose SISA and DSMixup shard
# ensembles cost the most.
for pass in first second; do
  for short in ${DATASETS:-mnist fmnist}; do
    for setup in class data; do
      if [ $pass = first ]; then
        setup "$short" "$setup" "base agnostic ablations" "base agnostic"
      else
        setup "$short" "$setup" aware aware
      fi
    done
  done
done
