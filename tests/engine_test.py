"""The engine: end-to-end job, the alternating step, recompiles, NaN handling, config errors."""

import functools
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax import losses
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import identity
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import common
from tests import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A baseline written here, through the contract alone: fine-tune f_D on D_r with CE.
def _finetune_step(state, batch, frozen, *, model, tx):
  del frozen

  def loss_fn(params):
    logits, _, stats = common.forward(model, params, state.variables["batch_stats"],
                                      batch["remain"]["image"], train=False)
    return common.masked_mean(losses.cross_entropy(logits, batch["remain"]["label"])), stats

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.variables["params"])
  return common.apply_gradients(state, grads, stats, tx), {"loss": loss}


def _finetune_build(ctx):
  tx = common.optimizer("adam", ctx.config.lr)
  stream = {"remain": data.Side("remain", 16, labels=True)}
  phase = methods.Phase("unlearn", stream, functools.partial(_finetune_step, model=ctx.model,
                                                             tx=tx), ctx.config.steps)
  return methods.Program(common.init_state(ctx, tx), (phase,), lambda state: state.variables)


FINETUNE = methods.Method(
    "finetune_remain", "remain", _finetune_build, "finetune_remain",
    lambda: ml_collections.ConfigDict({"steps": 12, "lr": 1e-3}), source="a test's own baseline")
methods.register(FINETUNE)


# GLI never trains on D_f, only on perturbed D_r images (BASELINES.md §9): on digits
# no budget tried (lr up to 5e-2, K up to 5, 5 epochs) moved Test_f off 100.
DOES_NOT_FORGET_CLASS_0 = {"gli"}


def test_end_to_end_results_have_every_field_and_every_method_forgets(tiny_job):
  workdir, _ = tiny_job
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  config = tiny_config.get_config()
  # Every registered method (but this file's own) is in the end-to-end and resume tests;
  # variants (ablations) run their base's step with other values (tests/ablation_test.py).
  bases = {m.name for m in methods.all_methods() if not m.variant_of}
  assert set(config.methods) == bases - {FINETUNE.name}
  assert set(saved["models"]) == {"initial", "retrain", *config.methods}
  for name, entry in saved["models"].items():
    for metric in ("Test_r", "Test_f", "ASR", "seconds", "examples_per_sec"):
      assert set(entry[metric]) == {"mean", "std", "per_seed"}, (name, metric)
      assert len(entry[metric]["per_seed"]) == 1
    assert entry["seconds"]["mean"] > 0 and entry["examples_per_sec"]["mean"] > 0
    assert set(entry["gap"]) == {"Test_r", "Test_f", "ASR"}
  assert set(saved["timings"]) == set(saved["throughput"]) == set(saved["models"])
  initial_test_f = saved["models"]["initial"]["Test_f"]["mean"]
  for name in config.methods:  # the digits budgets of tiny_config forget
    forgets = saved["models"][name]["Test_f"]["mean"] <= 0.5 * initial_test_f
    assert forgets != (name in DOES_NOT_FORGET_CLASS_0), name
  assert saved["models"]["retrain"]["Test_f"]["mean"] == 0.0  # class 0 never seen
  table = open(os.path.join(workdir, "results.md")).read()
  assert "mixunlearn_agnostic" in table and "distance to Retrain" in table
  assert "compile (s)" in table and saved["models"]["neggrad"]["compile_seconds"]["mean"] > 0
  assert os.path.exists(os.path.join(workdir, "config.json"))
  events = os.listdir(os.path.join(workdir, "seed_0", "unlearn_mixunlearn_aware"))
  assert any(e.startswith("events.out.tfevents") for e in events)
  assert os.path.isdir(os.path.join(workdir, "seed_0", "unlearn_scrub", "epoch1_max"))
  with open(os.path.join(workdir, "seed_0", "eval", "mixunlearn_aware.json")) as f:
    assert json.load(f)["compile_seconds"] > 0  # recorded apart from the stage's time


def test_rerun_resumes_to_identical_results_and_refuses_a_changed_stage(tiny_job, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(tiny_job[0], workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  again = experiment.run(tiny_config.get_config(), workdir)
  assert json.loads(json.dumps(again["models"])) == results["models"]
  other = tiny_config.get_config()
  other.mixunlearn.tau_mix = 5.0
  with pytest.raises(ValueError, match=r"unlearn_mixunlearn_aware \(mixunlearn.tau_mix\)"):
    experiment.run(other, workdir)


def _mtimes(workdir):
  """{path: mtime} of every file of a workdir but the tables and plots rebuilt each run."""
  rebuilt = ("results.json", "results.md", "config.json")
  paths = [os.path.join(root, f) for root, _, files in os.walk(workdir) for f in files
           if f not in rebuilt and "plots" not in root]
  return {os.path.relpath(path, workdir): os.stat(path).st_mtime_ns for path in paths}


def _changed(before, after):
  return sorted({p for p in after if before.get(p) != after[p]}
                | {p for p in before if p not in after})


def test_a_finished_workdir_takes_a_new_method_and_redoes_only_a_changed_one(tiny_job, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(tiny_job[0], workdir)
  config = tiny_config.get_config()
  config.methods = (*config.methods, "finetune_remain")
  config.log_every_steps = 3  # operational: no stage depends on it
  before = _mtimes(workdir)
  results = experiment.run(config, workdir)
  changed = _changed(before, _mtimes(workdir))
  assert changed and all("finetune_remain" in p or p == "seed_0/identity.json" for p in changed)
  assert results["models"]["finetune_remain"]["Test_f"]["mean"] > 50  # it never forgets

  config.randlabel.lr = 2e-3
  with pytest.raises(ValueError, match=r"unlearn_randlabel \(randlabel.lr\)"):
    experiment.run(config, workdir)
  before = _mtimes(workdir)
  experiment.run(config, workdir, overwrite=True)
  changed = _changed(before, _mtimes(workdir))
  assert changed and all("randlabel" in p or p == "seed_0/identity.json" for p in changed)
  assert any(p.startswith("seed_0/unlearn_randlabel/checkpoints") for p in changed)


def test_a_method_with_finite_losses_but_nan_outputs_is_recorded_as_diverged(
    tiny_job, tmp_path, monkeypatch):
  # SCRUB stopped by the guard right after a step that blew its weights up: every logged
  # loss finite, every output NaN (the attacker's binning used to raise on them).
  workdir = str(tmp_path / "copy")
  shutil.copytree(tiny_job[0], workdir)
  evaluated = experiment.probabilities  # only the new method is left to evaluate
  monkeypatch.setattr(experiment, "probabilities",
                      lambda *args: [p * np.nan for p in evaluated(*args)])
  config = tiny_config.get_config()
  config.methods = (*config.methods, "finetune_remain")
  results = experiment.run(config, workdir)
  assert "finetune_remain" not in results["models"]
  # Diverged at its last step: the one its last checkpoint was saved at.
  checkpoints = os.path.join(workdir, "seed_0", "unlearn_finetune_remain", "checkpoints")
  last_step = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert results["diverged"]["finetune_remain"][0] == {
      "stage": "seed_0/unlearn_finetune_remain", "step": last_step, "values": {"outputs": "nan"}}
  assert set(results["models"]) == {"initial", "retrain", *tiny_config.get_config().methods}


def test_a_workdir_takes_more_seeds_and_checks_only_recorded_stages(tmp_path):
  workdir = str(tmp_path)
  one_seed = tiny_config.get_config()
  experiment.prepare_workdir(one_seed, workdir, overwrite=False)
  more_seeds = tiny_config.get_config()
  more_seeds.seeds = (0, 1, 2)
  experiment.prepare_workdir(more_seeds, workdir, overwrite=False)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["seeds"] == [0, 1, 2]
  assert os.listdir(workdir) == ["config.json"]
  identity.record(os.path.join(workdir, "seed_1"), "pretrain",
                  identity.stage_fields(more_seeds, "pretrain"))
  more_seeds.pretrain.lr = 0.5
  # A recorded stage that saved nothing (it failed at once) blocks nothing...
  experiment.prepare_workdir(more_seeds, workdir, overwrite=False)
  os.makedirs(os.path.join(workdir, "seed_1", "pretrain", "checkpoints", "5"))
  # ...one that saved a checkpoint does.
  with pytest.raises(ValueError, match=r"seed 1: pretrain \(pretrain.lr\)"):
    experiment.prepare_workdir(more_seeds, workdir, overwrite=False)
  more_seeds.pretrain.lr = one_seed.pretrain.lr
  more_seeds.retrain.lr = 0.5  # no retrain stage recorded: nothing to refuse
  experiment.prepare_workdir(more_seeds, workdir, overwrite=False)


def test_stage_identity_separates_operational_fields_and_method_sections():
  config = tiny_config.get_config()
  fields = identity.stage_fields(config, "pretrain")
  assert "pretrain.lr" in fields and "batch_size" in fields and "data.name" in fields
  assert not {"retrain.lr", "mixunlearn.lr", "log_every_steps", "data.manual_dir",
              "model.cpu_onednn", "eval_batch_size", "asr.trees"} & set(fields)
  scrub_fields = identity.stage_fields(config, "unlearn_scrub", methods.get("scrub"))
  assert "scrub.lr" in scrub_fields and "pretrain.lr" in scrub_fields
  assert "mixunlearn.lr" not in scrub_fields and "retrain.lr" not in scrub_fields
  ablation = methods.variant(methods.get("mixunlearn_aware"), "no_real", omega=0.0)
  assert identity.stage_fields(config, "x", ablation)["mixunlearn.omega"] == 0.0


INTERFACE_FIELDS = ("seeds", "setup", "forget_class", "batch_size", "methods", "data.name",
                    "data.data_dir", "data.manual_dir", "pretrain.epochs", "retrain.epochs",
                    "mixunlearn.epochs", "mixunlearn.gen_interval", "checkpoint_every_steps")


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
  hp = config_lib.base_config().mixunlearn
  hp.gen_interval = gen_interval
  model, mesh = models.create("cnn"), parallel.make_mesh()
  initial = supervised.init_variables(model, jax.random.key(0), (8, 8, 1))
  ctx = methods.UnlearnContext(
      model=model, initial=initial, image_shape=(8, 8, 1), num_classes=10, num_forget=40,
      num_remain=100, batch_size=batch_size, config=hp, seed=0, mesh=mesh)
  return methods.get("mixunlearn_aware").build(ctx), {"initial": initial}, mesh


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
  traced = chex.assert_max_traces(lambda s, b, i: program.phases[0].step(s, b, i), n=1)
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
  assert float(reused.state["w"]) == 5.0 and trained.steps == reused.steps == 5
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
  result = run_cli(tmp_path, "--config.mixunlearn.tau_mxi=5")
  assert result.returncode != 0
  assert "tau_mxi" in result.stderr


def test_cli_unknown_method_and_bad_batch_size_are_clear_errors(tmp_path):
  result = run_cli(tmp_path / "a", "--config.methods=('mixunlearn_aware','neggrad_typo')")
  assert result.returncode != 0 and "neggrad_typo" in result.stderr
  assert "known methods: " in result.stderr and "mixunlearn_agnostic" in result.stderr
  result = run_cli(tmp_path / "b", "--config.batch_size=30", env_devices=4)
  assert result.returncode != 0 and "e.g. 28 or 32" in result.stderr
