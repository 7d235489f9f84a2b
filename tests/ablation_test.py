"""MixUnlearn's ablations as registered variants, and what the MixBlock's masks do with λ."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import experiment
from mixunlearn_jax import losses
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import mixunlearn
from tests import tiny_config

SHAPE = (8, 8, 1)
BATCH = 8
VARIANTS = ("mixunlearn_aware_vanilla_mixup", "mixunlearn_agnostic_vanilla_mixup",
            "mixunlearn_aware_no_real", "mixunlearn_agnostic_no_real",
            "mixunlearn_aware_no_mix", "mixunlearn_agnostic_no_mix",
            "mixunlearn_agnostic_no_sharpen")


@pytest.fixture(scope="module")
def setting():
  model, mesh = models.create("cnn"), parallel.make_mesh()
  initial = supervised.init_variables(model, jax.random.key(0), SHAPE)
  rng = np.random.default_rng(0)
  batch = {side: {"image": rng.normal(size=(BATCH, *SHAPE)).astype(np.float32),
                  "label": rng.integers(0, 10, BATCH).astype(np.int32)}
           for side in ("forget", "remain")}
  return model, mesh, initial, batch


def program_of(name, setting, **overrides):
  model, mesh, initial, _ = setting
  method = methods.get(name)
  hp = method.hyperparameters(config_lib.base_config())
  hp.update(overrides)
  ctx = methods.UnlearnContext(
      model=model, initial=initial, image_shape=SHAPE, num_classes=10, num_forget=40,
      num_remain=100, batch_size=BATCH, config=hp, seed=0, mesh=mesh)
  return method.build(ctx), hp


def inputs_of(setting, hp, label_aware=True):
  model, _, initial, batch = setting
  return mixunlearn.frozen_inputs(initial, jax.tree.map(jnp.asarray, batch), model=model,
                                  num_classes=10, label_aware=label_aware,
                                  sharpen_temperature=hp.sharpen_temperature)


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def size(tree):
  return sum(np.size(x) for x in jax.tree.leaves(tree))


def test_every_ablation_is_a_variant_of_its_label_mode():
  for name in VARIANTS:
    method = methods.get(name)
    base = "mixunlearn_aware" if "_aware_" in name else "mixunlearn_agnostic"
    assert method.variant_of == base and method.labels == methods.get(base).labels
    assert method.section == "mixunlearn" and method.overrides
  assert not methods.get("mixunlearn_aware").variant_of


def test_table_3_alpha_points_fix_alpha_whatever_the_section_says():
  config = config_lib.base_config()
  config.mixunlearn.alpha = 0.5
  for name, alpha in (("mixunlearn_agnostic_vanilla_mixup_alpha035", 0.35),
                      ("mixunlearn_agnostic_vanilla_mixup_alpha150", 1.5)):
    method = methods.get(name)
    hp = method.hyperparameters(config)
    assert (hp.alpha, hp.mixer, method.labels, method.features) == (alpha, "vanilla", "none", ())
  assert methods.get("mixunlearn_agnostic_vanilla_mixup").hyperparameters(config).alpha == 0.5


def test_vanilla_mixture_is_exactly_lambda_x_f_plus_one_minus_lambda_x_r(setting):
  hp = methods.get("mixunlearn_aware_vanilla_mixup").hyperparameters(config_lib.base_config())
  inputs = inputs_of(setting, hp)
  x_f, x_r = (np.asarray(setting[3][s]["image"]) for s in ("forget", "remain"))
  for lam in (np.float32(0.3), np.linspace(0.05, 0.95, BATCH, dtype=np.float32)):
    got = mixunlearn.mixed_images(None, inputs, lam,
                                  mixblock=mixunlearn.make_mixblock(setting[0], hp))
    lam_b = np.reshape(lam, (-1, 1, 1, 1))
    np.testing.assert_array_equal(np.asarray(got), lam_b * x_f + (np.float32(1) - lam_b) * x_r)


def test_vanilla_step_compiles_no_mixblock(setting):
  full, _ = program_of("mixunlearn_aware", setting)
  vanilla, _ = program_of("mixunlearn_aware_vanilla_mixup", setting)
  assert vanilla.state.generator is None and vanilla.state.generator_opt is None
  generator = (full.state.generator, full.state.generator_opt, full.state.generator_metrics)
  assert size(vanilla.state) == size(full.state) - size(generator)
  batch, frozen = setting[3], {"initial": setting[2]}
  hlo = {name: jax.jit(p.phases[0].step).lower(p.state, batch, frozen).as_text()
         for name, p in (("full", full), ("vanilla", vanilla))}
  # The MixBlock's query convolution (feature channels + λ in) appears in no other layer.
  query = "x".join(map(str, full.state.generator["query"]["kernel"].shape)) + "xf32"
  assert query in hlo["full"] and query not in hlo["vanilla"]
  assert hlo["full"].count("stablehlo.case") > hlo["vanilla"].count("stablehlo.case")


def test_no_real_loss_is_l_mix_and_no_mix_loss_is_omega_l_real(setting):
  model, _, initial, _ = setting
  full, _ = program_of("mixunlearn_aware", setting)
  lam = np.float32(0.4)
  for name in ("mixunlearn_aware_no_real", "mixunlearn_aware_no_mix"):
    hp = methods.get(name).hyperparameters(config_lib.base_config())
    inputs = inputs_of(setting, hp)
    mixblock = mixunlearn.make_mixblock(model, hp)
    generator = jax.device_get(full.state.generator) if mixblock else None
    loss, aux = mixunlearn.unlearner_losses(
        initial["params"], initial["batch_stats"], generator, inputs, lam, model=model,
        mixblock=mixblock, mixer=hp.mixer, tau_mix=hp.tau_mix, tau_real=hp.tau_real,
        omega=hp.omega, batchnorm_train=False)
    # Independently: each image set through f_D on its own, the losses.py terms.
    p_f, p_r = (jax.nn.softmax(model.apply(initial, x, train=False)[0])
                for x in (inputs.x_forget, inputs.x_remain))
    l_real = losses.l_real(p_f, p_r, inputs.target_forget, inputs.target_remain, hp.tau_real)
    if name.endswith("no_mix"):
      assert hp.mixer == "none" and "l_mix" not in aux
      np.testing.assert_allclose(loss, hp.omega * l_real, rtol=1e-5)
    else:
      assert hp.omega == 0.0
      x_mix = mixunlearn.mixed_images(generator, inputs, lam, mixblock=mixblock)
      p_mix = jax.nn.softmax(model.apply(initial, x_mix, train=False)[0])
      l_mix = losses.contrastive(p_mix, inputs.target_forget, inputs.target_remain, lam,
                                 hp.tau_mix)
      np.testing.assert_allclose(loss, l_mix, rtol=1e-5)
      np.testing.assert_allclose(aux["l_real"], l_real, rtol=1e-5)  # computed, weighted 0


def test_each_step_logs_its_own_terms_and_the_full_step_the_mask(setting):
  batch, frozen = setting[3], {"initial": setting[2]}
  expected = {"mixunlearn_aware": {"l_unlearn", "l_mix", "l_real", *mixunlearn.GENERATOR_METRICS},
              "mixunlearn_aware_vanilla_mixup": {"l_unlearn", "l_mix", "l_real"},
              "mixunlearn_aware_no_mix": {"l_unlearn", "l_real"}}
  for name, metrics in expected.items():
    program, _ = program_of(name, setting)
    _, logged = jax.eval_shape(program.phases[0].step, program.state, batch, frozen)
    assert set(logged) == metrics, name


def test_no_sharpen_targets_are_f_d_plain_softmax(setting):
  model, _, initial, batch = setting
  logits = np.concatenate([np.asarray(model.apply(initial, batch[s]["image"], train=False)[0])
                           for s in ("forget", "remain")])
  softmax = np_softmax(logits)
  sharpened = softmax ** (1 / 0.3) / (softmax ** (1 / 0.3)).sum(-1, keepdims=True)
  config = config_lib.base_config()
  for name, expected in (("mixunlearn_agnostic_no_sharpen", softmax),
                         ("mixunlearn_agnostic", sharpened)):
    inputs = inputs_of(setting, methods.get(name).hyperparameters(config), label_aware=False)
    got = np.concatenate([inputs.target_forget, inputs.target_remain])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_mask_statistics_and_mask_loss_match_numpy():
  rng = np.random.default_rng(1)
  m0 = rng.uniform(size=(4, 6, 6)).astype(np.float32)
  mask = np.stack([m0, 1 - m0], axis=-1)
  lam = np.array([0.1, 0.5, 0.7, 0.9], np.float32)
  stats = mixunlearn.mask_statistics(mask, lam)
  per_pair = m0.reshape(4, -1).mean(1)
  np.testing.assert_allclose(stats["mask_mean"], m0.mean(), rtol=1e-6)
  np.testing.assert_allclose(stats["mask_lambda_gap"], np.abs(per_pair - lam).mean(), rtol=1e-5)
  np.testing.assert_allclose(stats["mask_spatial_std"], m0.reshape(4, -1).std(1).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(mixunlearn.mask_loss(mask, lam, 0.1),
                             np.maximum(np.abs(per_pair - lam) - 0.1, 0).mean(), rtol=1e-5,
                             atol=1e-7)


def mixblock_masks(lam, **options):
  rng = np.random.default_rng(2)
  feat_f, feat_r = (rng.normal(size=(len(lam), 4, 4, 8)).astype(np.float32) for _ in range(2))
  block = models.MixBlock(**options)
  params = block.init(jax.random.key(0), feat_f, feat_r, lam, (12, 12))
  return np.asarray(block.apply(params, feat_f, feat_r, lam, (12, 12)))


def test_lambda_in_the_logits_makes_the_mask_mean_follow_lambda():
  lam = np.linspace(0.05, 0.95, 8, dtype=np.float32)
  follows = mixblock_masks(lam, lambda_logits=True)[..., 0].mean(axis=(1, 2))
  default = mixblock_masks(lam)[..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(follows, lam, atol=0.02)
  np.testing.assert_allclose(default, 0.5, atol=0.02)  # a fresh MixBlock mixes 50/50


def test_nearest_upsampling_gives_a_blockwise_constant_mask():
  lam = np.full(3, 0.5, np.float32)
  for upsampling, blockwise in (("nearest", True), ("bilinear", False)):
    m0 = mixblock_masks(lam, upsampling=upsampling)[..., 0].reshape(3, 4, 3, 4, 3)
    spread = m0.max(axis=(2, 4)) - m0.min(axis=(2, 4))
    assert (spread.max() == 0) == blockwise, upsampling


# The two steps without a MixBlock, one per label mode. Every variant is a program of its
# own, compiled in 5-30 s here, so the others (the MixBlock's step with other values,
# which the end-to-end job runs as mixunlearn_aware/agnostic) are checked above instead.
JOB_VARIANTS = ("mixunlearn_aware_vanilla_mixup", "mixunlearn_agnostic_no_mix")


def test_a_short_job_lists_variants_in_config_methods_and_reports_them(tmp_path):
  config = tiny_config.get_config()
  config.methods = JOB_VARIANTS
  config.pretrain.epochs = config.retrain.epochs = config.mixunlearn.epochs = 1
  config.checkpoint_every_steps = 1000
  config.asr.trees = 10
  results = experiment.run(config, str(tmp_path))
  assert set(results["models"]) == {"initial", "retrain", *JOB_VARIANTS}
  with open(os.path.join(tmp_path, "results.md")) as f:
    table = f.read()
  for name in JOB_VARIANTS:
    assert f"| {name} |" in table
    with open(os.path.join(tmp_path, "seed_0", "eval", f"{name}.json")) as f:
      assert set(json.load(f)["metrics"]) == {"Test_r", "Test_f", "ASR"}
