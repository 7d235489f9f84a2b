"""A new user's first hour: refused runs leave nothing behind, the end-of-run summary, --list."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import experiment
from mixunlearn_jax import methods
from mixunlearn_jax.evaluation import plots
from mixunlearn_jax.evaluation import report
from tests import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_config():
  config = tiny_config.get_config()
  config.methods = ()
  config.pretrain.epochs = config.retrain.epochs = 1
  return config


def test_refused_runs_leave_nothing_that_blocks_the_corrected_one(tmp_path):
  workdir = str(tmp_path)
  for field, bad, message in [("forget_class", 42, "forget_class"),
                              ("batch_size", 30, "batch_size=30"),
                              ("data.manual_dir", "no/such/folder", "no/such/folder")]:
    config = quick_config()
    if field == "data.manual_dir":  # MNIST from a folder that does not hold it, offline
      config.data.name, config.data.download = "mnist", False
      config.data.data_dir = str(tmp_path / "tfds")
    config_lib.set_field(config, field, [bad])
    with pytest.raises(ValueError, match=message):
      experiment.run(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json")), field
  results = experiment.run(quick_config(), workdir)
  assert set(results["models"]) == {"initial", "retrain"}


def test_duplicate_seeds_and_methods_are_refused():
  config = quick_config()
  config.seeds = (0, 0)
  with pytest.raises(ValueError, match="repeats a seed"):
    experiment.validate(config)
  config = quick_config()
  config.methods = ("scrub", "scrub")
  with pytest.raises(ValueError, match="repeats a method"):
    experiment.validate(config)


def test_the_cli_ends_with_the_table_and_a_rerun_says_it_was_done(tmp_path):
  args = [sys.executable, "-m", "mixunlearn_jax.main", "--config=tests/tiny_config.py",
          f"--workdir={tmp_path}", "--config.methods=()", "--config.pretrain.epochs=1",
          "--config.retrain.epochs=1"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  first = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                         check=True)
  assert "| retrain |" in first.stdout and "distance to Retrain" in first.stdout
  assert os.path.join(str(tmp_path), "results.md") in first.stdout
  assert "Job wall time" in first.stdout
  assert "Job: model 1 of 2 (seed 0, initial)." in first.stderr
  assert "Job: model 2 of 2 (seed 0, retrain); " in first.stderr and "job eta ~" in first.stderr
  again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                         check=True)
  assert "evaluated already" in again.stderr and "| retrain |" in again.stdout
  # tests/tiny_config.py draws no figures; the report program draws them from the evaluations.
  assert not (tmp_path / "plots").exists()
  subprocess.run([sys.executable, "-m", "mixunlearn_jax.report", f"--workdir={tmp_path}"],
                 cwd=REPO, env=env, capture_output=True, timeout=300, check=True)
  assert (tmp_path / "plots" / "loss_density_seed0.png").stat().st_size > 1000


def test_list_names_every_method_and_print_config_reads_back(tmp_path):
  listing = config_lib.catalogue()
  for method in methods.all_methods():
    assert f"  {method.name} " in listing
  assert "resnet18" in listing and "fashion_mnist" in listing and "noisy" in listing
  config = tiny_config.get_config()
  path = tmp_path / "printed.py"
  path.write_text(config_lib.as_file(config))
  spec = importlib.util.spec_from_file_location("printed", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config().to_dict() == config.to_dict()


def test_the_command_line_programs_import_side_by_side_and_each_defines_its_flags():
  # Two programs defining the same flag at import broke collection of the suite once. One
  # process for all six (a process start costs seconds): each program's flags are defined,
  # named in its help, then removed before the next program defines its own.
  programs = ("main", "sweep", "benchmark", "confidence", "report", "tables")
  code = f"""
import importlib
import re
from absl import flags
modules = [importlib.import_module("mixunlearn_jax." + p) for p in {programs!r}]
before = set(flags.FLAGS)
for program, module in zip({programs!r}, modules):
  module.define_flags()
  own = set(flags.FLAGS) - before
  assert own & {{"workdir", "out"}}, (program, own)
  assert all(re.search(rf"--(\\[no\\])?{{name}}:", flags.FLAGS.get_help()) for name in own), program
  for name in own:
    delattr(flags.FLAGS, name)
"""
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_report_of_an_unfinished_workdir_names_what_is_missing(tmp_path):
  (tmp_path / "seed_0" / "eval").mkdir(parents=True)
  (tmp_path / "config.json").write_text(json.dumps({"methods": ["scrub"], "seeds": [0]}))
  with pytest.raises(FileNotFoundError, match="unfinished.*seed 0: initial.*seed 0: scrub"):
    report.rebuild(str(tmp_path), ("Test_r",))


def test_a_job_s_report_reads_its_own_seeds_not_those_another_process_wrote(tmp_path):
  # Processes that share a workdir, one per seed, each rewrite config.json when they start.
  (tmp_path / "config.json").write_text(json.dumps({"methods": ["scrub"], "seeds": [0]}))
  with pytest.raises(FileNotFoundError, match="unfinished: no evaluation yet of seed 1: initial"):
    report.rebuild(str(tmp_path), ("Test_r",), {"methods": ["scrub"], "seeds": [1]})


def test_the_report_program_reads_the_seeds_it_is_given_over_config_json_s(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"methods": ["scrub"], "seeds": [0],
                                                    "setup": "class"}))
  out = subprocess.run([sys.executable, "-m", "mixunlearn_jax.report", f"--workdir={tmp_path}",
                        "--seeds=0,2"], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 1 and "no evaluation yet of seed 0: initial" in out.stderr, out.stderr
  assert "seed 2: scrub" in out.stderr
  out = subprocess.run([sys.executable, "-m", "mixunlearn_jax.report", f"--workdir={tmp_path}",
                        "--seeds=0,two"], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 1 and "give seeds as integers" in out.stderr, out.stderr


def test_a_job_ends_with_its_own_seeds_table_while_another_process_shares_the_workdir(
    tmp_path, monkeypatch):
  workdir, seed_0 = str(tmp_path), quick_config()
  experiment.run(seed_0, workdir)
  run_seed = experiment.run_seed

  def another_process_starts(job, seed, progress):  # and rewrites config.json for its seed
    other = quick_config()
    other.seeds = (1,)
    experiment.prepare_workdir(other, workdir, overwrite=False)
    run_seed(job, seed, progress)

  monkeypatch.setattr(experiment, "run_seed", another_process_starts)
  assert set(experiment.run(seed_0, workdir)["models"]) == {"initial", "retrain"}
  assert json.loads((tmp_path / "config.json").read_text())["seeds"] == [1]


def test_samples_plot_scales_the_masks_to_their_range(tmp_path):
  rng = np.random.default_rng(0)
  mask0 = 0.49 + 0.02 * rng.random((4, 6, 6, 1))
  image = lambda: rng.normal(size=(4, 6, 6, 1))  # noqa: E731
  samples = {"x_forget": image(), "x_remain": image(), "x_mix": image(), "lam": np.float32(0.3),
             "mask": np.concatenate([mask0, 1 - mask0], -1)}
  low, high = plots.mixed_samples(samples, str(tmp_path / "s.png"))
  assert (low, high) == pytest.approx((mask0.min(), mask0.max()), rel=1e-6)
  assert os.path.getsize(tmp_path / "s.png") > 1000
