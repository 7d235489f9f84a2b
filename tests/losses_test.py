"""Losses against an independent NumPy implementation, and where gradients flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import losses
from mixunlearn_jax import models
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import mixunlearn

RTOL = 1e-5


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_sim(a, b):
  cos = (a * b).sum(-1) / (np.maximum(np.linalg.norm(a, axis=-1), 1e-8)
                           * np.maximum(np.linalg.norm(b, axis=-1), 1e-8))
  return 1 - cos


def np_logsumexp(x):
  m = x.max()
  return m + np.log(np.exp(x - m).sum())


def np_contrastive(p, tf, tr, lam, tau):
  return np.mean((1 - lam) * np_sim(p, tr)) - np_logsumexp(lam * np_sim(p, tf) / tau)


def probs(seed, shape=(16, 10), scale=3.0):
  return np_softmax(np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float64)


def test_sharpen_matches_definition():
  q = probs(0)
  expected = q ** (1 / 0.3) / (q ** (1 / 0.3)).sum(-1, keepdims=True)
  np.testing.assert_allclose(losses.sharpen(jnp.asarray(q, jnp.float32), 0.3), expected, rtol=RTOL)


def test_sim_loss_matches_numpy_and_is_zero_for_parallel_vectors():
  a, b = probs(1), probs(2)
  np.testing.assert_allclose(losses.sim_loss(jnp.asarray(a, jnp.float32),
                                             jnp.asarray(b, jnp.float32)), np_sim(a, b),
                             rtol=RTOL, atol=1e-6)
  np.testing.assert_allclose(losses.sim_loss(jnp.asarray(a), jnp.asarray(3 * a)), 0, atol=1e-6)


@pytest.mark.parametrize("lam", [0.3, np.linspace(0.05, 0.95, 16)])
@pytest.mark.parametrize("tau", [1.0, 20.0])
def test_contrastive_matches_numpy(lam, tau):
  p, tf, tr = probs(3), probs(4), probs(5)
  got = losses.contrastive(*(jnp.asarray(x, jnp.float32) for x in (p, tf, tr)), lam, tau)
  np.testing.assert_allclose(got, np_contrastive(p, tf, tr, lam, tau), rtol=RTOL)


def test_l_real_and_l_unlearn_match_numpy():
  pf, pr, tf, tr = probs(6), probs(7), probs(8), probs(9)
  expected = np.mean(np_sim(pr, tr)) - np_logsumexp(np_sim(pf, tf) / 20.0)
  got = losses.l_real(*(jnp.asarray(x, jnp.float32) for x in (pf, pr, tf, tr)), 20.0)
  np.testing.assert_allclose(got, expected, rtol=RTOL)
  np.testing.assert_allclose(losses.l_unlearn(1.5, got, 10.0), 1.5 + 10 * expected, rtol=RTOL)


def test_losses_are_float32_for_bfloat16_inputs():
  p = jnp.asarray(probs(10), jnp.bfloat16)
  assert losses.contrastive(p, p, p, 0.5, 1.0).dtype == jnp.float32
  assert losses.l_real(p, p, p, p, 20.0).dtype == jnp.float32


def test_cross_entropy_matches_numpy():
  logits = np.random.default_rng(11).normal(size=(8, 10))
  labels = np.arange(8) % 10
  expected = -np.log(np_softmax(logits)[np.arange(8), labels])
  np.testing.assert_allclose(losses.cross_entropy(jnp.asarray(logits, jnp.float32),
                                                  jnp.asarray(labels)), expected, rtol=RTOL)


# -- gradient flow of L_gen and L_mix ----------------------------------------------


@pytest.fixture(scope="module")
def mixunlearn_inputs():
  model, block = models.create("cnn"), models.MixBlock()
  rng = np.random.default_rng(0)
  batch = {side: {"image": jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32),
                  "label": jnp.asarray(rng.integers(0, 10, 4))} for side in ("forget", "remain")}
  initial = supervised.init_variables(model, jax.random.key(0), (8, 8, 1))
  unlearner = supervised.init_variables(model, jax.random.key(1), (8, 8, 1))
  inputs = mixunlearn.frozen_inputs(initial, batch, model=model, num_classes=10,
                                    label_aware=False, sharpen_temperature=0.3)
  generator = block.init(jax.random.key(2), inputs.h_forget, inputs.h_remain, 0.5, (8, 8))["params"]
  return model, block, unlearner, generator, inputs


def is_all_zero(tree):
  return all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(tree))


def test_l_gen_moves_only_the_generator(mixunlearn_inputs):
  model, block, unlearner, generator, inputs = mixunlearn_inputs
  loss = lambda g, u: mixunlearn.l_gen(g, u, inputs, 0.4, model=model, mixblock=block,  # noqa: E731
                                       tau_gen=1.0, mask_loss_weight=0.0,
                                       mask_loss_margin=0.0)[0]
  grad_unlearner = jax.grad(loss, argnums=1)(generator, unlearner)
  grad_generator = jax.grad(loss, argnums=0)(generator, unlearner)
  assert is_all_zero(grad_unlearner)
  assert not is_all_zero(grad_generator)


def test_l_mix_moves_only_the_unlearner(mixunlearn_inputs):
  model, block, unlearner, generator, inputs = mixunlearn_inputs
  hp = config_lib.base_config().mixunlearn

  def l_mix(u_params, g):
    _, aux = mixunlearn.unlearner_losses(
        u_params, unlearner["batch_stats"], g, inputs, 0.4, model=model, mixblock=block,
        mixer="mixblock", tau_mix=hp.tau_mix, tau_real=hp.tau_real, omega=hp.omega,
        batchnorm_train=False)
    return aux["l_mix"]

  assert is_all_zero(jax.grad(l_mix, argnums=1)(unlearner["params"], generator))
  assert not is_all_zero(jax.grad(l_mix, argnums=0)(unlearner["params"], generator))
