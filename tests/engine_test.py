"""The engine: end-to-end job, the alternating step, recompiles, NaN handling, config errors."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import experiment
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from tests import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tiny"))
  return workdir, experiment.run(tiny_config.get_config(), workdir)


def test_end_to_end_results_have_every_field(tiny_run):
  workdir, results = tiny_run
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(results))
  assert set(saved["models"]) == {"initial", "retrain", "mixunlearn_aware", "mixunlearn_agnostic"}
  for name, entry in saved["models"].items():
    for metric in ("Test_r", "Test_f", "ASR", "seconds", "examples_per_sec"):
      assert set(entry[metric]) == {"mean", "std", "per_seed"}, (name, metric)
      assert len(entry[metric]["per_seed"]) == 1
    assert entry["seconds"]["mean"] > 0 and entry["examples_per_sec"]["mean"] > 0
    assert set(entry["gap"]) == {"Test_r", "Test_f", "ASR"}
  assert set(saved["timings"]) == set(saved["throughput"]) == set(saved["models"])
  for name in ("mixunlearn_aware", "mixunlearn_agnostic"):
    assert saved["models"][name]["Test_f"]["mean"] < saved["models"]["initial"]["Test_f"]["mean"]
  assert saved["models"]["retrain"]["Test_f"]["mean"] == 0.0  # class 0 never seen
  table = open(os.path.join(workdir, "results.md")).read()
  assert "mixunlearn_agnostic" in table and "distance to Retrain" in table
  assert os.path.exists(os.path.join(workdir, "config.json"))
  events = os.listdir(os.path.join(workdir, "seed_0", "unlearn_mixunlearn_aware"))
  assert any(e.startswith("events.out.tfevents") for e in events)


def test_rerun_resumes_to_identical_results_and_refuses_another_config(tiny_run):
  workdir, results = tiny_run
  again = experiment.run(tiny_config.get_config(), workdir)
  assert again["models"] == results["models"]
  other = tiny_config.get_config()
  other.unlearn.tau_mix = 5.0
  with pytest.raises(ValueError, match="unlearn.tau_mix"):
    experiment.run(other, workdir)


def test_a_workdir_takes_more_seeds_but_no_other_change(tmp_path):
  workdir = str(tmp_path)
  one_seed = tiny_config.get_config()
  experiment.prepare_workdir(one_seed, workdir, overwrite=False)
  more_seeds = tiny_config.get_config()
  more_seeds.seeds = (0, 1, 2)
  experiment.prepare_workdir(more_seeds, workdir, overwrite=False)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["seeds"] == [0, 1, 2]
  assert os.listdir(workdir) == ["config.json"]
  more_seeds.unlearn.alpha = 0.3
  with pytest.raises(ValueError, match=r"\['unlearn.alpha'\]"):
    experiment.prepare_workdir(more_seeds, workdir, overwrite=False)


INTERFACE_FIELDS = ("seeds", "setup", "forget_class", "batch_size", "methods", "data.name",
                    "data.data_dir", "data.manual_dir", "pretrain.epochs", "retrain.epochs",
                    "unlearn.epochs", "unlearn.gen_interval", "checkpoint_every_steps")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))),
                         ids=os.path.basename)
def test_every_config_file_has_the_interface_fields_and_validates(path):
  spec = importlib.util.spec_from_file_location("config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for field in INTERFACE_FIELDS:
    node = config
    for part in field.split("."):
      assert part in node, (os.path.basename(path), field)
      node = node[part]
  assert "python -m mixunlearn_jax.main --config=configs/" in module.__doc__
  experiment.validate(config)


# -- the MixUnlearn step -----------------------------------------------------------


def tiny_program(gen_interval, batch_size=8):
  hp = config_lib.base_config().unlearn
  hp.gen_interval = gen_interval
  model, mesh = models.create("cnn"), parallel.make_mesh()
  initial = supervised.init_variables(model, jax.random.key(0), (8, 8, 1))
  ctx = methods.UnlearnContext(
      model=model, initial=initial, image_shape=(8, 8, 1), num_classes=10, num_forget=40,
      num_remain=100, batch_size=batch_size, config=hp, seed=0, mesh=mesh, run_stage=None)
  return methods.get("mixunlearn_aware").build(ctx), initial, mesh


def paired_batch(step, batch_size=8):
  rng = np.random.default_rng(step)
  return {side: {"image": jnp.asarray(rng.normal(size=(batch_size, 8, 8, 1)), jnp.float32),
                 "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)}
          for side in ("forget", "remain")}


def changed(a, b):
  return any(bool(jnp.any(x != y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_generator_moves_only_every_gen_interval_steps_and_f_d_never():
  program, initial, mesh = tiny_program(gen_interval=3)
  initial_copy = jax.tree.map(np.array, initial)
  traced = chex.assert_max_traces(lambda s, b, i: program.step(s, b, i), n=1)
  step = parallel.jit_step(traced, mesh, num_frozen=1)
  state = program.state
  for i in range(7):
    before = jax.tree.map(np.array, (state.generator, state.unlearner))
    state, metrics = step(state, jax.device_put(paired_batch(i), parallel.data_sharded(mesh)),
                          initial)
    assert changed(before[0], state.generator) == (i % 3 == 0), i
    assert changed(before[1], state.unlearner), i
    assert np.isfinite(float(metrics["l_unlearn"]))
  assert int(state.step) == 7
  assert not changed(initial_copy, initial)


def test_supervised_step_compiles_once():
  model, mesh = models.create("cnn"), parallel.make_mesh()
  tx = optax.adam(1e-3)
  state = supervised.create_train_state(model, tx, jax.random.key(0), (8, 8, 1), mesh)
  traced = chex.assert_max_traces(lambda s, b: supervised.train_step(s, b, model=model, tx=tx),
                                  n=1)
  step = parallel.jit_step(traced, mesh)
  for i in range(4):
    batch = paired_batch(i)["forget"]
    state, metrics = step(state, jax.device_put(batch, parallel.data_sharded(mesh)))
  assert int(state.step) == 4 and np.isfinite(float(metrics["loss"]))


# -- the loop: NaN handling ------------------------------------------------------------


def test_non_finite_loss_stops_with_stage_and_step_and_keeps_last_good_checkpoint(tmp_path):
  state = {"w": jnp.zeros(())}

  def step_fn(state, batch):
    w = state["w"] + 1
    return {"w": w}, {"loss": jnp.where(w >= 7, jnp.nan, w)}

  with pytest.raises(loop.NonFiniteLossError, match=r"seed 3 / pretrain.*step 7"):
    loop.run_stage(name="seed 3 / pretrain", directory=str(tmp_path), state=state,
                   step_fn=step_fn, batches=lambda start: iter(range(start, 20)), num_steps=20,
                   examples_per_step=1, checkpoint_every=3, log_every=1)
  restored = loop.run_stage(name="x", directory=str(tmp_path), state=state,
                            step_fn=lambda s, b: (s, {"loss": jnp.zeros(())}),
                            batches=lambda start: iter(range(start, 6)), num_steps=6,
                            examples_per_step=1, checkpoint_every=100, log_every=100)
  assert float(restored.state["w"]) == 6.0  # the checkpoint of step 6, before the NaN


def test_a_reused_stage_reports_the_time_its_own_run_reported(tmp_path):
  state = {"w": jnp.zeros(())}
  trained = loop.run_stage(name="x", directory=str(tmp_path), state=state,
                           step_fn=lambda s, b: ({"w": s["w"] + 1}, {"loss": s["w"]}),
                           batches=lambda start: iter(range(start, 5)), num_steps=5,
                           examples_per_step=2, checkpoint_every=2, log_every=100)
  reused = loop.restore_finished(str(tmp_path), state)
  assert float(reused.state["w"]) == 5.0
  assert trained.seconds > 0 and reused.seconds == trained.seconds
  assert reused.examples_per_sec == pytest.approx(trained.examples_per_sec)


# -- the CLI ----------------------------------------------------------------------------


def run_cli(workdir, *extra, env_devices=1, timeout=300):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={env_devices}")
  return subprocess.run(
      [sys.executable, "-m", "mixunlearn_jax.main", "--config=tests/tiny_config.py",
       f"--workdir={workdir}", *extra], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=timeout)


def test_cli_config_typo_is_an_error_naming_the_field(tmp_path):
  result = run_cli(tmp_path, "--config.unlearn.tau_mxi=5")
  assert result.returncode != 0
  assert "tau_mxi" in result.stderr


def test_cli_unknown_method_and_bad_batch_size_are_clear_errors(tmp_path):
  result = run_cli(tmp_path / "a", "--config.methods=('mixunlearn_aware','neggrad_typo')")
  assert result.returncode != 0 and "known methods: mixunlearn_agnostic" in result.stderr
  result = run_cli(tmp_path / "b", "--config.batch_size=30", env_devices=4)
  assert result.returncode != 0 and "e.g. 28 or 32" in result.stderr
