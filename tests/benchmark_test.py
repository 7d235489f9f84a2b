"""Smoke test of the benchmark: tiny settings, the JSON's keys and signs, no timings."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from mixunlearn_jax import benchmark
from mixunlearn_jax import data

PHASE_KEYS = ("examples_per_sec", "steps_per_sec", "step_ms", "mean_step_ms", "flops_per_step")


def test_every_named_method_is_timed_through_the_registry_with_positive_numbers(tmp_path):
  names = ("mixunlearn_agnostic", "neggrad", "scrub", "randlabel")
  results = benchmark.run(model_name="cnn", batch_size=8, steps=2, warmup=1, method_names=names,
                          overrides=("neggrad.remain_batch_size=8", "scrub.remain_batch_size=16"),
                          num_forget=40, num_remain=100, dataset=data.load("digits"),
                          pipeline_batches=3, pipeline_warmup=1,
                          compiler_options={"xla_backend_optimization_level": 0})
  path = tmp_path / "bench.json"
  benchmark.write_json(results, str(path))
  with open(path) as f:
    loaded = json.load(f)
  for key in ("device_kind", "device_count", "model", "batch_size", "dtype", "jax_version",
              "examples_per_step", "memory", "overrides"):
    assert key in loaded, key
  assert loaded["model"] == "cnn" and loaded["batch_size"] == 8
  assert loaded["conv_path"] == "xla"  # 4 devices: no oneDNN
  assert loaded["num_params"] == 449_098
  assert "peak_bytes" in loaded["memory"]  # None on CPU
  assert set(loaded["methods"]) == set(names)
  phases = {name: [p["phase"] for p in m["phases"]] for name, m in loaded["methods"].items()}
  assert phases["scrub"] == ["epoch1_max", "epoch1_min"]  # one timing per distinct step
  assert phases["neggrad"] == ["unlearn"]
  for name, method in loaded["methods"].items():
    assert method["examples_per_sec"] > 0, name
    for phase in method["phases"]:
      assert phase["timed_steps"] == 2
      for key in PHASE_KEYS:
        assert phase[key] > 0, (name, phase["phase"], key)
  # An example is one sample of the first side: 8 pairs for MixUnlearn, 8 remain images
  # for NegGrad+ (as overridden), 32 forget images for SCRUB's max phase.
  assert loaded["methods"]["mixunlearn_agnostic"]["phases"][0]["examples_per_step"] == 8
  assert loaded["methods"]["neggrad"]["phases"][0]["examples_per_step"] == 8
  assert loaded["methods"]["scrub"]["phases"][0]["examples_per_step"] == 32
  assert loaded["train_step"]["examples_per_sec"] > 0
  assert loaded["input_pipeline"]["examples_per_sec"] > 0
  assert len(benchmark.summary_lines(loaded)) == 1 + 1 + 1 + 2 + 1 + 1 + 1


def test_an_unknown_method_or_override_is_an_error_naming_it():
  with pytest.raises(ValueError, match="known methods"):
    benchmark.run(method_names=("no_such_method",), steps=1, warmup=0)
  with pytest.raises(ValueError, match="neggrad.no_such_field"):
    benchmark.run(overrides=("neggrad.no_such_field=1",), steps=1, warmup=0)


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
