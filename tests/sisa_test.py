"""SISA and DSMixup: the vmapped shard step, which shards retrain, their data, the vote."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn import datasets as sk_datasets

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import common
from mixunlearn_jax.methods import sisa
from mixunlearn_jax.models import conv

SHAPE = (8, 8, 1)
NUM_TRAIN = 120
PLAIN = pipeline.Preprocess((0.0,), (1.0,))


def context(name, model, forget, *, run, **overrides):
  method = methods.get(name)
  hp = method.hyperparameters(config_lib.base_config())
  hp.update(dict(shards=4, epochs=2, lr=1e-3, batch_size=8), **overrides)
  remain = np.setdiff1d(np.arange(NUM_TRAIN), forget)
  return method, methods.UnlearnContext(
      model=model, initial=None, image_shape=SHAPE, num_classes=10, num_forget=len(forget),
      num_remain=len(remain), batch_size=8, config=hp, seed=5, mesh=parallel.make_mesh(),
      run=run, forget=np.asarray(forget), remain=remain)


def layout_of(slices=1):
  return sisa.shard_slices(np.arange(NUM_TRAIN), 4, slices, seed=5)


class Runner:
  """Trains phases as the engine would (enter, then the steps on the phase's stream)."""

  def __init__(self, method, forget):
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 256, (NUM_TRAIN, *SHAPE), dtype=np.uint8)
    self.labels = rng.integers(0, 10, NUM_TRAIN).astype(np.int32)
    self.method, self.forget = method, np.asarray(forget)
    self.remain = np.setdiff1d(np.arange(NUM_TRAIN), forget)
    self.setup = []

  def __call__(self, phase, state, counts=True):
    methods.check_stream(self.method, phase.stream, phase.sets, self.forget)
    state = jax.jit(phase.enter)(state)
    step = jax.jit(phase.step)
    for batch in pipeline.stream_pipeline(self.images, self.labels, self.forget, self.remain,
                                          phase.stream, num_steps=phase.num_steps, seed=1,
                                          preprocess=PLAIN, sets=phase.sets):
      state, _ = step(state, batch, {})
    if not counts:
      self.setup.append(state)
    return state

  def program(self, program):
    state = program.state
    for phase in program.phases:
      state = self(phase, state)
    return program.result(state)


def params_of(variables, i):
  return jax.tree.map(lambda x: np.asarray(x[i]), variables["params"])


def bitwise_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# -- the step -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["xla", "onednn"])
def test_vmapped_shard_step_equals_separate_single_model_steps(path):
  model = models.CNN(conv_general_dilated=functools.partial(
      conv.conv_general_dilated, onednn=path == "onednn"))
  # SGD: Adam's division by sqrt(v) would blow float-order noise in a near-zero
  # gradient up to a step of lr (its update is elementwise, the same code either way).
  num_models, batch_size, lr = 3, 8, 0.05
  keys = jax.random.split(jax.random.key(0), num_models)
  singles = [supervised.init_variables(model, key, SHAPE) for key in keys]
  tx = common.optimizer("sgd", lr)
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *singles)
  state = sisa.EnsembleState(jnp.zeros(num_models, jnp.int32), jnp.full(num_models, 9),
                             stacked, jax.vmap(tx.init)(stacked["params"]))
  rng = np.random.default_rng(1)
  batches = [{f"shard{i}": {"image": rng.normal(size=(batch_size, *SHAPE)).astype(np.float32),
                            "label": rng.integers(0, 10, batch_size).astype(np.int32)}
              for i in range(num_models)} for _ in range(2)]
  step = jax.jit(functools.partial(sisa.step, model=model, tx=tx,
                                   keys=tuple(f"shard{i}" for i in range(num_models))))
  if path == "onednn":
    assert "Onednn" in step.lower(state, batches[0], {}).as_text()  # batched custom calls
  for batch in batches:
    state, _ = step(state, batch, {})
  reference = jax.jit(functools.partial(supervised.train_step, model=model, tx=optax.sgd(lr)))
  for i, variables in enumerate(singles):
    single = supervised.TrainState(jnp.zeros((), jnp.int32), variables["params"], {},
                                   optax.sgd(lr).init(variables["params"]))
    for batch in batches:
      single, _ = reference(single, batch[f"shard{i}"])
    for got, want in zip(jax.tree.leaves(params_of(state.variables, i)),
                         jax.tree.leaves(single.params)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state.step, [2] * num_models)


def test_a_held_model_stays_bit_for_bit():
  model = models.create("cnn")
  tx = common.optimizer("adam", 1e-3)
  variables = jax.vmap(lambda k: supervised.init_variables(model, k, SHAPE))(
      jax.random.split(jax.random.key(0), 2))
  state = sisa.EnsembleState(jnp.zeros(2, jnp.int32), jnp.asarray([1, 0]), variables,
                             jax.vmap(tx.init)(variables["params"]))
  batch = {k: {"image": np.ones((8, *SHAPE), np.float32), "label": np.zeros(8, np.int32)}
           for k in ("a", "b")}
  new, metrics = jax.jit(functools.partial(sisa.step, model=model, tx=tx, keys=("a", "b")))(
      state, batch, {})
  assert not bitwise_equal(params_of(new.variables, 0), params_of(variables, 0))
  assert bitwise_equal(params_of(new.variables, 1), params_of(variables, 1))
  assert int(metrics["models_training"]) == 1 and list(new.step) == [1, 0]


# -- which shards retrain -----------------------------------------------------------------


def test_a_forget_set_inside_one_shard_retrains_that_shard_only():
  forget = layout_of()[2][0][:5]
  runner = Runner(methods.get("sisa"), forget)
  method, ctx = context("sisa", models.create("cnn"), forget, run=runner)
  ensemble = runner.program(method.build(ctx))
  initial = runner.setup[-1].variables
  assert jax.tree.leaves(ensemble["params"])[0].shape[0] == 4
  for s in range(4):
    unchanged = bitwise_equal(params_of(ensemble, s), params_of(initial, s))
    assert unchanged == (s != 2), s


def test_dsmixup_pools_affected_shards_in_pairs_and_keeps_the_others():
  layout = layout_of()
  forget = np.concatenate([layout[s][0][:3] for s in (0, 1, 3)])
  runner = Runner(methods.get("dsmixup"), forget)
  method, ctx = context("dsmixup", models.create("cnn"), forget, run=runner)
  program = method.build(ctx)
  (phase,) = program.phases
  np.testing.assert_array_equal(np.sort(phase.sets["shards0+1"]),
                                np.setdiff1d(np.concatenate([layout[0][0], layout[1][0]]), forget))
  assert list(phase.sets) == ["shards0+1", "shard3"]
  ensemble = runner.program(program)
  # Shard 2's model, then the pooled model for shards 0 and 1, then shard 3's retrained one.
  assert jax.tree.leaves(ensemble["params"])[0].shape[0] == 3
  initial = runner.setup[-1].variables
  assert bitwise_equal(params_of(ensemble, 1), params_of(initial, 2))
  assert not bitwise_equal(params_of(ensemble, 0), params_of(initial, 0))
  assert not bitwise_equal(params_of(ensemble, 2), params_of(initial, 3))


def test_the_class_setup_retrains_every_shard():
  labels = sk_datasets.load_digits().target[:1437]
  forget = np.flatnonzero(labels == 0)
  for slices in (1, 3):
    layout = sisa.shard_slices(np.arange(len(labels)), 5, slices, seed=0)
    units = sisa.plan(layout, forget)
    assert [shards for shards, _ in units] == [(s,) for s in range(5)]
    for (shard,), first in units:  # the first slice holding a class-0 sample
      assert np.isin(layout[shard][first - 1], forget).any()
      assert not np.isin(np.concatenate(layout[shard][:first - 1] or [[]]), forget).any()
    pairs = sisa.plan(layout, forget, group_size=2)
    assert pairs == [((0, 1), 1), ((2, 3), 1), ((4,), units[4][1])]


def test_no_retrained_model_ever_reads_a_forget_index():
  layout = layout_of(slices=3)
  forget = np.concatenate([layout[0][1][:4], layout[1][2][:2], layout[3][0][:1]])
  for name in ("sisa", "dsmixup"):
    method, ctx = context(name, models.create("cnn"), forget, slices=3, epochs=3,
                          run=lambda phase, state, counts=True: state)
    program = method.build(ctx)
    assert [p.name for p in program.phases] == ["retrain_slice1", "retrain_slice2",
                                                "retrain_slice3"]
    for phase in program.phases:
      assert set(phase.sets) == set(phase.stream)
      for side in phase.stream.values():
        rows, _ = pipeline.side_rows(side, forget, ctx.remain, seed=3, start_step=0,
                                     num_steps=4 * phase.num_steps, sets=phase.sets)
        assert not np.isin(rows, forget).any(), (name, phase.name, side.source)
      batches = pipeline.stream_pipeline(
          np.zeros((NUM_TRAIN, *SHAPE), np.uint8), np.zeros(NUM_TRAIN, np.int32), forget,
          ctx.remain, phase.stream, num_steps=phase.num_steps, seed=3, preprocess=PLAIN,
          sets=phase.sets)
      assert all(not b[k]["tag"].any() for b in batches for k in b)


def test_sisa_retrains_from_the_slice_before_the_first_deletion():
  layout = layout_of(slices=3)
  forget = np.concatenate([layout[1][1][:2], layout[2][2][:2]])  # shard 1: slice 2, shard 2: 3
  method, ctx = context("sisa", models.create("cnn"), forget, slices=3, epochs=3,
                        run=lambda phase, state, counts=True: state)
  program = method.build(ctx)
  assert [p.name for p in program.phases] == ["retrain_slice2", "retrain_slice3"]
  limits = [np.asarray(p.enter.keywords["limit"]) for p in program.phases]
  assert limits[0][0] > 0 and limits[0][1] == 0  # shard 2 waits for stage 3
  assert (limits[1] > 0).all()


# -- prediction -----------------------------------------------------------------------------


def numpy_vote(logits):
  votes = np.argmax(logits, -1)  # [M, N]; the lowest class among a model's equal logits
  counts = np.stack([np.bincount(v, minlength=logits.shape[-1]) for v in votes.T])
  return np.argmax(counts, -1)  # the lowest class among equal counts


def test_the_vote_equals_a_numpy_vote_ties_included():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 200, 5)).astype(np.float32)
  logits[:, :20] = np.eye(5, dtype=np.float32)[[3, 3, 1, 1]][:, None]  # 2-2: class 1 wins
  logits[:, 20:40] = np.eye(5, dtype=np.float32)[[4, 2, 0, 3]][:, None]  # 1-1-1-1: class 0
  logits[:2, 40:60] = 0.0  # two models with all logits equal vote for class 0
  want = numpy_vote(logits)
  assert (want[:20] == 1).all() and (want[20:40] == 0).all()
  shares = np.asarray(sisa.vote(jnp.asarray(logits)))
  np.testing.assert_array_equal(np.argmax(shares, -1), want)
  np.testing.assert_allclose(shares.sum(-1), 1.0, rtol=1e-6)
  softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(sisa.vote(jnp.asarray(logits), "softmax")),
                             softmax.mean(0), rtol=1e-5)


def test_the_attack_reads_the_mean_softmax_and_accuracy_the_vote():
  method, ctx = context("sisa", models.create("cnn"), np.arange(3),
                        run=lambda phase, state, counts=True: state)
  program = method.build(ctx)
  variables = program.result(program.state)
  images = np.random.default_rng(0).normal(size=(6, *SHAPE)).astype(np.float32)
  logits = np.asarray(sisa.ensemble_logits(ctx.model, variables, images))
  np.testing.assert_array_equal(np.argmax(program.predict(variables, images), -1),
                                numpy_vote(logits))
  np.testing.assert_allclose(program.attack_predict(variables, images),
                             np.asarray(jax.nn.softmax(logits)).mean(0), rtol=1e-5)


# -- the contract change ------------------------------------------------------------------


def test_named_sets_leave_the_paired_batches_of_mixunlearn_unchanged():
  forget, remain = np.arange(0, 60, 3), np.setdiff1d(np.arange(60), np.arange(0, 60, 3))
  stream = data.paired_stream(4, labels=True)
  sets = {"extra": remain[:10], "other": np.arange(5)}
  for with_sets in (None, sets):
    for key, source_stream in [("forget", pipeline.FORGET_STREAM),
                               ("remain", pipeline.REMAIN_STREAM)]:
      rows, _ = pipeline.side_rows(stream[key], forget, remain, seed=7, start_step=0,
                                   num_steps=30, sets=with_sets)
      want = pipeline.stream_rows({"forget": forget, "remain": remain}[key], 4, seed=7,
                                  stream=source_stream, start_step=0, num_steps=30)
      np.testing.assert_array_equal(rows, want)
  images = np.arange(60, dtype=np.uint8).reshape(60, 1, 1, 1)
  run = lambda s: list(pipeline.stream_pipeline(  # noqa: E731
      images, np.arange(60), forget, remain, stream, num_steps=12, seed=7, preprocess=PLAIN,
      sets=s))
  for plain, extended in zip(run(None), run(sets)):
    for key in stream:
      np.testing.assert_array_equal(plain[key]["image"], extended[key]["image"])
      np.testing.assert_array_equal(plain[key]["label"], extended[key]["label"])


def test_a_named_set_has_its_own_stream_and_labels_only_inside_remain_for_remain_methods():
  forget, remain = np.arange(5), np.arange(5, 40)
  side = data.Side("mine", 4, labels=True)
  rows = [pipeline.side_rows(side, forget, remain, seed=0, start_step=0, num_steps=5,
                             sets=sets)[0] for sets in ({"mine": remain}, {"mine": remain,
                                                                           "b": forget})]
  np.testing.assert_array_equal(rows[0], rows[1])  # adding a set changes no other set's rows
  assert set(rows[0].ravel()) <= set(remain)
  scrub = methods.get("scrub")  # reads remain labels only
  methods.check_stream(scrub, {"x": side}, {"mine": remain}, forget)
  with pytest.raises(ValueError, match="'mine' samples"):
    methods.check_stream(scrub, {"x": side}, {"mine": np.arange(3, 9)}, forget)
  with pytest.raises(ValueError, match="neither one of"):
    pipeline.side_rows(side, forget, remain, seed=0, start_step=0, num_steps=1)
