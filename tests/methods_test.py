"""The method contract and the baselines: losses against NumPy, streams, label access."""

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
from mixunlearn_jax.methods import neggrad
from mixunlearn_jax.methods import randlabel
from mixunlearn_jax.methods import scrub

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def setting():
  model, mesh = models.create("cnn"), parallel.make_mesh()
  initial = supervised.init_variables(model, jax.random.key(0), SHAPE)
  moved = jax.tree.map(lambda x: x + 0.05 * jnp.sign(x), initial)  # an unlearner away from f_D
  return model, mesh, initial, moved


def context(name, model, mesh, initial, num_forget=37, num_remain=90, **overrides):
  method = methods.get(name)
  hp = method.hyperparameters(config_lib.base_config())
  hp.update(overrides)
  return method, methods.UnlearnContext(
      model=model, initial=initial, image_shape=SHAPE, num_classes=10, num_forget=num_forget,
      num_remain=num_remain, batch_size=8, config=hp, seed=3, mesh=mesh,
      theta0=lambda: initial, recipe={"epochs": 2, "lr": 1e-3, "batch_size": 8},
      run=lambda phase, state, counts=True: state,  # auxiliary models stay untrained here
      forget=np.arange(num_forget), remain=np.arange(num_forget, num_forget + num_remain))


def batch_of(rng, size, labels=True, mask=None, index=None):
  side = {"image": rng.normal(size=(size, *SHAPE)).astype(np.float32)}
  if labels:
    side["label"] = rng.integers(0, 10, size).astype(np.int32)
  if mask is not None:
    side["mask"] = np.asarray(mask, np.float32)
  if index is not None:
    side["index"] = np.asarray(index, np.int32)
  return side


def logits_np(model, variables, images):
  return np.asarray(model.apply(variables, images, train=False)[0], np.float64)


def log_softmax_np(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kd_np(student, teacher, t):
  log_s, log_t = log_softmax_np(student / t), log_softmax_np(teacher / t)
  return t**2 * (np.exp(log_t) * (log_t - log_s)).sum(-1)


def ce_np(z, labels):
  return -log_softmax_np(z)[np.arange(len(labels)), labels]


# -- losses against NumPy ---------------------------------------------------------------


def test_neggrad_loss_matches_numpy(setting):
  model, _, initial, moved = setting
  hp = config_lib.base_config().neggrad
  hp.anchor_weight_decay = 0.3
  rng = np.random.default_rng(0)
  batch = {"remain": batch_of(rng, 6), "forget": batch_of(rng, 4)}
  loss, aux = neggrad.loss_fn(moved["params"], moved["batch_stats"], batch, initial["params"],
                              model=model, hp=hp)
  ce_r = ce_np(logits_np(model, moved, batch["remain"]["image"]), batch["remain"]["label"]).mean()
  ce_f = ce_np(logits_np(model, moved, batch["forget"]["image"]), batch["forget"]["label"]).mean()
  anchor = sum(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64))**2)
               for a, b in zip(jax.tree.leaves(moved["params"]),
                               jax.tree.leaves(initial["params"])))
  expected = hp.alpha * (ce_r + 0.5 * 0.3 * anchor) - (1 - hp.alpha) * ce_f
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(aux["ce_forget"]), ce_f, rtol=1e-5)


def test_scrub_losses_match_numpy_and_ignore_masked_samples(setting):
  model, _, initial, moved = setting
  hp = config_lib.base_config().scrub
  hp.temperature, hp.ce_weight, hp.kd_weight = 2.0, 0.7, 0.4
  rng = np.random.default_rng(1)
  mask = np.array([1, 1, 1, 1, 1, 0, 0], np.float32)
  forget = batch_of(rng, 7, labels=False, mask=mask)
  remain = batch_of(rng, 7, mask=mask)
  kd = lambda x: kd_np(logits_np(model, moved, x), logits_np(model, initial, x), 2.0)  # noqa: E731
  max_loss, _ = scrub.max_loss(moved["params"], moved["batch_stats"], {"forget": forget},
                               initial, model=model, hp=hp)
  np.testing.assert_allclose(float(max_loss), -kd(forget["image"])[:5].mean(), rtol=1e-5)
  min_loss, _ = scrub.min_loss(moved["params"], moved["batch_stats"], {"remain": remain},
                               initial, model=model, hp=hp)
  ce = ce_np(logits_np(model, moved, remain["image"]), remain["label"])
  expected = 0.7 * ce[:5].mean() + 0.4 * kd(remain["image"])[:5].mean()
  np.testing.assert_allclose(float(min_loss), expected, rtol=1e-5)


def test_randlabel_loss_matches_numpy(setting):
  model, _, initial, moved = setting
  rng = np.random.default_rng(2)
  batch = {"forget": batch_of(rng, 5, labels=False), "remain": batch_of(rng, 5, labels=False)}
  targets = np.array([3, 0, 9, 3, 1])
  for outputs in ("probs", "logits"):
    hp = config_lib.base_config().randlabel
    hp.outputs, hp.retain_weight = outputs, 0.3
    loss, _ = randlabel.loss_fn(moved["params"], moved["batch_stats"], batch, initial,
                                jnp.asarray(targets), model=model, hp=hp)
    convert = (lambda z: np.exp(log_softmax_np(z))) if outputs == "probs" else (lambda z: z)
    out_f = convert(logits_np(model, moved, batch["forget"]["image"]))
    out_r = convert(logits_np(model, moved, batch["remain"]["image"]))
    ref_r = convert(logits_np(model, initial, batch["remain"]["image"]))
    expected = ((out_f - np.eye(10)[targets])**2).mean() + 0.3 * ((out_r - ref_r)**2).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_scrub_learning_rate_follows_the_milestones():
  hp = config_lib.base_config().scrub
  hp.lr, hp.lr_milestones = 1.0, (1, 3)
  assert [scrub.epoch_lr(hp, e) for e in (1, 2, 3, 4)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


# -- streams, phases and label access -------------------------------------------------------


def test_scrub_max_phases_read_forget_images_only_and_min_phases_remain(setting):
  model, mesh, initial, _ = setting
  _, ctx = context("scrub", model, mesh, initial, epochs=3, max_epochs=2)
  program = methods.get("scrub").build(ctx)
  names = [phase.name for phase in program.phases]
  assert names == ["epoch1_max", "epoch1_min", "epoch2_max", "epoch2_min", "epoch3_min"]
  for phase in program.phases:
    (key, side), = phase.stream.items()
    if phase.name.endswith("max"):
      assert (key, side.source, side.labels) == ("forget", "forget", False)
      assert phase.num_steps == -(-37 // ctx.config.forget_batch_size)  # one pass over D_f
    else:
      assert (key, side.source, side.labels) == ("remain", "remain", True)
      assert phase.num_steps == -(-90 // ctx.config.remain_batch_size)
    assert side.one_pass


@pytest.mark.parametrize("name", methods.names())
def test_no_method_is_handed_a_label_it_may_not_read(setting, name):
  model, mesh, initial, _ = setting
  method, ctx = context(name, model, mesh, initial)
  for phase in method.build(ctx).phases:
    methods.check_stream(method, phase.stream)  # raises on a violation
    for side in phase.stream.values():
      if method.labels == "none":
        assert not side.labels, (name, phase.name)
      if method.labels == "remain" and side.labels:
        assert side.source == "remain", (name, phase.name)


def test_check_stream_refuses_labels_beyond_the_methods_access():
  method = methods.get("scrub")
  with pytest.raises(ValueError, match="'forget' samples"):
    methods.check_stream(method, {"forget": data.Side("forget", 4, labels=True)})
  agnostic = methods.get("randlabel")
  with pytest.raises(ValueError, match="randlabel may read none labels"):
    methods.check_stream(agnostic, {"remain": data.Side("remain", 4, labels=True)})


def test_a_side_without_labels_yields_no_label_and_one_pass_counts_each_sample_once():
  images = np.arange(23 * 4, dtype=np.uint8).reshape(23, 2, 2, 1)
  labels = np.arange(23, dtype=np.int32)
  forget, remain = np.arange(0, 23, 3), np.setdiff1d(np.arange(23), np.arange(0, 23, 3))
  stream = {"forget": data.Side("forget", 3, index=True, one_pass=True),
            "remain": data.Side("remain", 4, labels=True)}
  per_pass = data.steps_per_pass(stream["forget"], len(forget), len(remain))
  assert per_pass == 3  # 8 forget samples in batches of 3
  batches = list(pipeline.stream_pipeline(
      images, labels, forget, remain, stream, num_steps=2 * per_pass, seed=0,
      preprocess=pipeline.Preprocess((0.0,), (1.0,))))
  assert all(set(b["forget"]) == {"image", "index", "mask"} for b in batches)
  for p in range(2):
    window = batches[p * per_pass:(p + 1) * per_pass]
    seen = np.concatenate([b["forget"]["index"][b["forget"]["mask"] > 0] for b in window])
    np.testing.assert_array_equal(np.sort(seen), forget)  # each exactly once per pass
  for b in batches:
    np.testing.assert_array_equal(b["remain"]["label"][:, None, None, None] * 4,
                                  images[b["remain"]["label"]][:, :1, :1])
    assert set(b["remain"]["label"]) <= set(remain)


def test_mixed_side_holds_all_of_forget_and_a_share_of_remain_with_tags():
  forget, remain = np.arange(10), np.arange(10, 110)
  side = data.Side("mixed", 8, remain_share=0.3)
  rows, mask = data.side_rows(side, forget, remain, seed=1, start_step=0, num_steps=5)
  first_pass = rows.ravel()[:40]  # 10 + 30 samples per pass
  assert set(forget) <= set(first_pass) and len(set(first_pass)) == 40
  assert (mask == 1).all()
  images = np.zeros((110, 1, 1, 1), np.uint8)
  batch = next(pipeline.stream_pipeline(images, np.zeros(110, np.int32), forget, remain,
                                        {"mixed": side}, num_steps=1, seed=1,
                                        preprocess=pipeline.Preprocess((0.0,), (1.0,))))
  np.testing.assert_array_equal(batch["mixed"]["tag"], (rows[0] < 10).astype(np.int32))
  everything = data.Side("all", 10, one_pass=True)
  rows, mask = data.side_rows(everything, forget, remain, seed=1, start_step=0, num_steps=11)
  np.testing.assert_array_equal(np.sort(rows[mask > 0]), np.arange(110))


# -- RandLabel's targets ----------------------------------------------------------------


def test_randlabel_targets_are_fixed_per_sample_across_epochs_and_rebuilds(setting):
  model, mesh, initial, _ = setting
  _, ctx = context("randlabel", model, mesh, initial)
  steps = [methods.get("randlabel").build(ctx).phases[0].step for _ in range(2)]
  keys = [jax.random.key_data(s.keywords["key"]) for s in steps]
  np.testing.assert_array_equal(keys[0], keys[1])  # a resumed run rebuilds the same key
  index = jnp.arange(200)
  first = randlabel.random_targets(steps[0].keywords["key"], index, 10)
  np.testing.assert_array_equal(first, randlabel.random_targets(steps[1].keywords["key"],
                                                                index[::-1], 10)[::-1])
  assert set(np.asarray(first).tolist()) == set(range(10))
  per_epoch = [randlabel.random_targets(steps[0].keywords["key"], index, 10, epoch=e)
               for e in (0, 1)]
  assert (per_epoch[0] != per_epoch[1]).any()  # fixed_targets=False draws anew


def test_randlabel_step_moves_the_forget_outputs_toward_the_drawn_classes(setting):
  model, mesh, initial, _ = setting
  _, ctx = context("randlabel", model, mesh, initial, lr=1e-3)
  program = methods.get("randlabel").build(ctx)
  step = parallel.jit_step(program.phases[0].step, mesh, num_frozen=1)
  rng = np.random.default_rng(0)
  batch = jax.device_put({"forget": batch_of(rng, 8, labels=False, index=np.arange(8)),
                          "remain": batch_of(rng, 8, labels=False)},
                         parallel.data_sharded(mesh))
  state, losses = program.state, []
  for _ in range(20):
    state, metrics = step(state, batch, {"initial": initial})
    losses.append(float(metrics["mse_forget"]))
  assert losses[-1] < 0.5 * losses[0]


# -- variants and the registry ----------------------------------------------------------------


def test_a_variant_overrides_its_base_section_and_refuses_unknown_fields():
  base = methods.get("mixunlearn_agnostic")
  no_sharpen = methods.variant(base, "mixunlearn_agnostic_no_sharpen", sharpen_temperature=0.0)
  config = config_lib.base_config()
  assert no_sharpen.hyperparameters(config).sharpen_temperature == 0.0
  assert base.hyperparameters(config).sharpen_temperature == 0.3
  assert no_sharpen.section == "mixunlearn" and no_sharpen.labels == "none"
  with pytest.raises(ValueError, match="mixunlearn.no_such_field"):
    methods.variant(base, "bad", no_such_field=1).hyperparameters(config)


def test_every_method_has_its_section_in_the_config_with_a_source():
  config = config_lib.base_config()
  for method in methods.all_methods():
    assert method.section in config, method.name
    assert method.source, method.name
    assert method.labels in ("all", "remain", "none")
