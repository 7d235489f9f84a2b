#!/usr/bin/env bash
# The benchmark matrix of docs/performance.md: CNN at 28x28 and ResNet-18 at
# 32x32, batch 32 and 128, float32 and bfloat16, MixUnlearn's mixed step (one
# generator step in 4) and the supervised step; JSON per run in OUT and a
# markdown table on stdout. STEPS_RESNET keeps the slow CPU ResNet runs short
# (a multiple of gen_interval 4); MODELS picks the models.
#
#   benchmarks/run_matrix.sh runs/bench
#   MODELS=cnn benchmarks/run_matrix.sh runs/bench
set -euo pipefail
out=${1:-runs/bench}
mkdir -p "$out"
for model in ${MODELS:-cnn resnet18}; do
  steps=20; [ "$model" = resnet18 ] && steps=${STEPS_RESNET:-4}
  for batch in 32 128; do
    for dtype in float32 bfloat16; do
      python -m mixunlearn_jax.benchmark --model=$model --batch_size=$batch --dtype=$dtype \
          --steps=$steps --warmup=1 --out="$out/jax_${model}_b${batch}_${dtype}.json"
    done
  done
done
python - "$out" <<'PY'
import glob, json, sys
print("| model | batch | dtype | convolutions | unlearn pairs/s | ms/step (mean) | train images/s |")
print("|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(f"{sys.argv[1]}/jax_*.json")):
  r = json.load(open(path)); t = r["train_step"]
  u = r["methods"]["mixunlearn_agnostic"]["phases"][0]
  print(f"| {r['model']} | {r['batch_size']} | {r['dtype']} | {r['conv_path']} | "
        f"{u['examples_per_sec']:.1f} | {u['mean_step_ms']:.1f} | {t['examples_per_sec']:.1f} |")
PY
