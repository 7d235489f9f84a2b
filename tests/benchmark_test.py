"""Smoke test of the benchmark: tiny settings, the JSON's keys and signs, no timings."""

import json
import os
import pathlib
import subprocess
import sys

from mixunlearn_jax import benchmark
from mixunlearn_jax import data

REQUIRED = {
    "unlearn_step": ("examples_per_sec", "steps_per_sec", "generator_step_ms", "plain_step_ms",
                     "mix_step_ms", "flops_per_step", "generator_step_flops", "plain_step_flops"),
    "train_step": ("examples_per_sec", "steps_per_sec", "step_ms", "flops_per_step"),
    "input_pipeline": ("examples_per_sec", "batches_per_sec"),
}


def test_cnn_results_have_every_key_and_positive_numbers(tmp_path):
  results = benchmark.run(model_name="cnn", batch_size=8, steps=2, warmup=1,
                          dataset=data.load("digits"), pipeline_batches=3, pipeline_warmup=1,
                          compiler_options={"xla_backend_optimization_level": 0},
                          profile_dir=str(tmp_path / "trace"))
  path = tmp_path / "bench.json"
  benchmark.write_json(results, str(path))
  with open(path) as f:
    loaded = json.load(f)

  for key in ("device_kind", "device_count", "model", "batch_size", "dtype", "jax_version",
              "examples_per_step", "memory"):
    assert key in loaded, key
  assert loaded["model"] == "cnn" and loaded["batch_size"] == 8
  assert loaded["conv_path"] == "xla"  # 4 devices: no oneDNN
  assert loaded["num_params"] == 449_098
  assert "peak_bytes" in loaded["memory"]  # None on CPU
  for section, keys in REQUIRED.items():
    assert loaded[section]["examples_per_step"] == 8
    for key in keys:
      assert loaded[section][key] > 0, (section, key)
  unlearn = loaded["unlearn_step"]
  # The mix spans whole gen_intervals; the generator branch adds work.
  assert unlearn["timed_steps"] == {"generator": 2, "plain": 2, "mix": 4}
  assert unlearn["generator_step_flops"] > unlearn["flops_per_step"] > unlearn["plain_step_flops"]
  assert len(benchmark.summary_lines(loaded)) == 6
  # The profile names XLA operations with the model code they came from.
  for section in ("unlearn_step", "train_step"):
    profile = loaded[section]["profile"]
    assert profile and all(entry["ms_per_step"] > 0 for entry in profile), section
    assert any("Conv_0/conv_general_dilated" in entry["source"] for entry in profile), section
  assert (tmp_path / "trace" / "unlearn_step").is_dir() and (tmp_path / "trace" / "train_step").is_dir()


def test_tcmalloc_launcher_preloads_it_when_found_and_the_benchmark_records_it():
  repo = pathlib.Path(__file__).resolve().parents[1]
  probe = "from mixunlearn_jax import benchmark; print(benchmark.malloc_name())"
  result = subprocess.run([str(repo / "launch" / "tcmalloc.sh"), sys.executable, "-c", probe],
                          cwd=repo, capture_output=True, text=True, check=True)
  found = "no libtcmalloc found" not in result.stderr
  assert result.stdout.split()[-1] == ("tcmalloc" if found else "system"), result.stderr
  env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
  plain = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=env, capture_output=True,
                         text=True, check=True)
  assert plain.stdout.split()[-1] == "system"
