"""T-S (bad teaching): targets per tag, the mixed stream, the trained teacher's sub-stage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import teacher_student

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def setting():
  model, mesh = models.create("cnn"), parallel.make_mesh()
  initial = supervised.init_variables(model, jax.random.key(0), SHAPE)
  return model, mesh, initial


def context(model, mesh, initial, *, run=None, num_forget=37, num_remain=90, **overrides):
  method = methods.get("teacher_student")
  hp = method.hyperparameters(config_lib.base_config())
  hp.update(overrides)
  return methods.UnlearnContext(
      model=model, initial=initial, image_shape=SHAPE, num_classes=10, num_forget=num_forget,
      num_remain=num_remain, batch_size=8, config=hp, seed=3, mesh=mesh,
      recipe={"epochs": 2, "lr": 1e-3, "batch_size": 8},
      run=run or (lambda phase, state: state))


def softmax_np(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def logits_np(model, variables, images):
  return np.asarray(model.apply(variables, images, train=False)[0], np.float64)


def test_targets_are_the_incompetent_teachers_on_forget_and_the_competent_ones_on_remain():
  rng = np.random.default_rng(0)
  good, bad = rng.normal(size=(2, 6, 10)) * 3
  tag = np.array([1, 0, 0, 1, 1, 0], np.int32)
  targets = teacher_student.mixed_targets(jnp.asarray(good, jnp.float32),
                                          jnp.asarray(bad, jnp.float32), jnp.asarray(tag), 2.0)
  expected = np.where(tag[:, None] == 1, softmax_np(bad / 2.0), softmax_np(good / 2.0))
  np.testing.assert_allclose(np.asarray(targets), expected, rtol=1e-5)


@pytest.mark.parametrize("form", ["split", "single"])
def test_loss_matches_numpy_with_each_teacher_on_its_tag_and_padding_ignored(setting, form):
  model, _, initial = setting
  competent = jax.tree.map(lambda x: x + 0.05 * jnp.sign(x), initial)
  incompetent = supervised.init_variables(model, jax.random.key(7), SHAPE)
  student = supervised.init_variables(model, jax.random.key(8), SHAPE)
  hp = config_lib.base_config().teacher_student
  hp.update(form=form, temperature=2.0, retain_weight=0.3)
  rng = np.random.default_rng(1)
  tag = np.array([1, 0, 1, 0, 0, 1, 0, 1], np.int32)
  mask = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # the last two: padding
  side = {"image": rng.normal(size=(8, *SHAPE)).astype(np.float32), "tag": tag, "mask": mask}
  loss, _ = teacher_student.loss_fn(
      student["params"], student["batch_stats"], {"mixed": side},
      {"competent": competent, "incompetent": incompetent}, model=model, hp=hp)

  def softened(variables):
    return softmax_np(logits_np(model, variables, side["image"]) / 2.0)

  q_bad, q_good, p = softened(incompetent), softened(competent), softened(student)
  kl_to = lambda q: (q * (np.log(q) - np.log(p))).sum(-1)  # noqa: E731
  forget, retain = (tag == 1) & (mask == 1), (tag == 0) & (mask == 1)
  if form == "split":
    expected = kl_to(q_bad)[forget].mean() + 0.3 * kl_to(q_good)[retain].mean()
  else:
    kl = np.where(tag == 1, kl_to(q_bad), kl_to(q_good))
    expected = kl[mask == 1].mean() / 10
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("share", [0.3, 0.55])
def test_each_epoch_holds_all_of_forget_and_the_configured_share_of_remain(setting, share):
  model, mesh, initial = setting
  ctx = context(model, mesh, initial, competent_teacher="initial", epochs=3, batch_size=16,
                remain_share=share)
  (phase,) = methods.get("teacher_student").build(ctx).phases
  (key, side), = phase.stream.items()
  assert (key, side.source, side.labels, side.one_pass) == ("mixed", "mixed", False, True)
  per_epoch = int(np.ceil((37 + round(share * 90)) / 16))
  assert phase.num_steps == 3 * per_epoch
  forget, remain = np.arange(100, 137), np.arange(200, 290)
  rows, mask = data.side_rows(side, forget, remain, seed=5, start_step=0,
                              num_steps=phase.num_steps)
  remain_seen = []
  for epoch in range(3):
    window = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
    seen = rows[window][mask[window] > 0]
    assert len(set(seen)) == len(seen)  # no sample twice in an epoch
    np.testing.assert_array_equal(np.sort(seen[seen < 200]), forget)
    remain_seen.append(set(seen[seen >= 200]))
    assert remain_seen[-1] <= set(remain) and len(remain_seen[-1]) == round(share * 90)
  assert remain_seen[0] != remain_seen[1]  # a fresh share of D_r per pass
  images = np.zeros((290, *SHAPE), np.uint8)
  batches = pipeline.stream_pipeline(images, np.zeros(290, np.int32), forget, remain,
                                     phase.stream, num_steps=per_epoch, seed=5,
                                     preprocess=pipeline.Preprocess((0.0,), (1.0,)))
  for step, batch in enumerate(batches):
    assert "label" not in batch["mixed"]  # the loss reads no class label
    np.testing.assert_array_equal(batch["mixed"]["tag"], rows[step] < 200)


def test_trained_teacher_is_a_remain_sub_stage_and_becomes_the_competent_teacher(setting):
  model, mesh, initial = setting
  ran = []

  def run(phase, state):  # stands in for the engine's checkpointed sub-stage
    ran.append(phase)
    return state.replace(params=jax.tree.map(lambda x: x + 1.0, state.params))

  ctx = context(model, mesh, initial, run=run, teacher_epochs=4)
  program = methods.get("teacher_student").build(ctx)
  (phase,) = ran
  (side,) = phase.stream.values()
  assert (phase.name, side.source, side.labels) == ("teacher", "remain", True)
  assert phase.num_steps == 4 * int(np.ceil(90 / 8))  # teacher_epochs passes over D_r
  methods.check_stream(methods.get("teacher_student"), phase.stream)
  fresh = supervised.init_variables(model, jax.random.key(3), SHAPE)  # key(seed)
  for got, want in zip(jax.tree.leaves(program.frozen["competent"]), jax.tree.leaves(fresh)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want) + 1.0, rtol=1e-6)
  pairs = list(zip(jax.tree.leaves(program.frozen["incompetent"]), jax.tree.leaves(fresh),
                   jax.tree.leaves(initial)))
  assert all(i.shape == f.shape for i, f, _ in pairs)
  # Random and untrained: neither the trained teacher's start nor f_D.
  assert any(not np.allclose(i, f) for i, f, _ in pairs)
  assert any(not np.allclose(i, f_d) for i, _, f_d in pairs)
