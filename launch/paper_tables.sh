#!/usr/bin/env bash
# The paper's Tables 1-6 on the datasets these machines hold: MNIST and
# Fashion-MNIST at class and data level (every method, MixUnlearn's ablations),
# MNIST noisy (label-aware methods) and semi (label-agnostic), each beside the
# paper's numbers; and the stopping rule against each method's fixed budget
# (README, "Stopping rule").
#
#   launch/paper_tables.sh [runs] [extra overrides, e.g. --config.seeds='(0,)']
#
# Per dataset and setup, the base workdir trains Retrain and runs MixUnlearn;
# the label-aware baselines, the label-agnostic ones and the ablations run in
# workdirs of their own that reuse f_D and Retrain (class and data level share
# the class level's f_D: same data, same seeds). Class- and data-level runs
# check the stopping rule without stopping (stop.dry_run): the held-out pool
# it needs (100 training images per class) is left out of D, so D is 1.7%
# smaller than the paper's. Then MixUnlearn and the baselines run again with
# the rule on (<base>_rule*, same f_D and Retrain). tables.py writes
# <runs>/<dataset>_<setup>_table.md from the finished workdirs: the paper's
# layout, then each method's fixed budget against the rule.
# Every job resumes where it was killed: run the same command again to go on.
# Workdirs evaluated before LAF's protocol was added are refused until run once
# with --overwrite, which redoes their evaluations (and any stage whose settings
# changed since), no other training.
#
# SEEDS (default '(0,1,2)'), DATASETS (default 'mnist fmnist'), LEVELS (the
# setups, default 'class data noisy semi'; noisy and semi belong to the third
# pass and MNIST) and PASSES (default '1 2 3') choose the runs; two launchers may
# run side by side on different datasets or levels (a data-level launcher
# started before the class level's base exists trains its own f_D, the same
# model, and keeps it), on different seeds, or on different groups of one
# setting: ONLY (default: all) names the groups to run, of base, vanilla,
# agnostic, aware, ablations, rule, rule_agnostic and rule_aware, e.g.
# ONLY='base agnostic rule rule_agnostic ablations' beside ONLY='aware rule_aware'
# (a group that reuses the base's f_D and Retrain waits until they are
# evaluated). On 2 CPU cores, run one launcher per core, each
# single-threaded (XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c N
# ...): the first pass took 2.1 h for Fashion-MNIST class level and 2.3 h for
# MNIST data level (its own f_D; its last 20 minutes split by seed over both
# cores) on 2026-12-01, 3 seeds; the second pass's
# SISA and DSMixup shard ensembles cost more; the semi setup's Mean Teacher
# about 47 minutes per seed for f_D.
set -euo pipefail
source "$(dirname "$0")/paper_workdirs.sh"
runs=${1:-runs}
shift || true
extra=("$@")
seeds=${SEEDS:-(0,1,2)}
datasets=${DATASETS:-mnist fmnist}
levels=${LEVELS:-class data noisy semi}
passes=${PASSES:-1 2 3}
declare -A methods
methods[base]="'mixunlearn_aware','mixunlearn_agnostic'"
# Cheapest first, so that a launcher stopped midway has finished the most methods.
methods[aware]="'neggrad','boundary_shrink','gli','scrub','unrolling','laf_r','sisa','dsmixup',\
'teacher_student'"
methods[agnostic]="'laf','randlabel','lmix'"
methods[ablations]="'mixunlearn_agnostic_vanilla_mixup_alpha035','mixunlearn_agnostic_vanilla_mixup',\
'mixunlearn_agnostic_vanilla_mixup_alpha150','mixunlearn_agnostic_no_real',\
'mixunlearn_agnostic_no_mix','mixunlearn_agnostic_no_sharpen'"
# The first pass runs the ablation that says what the generator adds (issue 19).
methods[vanilla]="'mixunlearn_agnostic_vanilla_mixup'"
declare -A raw=([mnist]=mnist [fmnist]=fashion_mnist)
declare -A config=([class]=class [data]=data [noisy]=data [semi]=semi)

# main <workdir> <methods> [overrides...]
main() {
  local workdir=$1 methods=$2
  shift 2
  python -m mixunlearn_jax.main "${common[@]}" --workdir="$workdir" \
      --config.methods="($methods)" "$@"
}

# setup <short> <setup> <groups> <rule groups> [<base methods>]: the
# fixed-budget runs of the groups (workdir suffixes of the base; "base" is the
# base itself, "vanilla" runs in the ablations' workdir), the rule's runs, then
# the table of everything finished for this dataset and setup. The noisy and
# semi setups train their own f_D and run without the rule.
setup() {
  local short=$1 setup=$2 groups=$3 rule_groups=$4 base_methods=${5:-${methods[base]}}
  local base="$runs/${short}_${setup}_paper"
  # Retrain lives in each base; a reused stage is not passed on, so each run names f_D's own.
  local f_d stop=(--config.stop.enabled=True --config.stop.dry_run=True)
  f_d=$(f_d_workdir "$runs" "$short" "$setup")
  if [ "$setup" = noisy ] || [ "$setup" = semi ]; then stop=(); fi
  # Both attack protocols: the spec's is the ASR column, LAF's (the paper's numbers) one beside it.
  common=(--config=configs/${short}_${config[$setup]}.py --config.setup=$setup --config.seeds="$seeds"
          --config.data.manual_dir=../shared/datasets/${raw[$short]}
          --config.asr.protocols="('spec','laf')" "${extra[@]}")
  local reuse=(--config.pretrain.reuse_workdir="$f_d" --config.retrain.reuse_workdir="$base")
  local group first=()
  [ "$f_d" != "$base" ] && first=(--config.pretrain.reuse_workdir="$f_d")
  for group in $groups; do
    wanted "$group" || continue
    [ "$group" = base ] || await_base "$f_d" "$base"
    case $group in
      base) main "$base" "$base_methods" "${stop[@]}" "${first[@]}" ;;
      vanilla) main "${base}_ablations" "${methods[vanilla]}" "${stop[@]}" "${reuse[@]}" ;;
      *) main "${base}_$group" "${methods[$group]}" "${stop[@]}" "${reuse[@]}" ;;
    esac
  done
  for group in $rule_groups; do
    local workdir
    workdir=$(rule_workdir "$base" "$group")
    wanted "${workdir#"${base}_"}" || continue
    await_base "$f_d" "$base"
    # SISA's and DSMixup's shard ensembles (work before any deletion request) are taken
    # from the fixed-budget run where it has evaluated them: about 18 minutes of a core per
    # seed on MNIST data level.
    local shards=()
    [ "$group" = aware ] && shards=(--config.method_setup_reuse_workdir="${base}_aware")
    main "$workdir" "${methods[$group]}" --config.stop.enabled=True "${reuse[@]}" "${shards[@]}"
  done
  # A table that fails to build says why and leaves the runs going.
  python -m mixunlearn_jax.tables --out="$runs/${short}_${setup}_table.md" \
      --workdirs="$(existing "$base" "${base}_aware" "${base}_agnostic" "${base}_ablations")" \
      --rule_workdirs="$(existing "${base}_rule" "${base}_rule_aware" "${base}_rule_agnostic")" \
      || echo "paper_tables.sh: no table for $short $setup (above: why); the runs go on." >&2
}

# seed_list: SEEDS' numbers, space separated.
seed_list() {
  tr -d '() ' <<< "$seeds" | tr ',' ' '
}

# wanted <group>: whether ONLY names the group (every group when ONLY is unset).
wanted() {
  [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]
}

# wanted_level <setup>: whether LEVELS names the setup.
wanted_level() {
  [[ " $levels " == *" $1 "* ]]
}

# await_base <f_d workdir> <base>: returns once every seed's f_D and Retrain are
# evaluated (at once, unless another launcher is still training them).
await_base() {
  local seed said=""
  for seed in $(seed_list); do
    until [ -f "$1/seed_$seed/eval/initial.json" ] && [ -f "$2/seed_$seed/eval/retrain.json" ]; do
      [ -n "$said" ] || echo "paper_tables.sh: waiting for seed $seed's f_D ($1) and Retrain ($2)." >&2
      said=1
      sleep 30
    done
  done
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

# Three passes: first what issues 19 and 21 need (MixUnlearn, vanilla mixup
# in place of the MixBlock, the label-agnostic baselines, the rule
# against the fixed budget), then the label-aware baselines, whose SISA and
# DSMixup shard ensembles cost the most, and the other ablations; last the
# noisy (label-aware methods) and semi (label-agnostic) setups on MNIST.
if [[ " $passes " == *" 1 "* ]]; then
  for short in $datasets; do
    for level in class data; do wanted_level "$level" && setup "$short" "$level" "base vanilla agnostic" "base agnostic"; done
  done
fi
if [[ " $passes " == *" 2 "* ]]; then
  for short in $datasets; do
    for level in class data; do wanted_level "$level" && setup "$short" "$level" "aware ablations" aware; done
  done
fi
if [[ " $passes " == *" 3 "* ]] && [[ " $datasets " == *" mnist "* ]]; then
  if wanted_level noisy; then setup mnist noisy "base aware" "" "'mixunlearn_aware'"; fi
  if wanted_level semi; then setup mnist semi "base agnostic" "" "'mixunlearn_agnostic'"; fi
fi
