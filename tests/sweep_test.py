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
  table, chosen = sweep.run_sweep(config, str(tmp_path), grid)
  assert chosen == {}  # without --tune nothing is chosen
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
  assert sweep.run_sweep(config, str(tmp_path), grid)[0]["mixunlearn.gen_interval"][3] == runs[3]
  assert os.path.getmtime(saved) == mtime


def test_a_base_that_reuses_another_workdir_passes_it_on(tmp_path):
  source = tmp_path / "source"
  sweep.run_sweep(small_config(), str(source), [])
  config = small_config()
  config.pretrain.reuse_workdir = config.retrain.reuse_workdir = str(source / "base")
  sweep.run_sweep(config, str(tmp_path / "chained"), [("mixunlearn.alpha", [0.5])])
  with open(tmp_path / "chained" / "mixunlearn.alpha=0.5" / "config.json") as f:
    assert json.load(f)["pretrain"]["reuse_workdir"] == str(source / "base")


def test_tune_chooses_each_grid_s_value_closest_to_retrain_and_runs_the_next_grid_with_it(
    tmp_path):
  config = small_config()
  config.methods = ("randlabel",)
  config.randlabel.epochs = 1
  grids = [("randlabel.retain_weight", [0.0001, 100.0]), ("randlabel.lr", [1e-4, 3e-2])]
  table, chosen = sweep.run_sweep(config, str(tmp_path), grids, tune=True)
  for field, runs in table.items():
    distances = {v: r["models"]["randlabel"]["distance_to_retrain"] for v, r in runs.items()}
    assert len(set(distances.values())) == 2, distances  # the values make a difference
    assert chosen[field] == min(distances, key=distances.get)
  weight = chosen["randlabel.retain_weight"]
  for lr in (1e-4, 3e-2):  # the second grid ran with the first grid's choice
    with open(tmp_path / f"randlabel.retain_weight={weight},randlabel.lr={lr}" / "config.json") as f:
      point = json.load(f)["randlabel"]
    assert (point["retain_weight"], point["lr"]) == (weight, lr)
  text = sweep.markdown(table, chosen)
  assert f"## randlabel.lr (with --config.randlabel.retain_weight={weight})" in text
  assert (f"--config.randlabel.retain_weight={weight} "
          f"--config.randlabel.lr={chosen['randlabel.lr']}") in text
  config.methods = ("randlabel", "lmix")
  with pytest.raises(ValueError, match="one method"):
    sweep.run_sweep(config, str(tmp_path), grids, tune=True)


def test_a_diverged_point_is_never_chosen():
  finished = {"models": {"neggrad": {"distance_to_retrain": 9.0}}}
  runs = {0.1: {"models": {}}, 1.0: finished, 10.0: {"models": {}}}  # 0.1, 10 diverged
  assert sweep.closest(runs, "neggrad", default=0.5) == 1.0
  assert sweep.closest({0.1: {"models": {}}}, "neggrad", default=0.5) == 0.5
  table = {"neggrad.alpha": {0.1: {"metrics": ["Test"], "models": {}}}}
  assert ("Chosen: neggrad.alpha=0.5 (every value diverged: the value it ran with, kept)"
          in sweep.markdown(table, {"neggrad.alpha": 0.5}))
