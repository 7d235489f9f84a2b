"""The sweep helper: typed grids, one run per value, models trained once and reused."""

import json
import os

import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import sweep
from tests import tiny_config


def small_config():
  c = tiny_config.get_config()
  c.methods = ("mixunlearn_agnostic",)
  c.pretrain.epochs = c.retrain.epochs = 1
  c.mixunlearn.epochs = 2
  return c


def test_parse_grid_types_values_like_the_field_and_rejects_typos():
  config = small_config()
  assert config_lib.parse_override("mixunlearn.gen_interval=1,8", config) == ("mixunlearn.gen_interval", [1, 8])
  assert config_lib.parse_override("mixunlearn.alpha=0.3,1", config) == ("mixunlearn.alpha", [0.3, 1.0])
  with pytest.raises(ValueError, match="mixunlearn.alpah"):
    config_lib.parse_override("mixunlearn.alpah=0.3", config)


def test_sweep_runs_each_value_and_reuses_the_base_models(tmp_path):
  config = small_config()
  # lr 1e30 sends NegGrad+'s weights to infinity in its first step: its loss becomes NaN,
  # the job records it as diverged and goes on to the next method.
  config.methods = ("neggrad", "mixunlearn_agnostic")
  config.neggrad.update(epochs=1, lr=1e30)
  grid = [("mixunlearn.gen_interval", [1, 3])]
  table = sweep.run_sweep(config, str(tmp_path), grid)
  for value in (1, 3):
    with open(tmp_path / f"mixunlearn.gen_interval={value}" / "config.json") as f:
      point = json.load(f)
    assert point["mixunlearn"]["gen_interval"] == value
    assert point["pretrain"]["reuse_workdir"] == str(tmp_path / "base")
    assert not os.path.exists(tmp_path / f"mixunlearn.gen_interval={value}" / "seed_0" / "pretrain")
  runs = table["mixunlearn.gen_interval"]
  # The reused initial model is the base's, so its metrics are identical.
  assert runs[1]["models"]["initial"]["Test_r"] == runs[3]["models"]["initial"]["Test_r"]
  markdown = sweep.markdown(table)
  assert "## mixunlearn.gen_interval" in markdown and "| 3 | mixunlearn_agnostic |" in markdown
  assert "| 3 | neggrad | diverged |" in markdown
  record = runs[3]["diverged"]["neggrad"][0]
  assert record["stage"] == "seed_0/unlearn_neggrad" and record["values"]["loss"] == "nan"
  with open(tmp_path / "mixunlearn.gen_interval=3" / "results.md") as f:
    assert "Diverged" in f.read()
  # Run again: a diverged method counts as finished, so nothing is trained again.
  saved = tmp_path / "mixunlearn.gen_interval=3" / "seed_0" / "eval" / "neggrad.json"
  mtime = os.path.getmtime(saved)
  assert sweep.run_sweep(config, str(tmp_path), grid)["mixunlearn.gen_interval"][3] == runs[3]
  assert os.path.getmtime(saved) == mtime


def test_a_base_that_reuses_another_workdir_passes_it_on(tmp_path):
  source = tmp_path / "source"
  sweep.run_sweep(small_config(), str(source), [])
  config = small_config()
  config.pretrain.reuse_workdir = config.retrain.reuse_workdir = str(source / "base")
  sweep.run_sweep(config, str(tmp_path / "chained"), [("mixunlearn.alpha", [0.5])])
  with open(tmp_path / "chained" / "mixunlearn.alpha=0.5" / "config.json") as f:
    assert json.load(f)["pretrain"]["reuse_workdir"] == str(source / "base")

