"""The semi setup (Mean Teacher's f_D and Retrain on partly hidden labels) and the noisy
setup, each end to end on digits."""

import os

import jax
import numpy as np
import optax
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import identity
from mixunlearn_jax.engine import mean_teacher
from mixunlearn_jax.engine import parallel
from tests import tiny_config
from tests.jobs import FREQUENT, command, metrics_of, run, start_and_kill

IMAGE_SHAPE = (8, 8, 1)


# A 2-step ramp-up and EMA decays far apart, so each shows.
SCHEDULE = mean_teacher.Schedule(consistency_weight=10.0, rampup_steps=2, ema_decay_rampup=0.5,
                                 ema_decay=0.9, input_noise=0.15, translate=1)


def semi_batch(step, batch_size=8):
  """A batch as the semi pipeline makes it: hidden labels are NO_LABEL."""
  rng = np.random.default_rng(step)
  labelled = rng.random(batch_size) < 0.5
  labelled[:2] = True, False  # both kinds in every batch
  labels = np.where(labelled, rng.integers(0, 10, batch_size), pipeline.NO_LABEL)
  return {"image": rng.normal(size=(batch_size, *IMAGE_SHAPE)).astype(np.float32),
          "label": labels.astype(np.int32), "labelled": labelled}


@pytest.fixture(scope="module")
def mean_teacher_step():
  """(a new CNN's state, the jitted step): tests step copies of the state, so they compare."""
  model, mesh, tx = models.create("cnn"), parallel.make_mesh(), optax.adam(1e-2)
  state = mean_teacher.create_state(model, tx, jax.random.key(0), jax.random.key(1),
                                    IMAGE_SHAPE, mesh)
  return state, parallel.jit_step(mean_teacher.train_step, mesh, model=model, tx=tx,
                                  schedule=SCHEDULE)


def copy(state):
  """A copy to donate to the step."""
  return jax.tree.map(lambda x: x.copy(), state)


def host(tree):
  return jax.tree.map(np.array, tree)


# -- the Mean Teacher step ------------------------------------------------------------


def test_teacher_is_the_ema_of_the_students_parameters(mean_teacher_step):
  state, step = mean_teacher_step
  state = copy(state)
  students = [host(state.params)]
  for t in range(5):
    state, _ = step(state, semi_batch(t))
    students.append(host(state.params))
  # NumPy: the teacher starts as the student; after step t (t = 1..5) it is
  # d teacher + (1 - d) student_t, d = 0.5 for the ramp-up's two steps, then 0.9.
  expected = students[0]
  for t in range(1, 6):
    d = 0.5 if t <= 2 else 0.9
    expected = jax.tree.map(lambda e, s, d=d: d * e.astype(np.float64) + (1 - d) * s,
                            expected, students[t])
  teacher = host(state.teacher["params"])
  for got, want, student in zip(jax.tree.leaves(teacher), jax.tree.leaves(expected),
                                jax.tree.leaves(students[-1])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, student)  # the teacher lags the student
  assert int(state.step) == 5


def test_hidden_labels_contribute_no_cross_entropy(mean_teacher_step):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(16, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 16).astype(np.int32)
  labelled = rng.random(16) < 0.4
  # NumPy: -log softmax at the label, summed over labelled samples, over the whole batch.
  log_probs = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
  expected = -np.sum(np.where(labelled, log_probs[np.arange(16), labels], 0.0)) / 16
  np.testing.assert_allclose(mean_teacher.class_cost(logits, labels, labelled), expected,
                             rtol=1e-5)

  # A whole step: what the hidden labels say changes nothing; a known label does.
  batch = semi_batch(0)
  hidden = ~batch["labelled"]
  other_hidden = dict(batch, label=np.where(hidden, (batch["label"] + 3) % 10, batch["label"]))
  other_known = dict(batch, label=np.where(hidden, batch["label"], (batch["label"] + 3) % 10))
  after = {}
  for name, b in [("as_given", batch), ("other_hidden", other_hidden),
                  ("other_known", other_known)]:
    state, scalars = mean_teacher_step[1](copy(mean_teacher_step[0]), b)
    after[name] = host((state.params, state.teacher, state.opt_state, scalars))
  same = lambda a, b: all(np.array_equal(x, y)  # noqa: E731
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(after["as_given"], after["other_hidden"])
  assert not same(after["as_given"], after["other_known"])


def test_noise_is_independent_for_student_and_teacher_and_fits_any_image_size():
  key = jax.random.key(3)
  for shape in [(4, 8, 8, 1), (2, 28, 28, 1), (2, 13, 7, 3)]:
    images = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    shifted = np.asarray(mean_teacher.translate(key, images, 2))
    assert shifted.shape == shape
    # Each image is its reflect-padded self cropped at one offset in [-2, 2]^2.
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    h, w = shape[1:3]
    for image, result in zip(padded, shifted):
      assert any(np.array_equal(image[i:i + h, j:j + w], result)
                 for i in range(5) for j in range(5))
  student, teacher = jax.random.split(key)
  images = np.zeros((4, 8, 8, 1), np.float32)
  a = mean_teacher.perturb(student, images, SCHEDULE)
  b = mean_teacher.perturb(teacher, images, SCHEDULE)
  assert not np.allclose(a, b)
  np.testing.assert_allclose(np.std(a), 0.15, rtol=0.2)  # the Gaussian noise's scale


def test_consistency_weight_follows_the_sigmoid_rampup():
  for step, rampup in [(0, 10), (3, 10), (10, 10), (25, 10), (7, 0)]:
    t = min(step / rampup, 1.0) if rampup else 1.0
    np.testing.assert_allclose(mean_teacher.sigmoid_rampup(step, rampup),
                               np.exp(-5 * (1 - t) ** 2), rtol=1e-6)


def test_train_pipeline_carries_the_labelled_flag_and_hides_the_labels():
  n = 300
  images = np.zeros((n, 4, 4, 1), np.uint8)  # each image spells its own index
  images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) % 256, np.arange(n) // 256
  labels = (np.arange(n) * 7 % 10).astype(np.int32)
  labelled = np.random.default_rng(0).random(n) < 0.4
  indices = np.arange(50, n)
  batches = list(pipeline.train_pipeline(
      images, labels, indices, batch_size=25, num_steps=12, seed=3,
      preprocess=pipeline.Preprocess((0.0,), (1 / 255,)), labelled=labelled))
  seen = set()
  for batch in batches:
    rows = np.rint(batch["image"][:, 0, 0, 0] + 256 * batch["image"][:, 0, 1, 0]).astype(int)
    seen.update(rows)
    np.testing.assert_array_equal(batch["labelled"], labelled[rows])
    np.testing.assert_array_equal(batch["label"], np.where(labelled[rows], labels[rows], -1))
  assert seen == set(indices)


def test_consistency_cost_is_the_mse_of_the_softmax_outputs():
  rng = np.random.default_rng(1)
  student, teacher_logits = rng.normal(size=(2, 16, 10))
  softmax = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # noqa: E731
  expected = np.mean((softmax(student) - softmax(teacher_logits)) ** 2)
  np.testing.assert_allclose(
      mean_teacher.consistency_cost(student.astype(np.float32),
                                    softmax(teacher_logits).astype(np.float32)),
      expected, rtol=1e-5)


# -- the setups' rules ------------------------------------------------------------------


@pytest.mark.parametrize("name", methods.names())
def test_semi_setup_admits_only_label_agnostic_methods(name):
  config = tiny_config.get_config()
  config.setup, config.methods = "semi", (name,)
  if methods.get(name).labels == "none":
    experiment.validate(config)
  else:
    with pytest.raises(ValueError, match=f"semi setup .* label-agnostic .*'{name}'"):
      experiment.validate(config)


def test_mean_teacher_fields_are_part_of_f_d_and_retrain_in_the_semi_setup_only():
  config = tiny_config.get_config()
  agnostic = methods.get("mixunlearn_agnostic")
  assert not any(field.startswith("mean_teacher.")
                 for stage in ("split", "pretrain", "retrain")
                 for field in identity.stage_fields(config, stage))
  config.setup = "semi"
  for stage, method in [("pretrain", None), ("retrain", None), ("unlearn", agnostic)]:
    assert "mean_teacher.ema_decay" in identity.stage_fields(config, stage, method)
  assert "mean_teacher.ema_decay" not in identity.stage_fields(config, "split")


# -- the setups end to end ----------------------------------------------------------------

# tests/tiny_config.py with two epochs per stage, no checkpoint but the last, a smaller
# attacker and no t-SNE. Digits' epochs are 45 steps: the authors' EMA decays (0.99, then
# 0.999) average over hundreds of steps, more than these whole runs, so a shorter memory;
# and no translation: on 8x8 digits a shift of two pixels costs f_D 20 points of Test.
SHORT = {"pretrain.epochs": 2, "retrain.epochs": 2, "mixunlearn.epochs": 2,
         "mean_teacher.rampup_epochs": 1, "mean_teacher.ema_decay_rampup": 0.9,
         "mean_teacher.ema_decay": 0.95, "mean_teacher.translate": 0,
         "checkpoint_every_steps": 10_000, "asr.trees": 20, "tsne.samples": 0}


def tiny(setup, method):
  c = tiny_config.get_config()
  for field, value in {**SHORT, "setup": setup}.items():
    config_lib.set_field(c, field, [value])
  c.methods = (method,)
  return c


def table_rows(workdir):
  """{model: its results.md row's cells}, and the header's cells."""
  with open(os.path.join(workdir, "results.md")) as f:
    lines = [line for line in f.read().splitlines() if line.startswith("|")]
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
  return {row[0]: row[1:] for row in cells[2:]}, cells[0]


@pytest.fixture(scope="module")
def semi_job(tmp_path_factory):
  """(workdir, results, the supervised pipelines' arguments, the Mean Teacher steps' schedules)
  of the semi job with label-agnostic MixUnlearn, run in this process."""
  workdir = str(tmp_path_factory.mktemp("semi"))
  pipelines, schedules = [], []
  real_pipeline, real_step = data.train_pipeline, mean_teacher.train_step

  def spy_pipeline(*args, **kwargs):
    pipelines.append(kwargs)
    return real_pipeline(*args, **kwargs)

  def spy_step(state, batch, **kwargs):  # runs when jit traces the step: once per stage
    schedules.append(kwargs["schedule"])
    return real_step(state, batch, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(data, "train_pipeline", spy_pipeline)
    patch.setattr(mean_teacher, "train_step", spy_step)
    results = experiment.run(tiny("semi", "mixunlearn_agnostic"), workdir)
  return workdir, results, pipelines, schedules


def test_semi_job_trains_f_d_and_retrain_with_mean_teacher_and_writes_a_table(semi_job):
  workdir, results, pipelines, schedules = semi_job
  config = tiny("semi", "mixunlearn_agnostic")
  split = data.Split.load(os.path.join(workdir, "seed_0", "split.npz"))
  assert abs(np.mean(split.labelled) - (1 - config.unlabelled_fraction)) < 0.05
  stages = {kwargs["seed"]: kwargs for kwargs in pipelines}
  pretrain = stages[experiment.derive_seed(0, "pretrain")]
  retrain = stages[experiment.derive_seed(0, "retrain")]
  np.testing.assert_array_equal(pretrain["indices"], np.arange(len(split.train_labels)))
  np.testing.assert_array_equal(retrain["indices"], split.remain)
  for stage in (pretrain, retrain):  # the same labels hidden from both
    np.testing.assert_array_equal(stage["labelled"], split.labelled)
  # Mean Teacher's step for both, each ramping up over one epoch of its own data.
  assert [s.rampup_steps for s in schedules] == [
      data.steps_per_epoch(n, config.batch_size)
      for n in (len(split.train_labels), len(split.remain))]

  rows, header = table_rows(workdir)
  assert {"initial", "retrain", "mixunlearn_agnostic"} <= set(rows)
  assert {"Train_r", "Train_f", "Test", "ASR"} <= set(header)
  for name in ("initial", "retrain"):  # the teachers learnt from 40% of the labels
    assert results["models"][name]["Test"]["mean"] > 80


def test_sigkill_in_mean_teacher_pretraining_then_rerun_gives_identical_metrics(
    semi_job, tmp_path):
  # The same f_D and Retrain as the job above (same fields, four devices), without methods.
  flags = [f"--config.{field}={value}" for field, value in {**SHORT, "setup": "semi"}.items()]
  flags.append("--config.methods=()")
  pattern = str(tmp_path / "seed_0" / "pretrain" / "checkpoints" / "2")
  assert start_and_kill(command(tmp_path, *flags, FREQUENT), 4, pattern), f"ran past {pattern}"
  assert not os.path.exists(tmp_path / "seed_0" / "eval" / "initial.json")
  run(tmp_path, *flags, devices=4)
  reference = metrics_of(semi_job[0])
  assert metrics_of(tmp_path) == {name: reference[name] for name in ("initial", "retrain")}


def test_noisy_job_runs_end_to_end_and_writes_a_table(tmp_path):
  results = experiment.run(tiny("noisy", "mixunlearn_aware"), str(tmp_path))
  rows, header = table_rows(tmp_path)
  assert {"initial", "retrain", "mixunlearn_aware"} <= set(rows)
  assert {"Train_r", "Train_f", "Test", "ASR"} <= set(header)
  models_ = results["models"]
  # D_f carries wrong labels (Train_f scores against them): Retrain, which never saw
  # them, agrees with few; f_D, trained on them, with more.
  assert models_["retrain"]["Train_f"]["mean"] < 20 < models_["retrain"]["Train_r"]["mean"]
  assert models_["initial"]["Train_f"]["mean"] > models_["retrain"]["Train_f"]["mean"]
