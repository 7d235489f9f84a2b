"""Boundary Shrink (Chen et al., CVPR 2023; BASELINES.md §3): relabel D_f across f_D's boundary.

Per forget batch (x, y): an FGSM step against the frozen f_D in [0, 1] pixel
space, x_adv = round_255(clip_[0,1](x + ε·sign(∇_x CE(f_D(x), y)))); the
nearest-but-incorrect label y_nbi = argmax f_D(x_adv); then one SGD step on
CE(f_θ(x), y_nbi) on the clean images. D_r is never read. The attack targets
f_D, not the unlearner, so each sample's neighbour does not drift as f_θ
moves. Where the attack fails y_nbi = y, and those samples stay in, as in
the authors' code. An epoch is one pass over D_f.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax.methods import base
from mixunlearn_jax.methods import common


def default_config():
  """The authors' defaults (boundary_unlearning.py)."""
  c = ml_collections.ConfigDict()
  c.epochs = 10  # "poison epochs": passes over D_f
  c.epsilon = 0.1  # ε: FGSM's L∞ step in [0, 1] pixels (the paper's grid: 0.1 to 0.5)
  c.lr = 1e-5
  c.momentum = 0.9
  c.forget_batch_size = 0  # 0: the job's batch_size (the original leaves it to the caller)
  c.batchnorm_train = True  # the original fine-tunes f_θ in train mode
  return c


def neighbours(initial, images, labels, *, model, epsilon, preprocess):
  """(x_adv, y_nbi): f_D's FGSM neighbours of normalised `images`, and f_D's labels for them."""

  def attack_loss(pixels):
    logits, _, _ = common.forward(model, initial["params"], initial["batch_stats"],
                                  common.from_pixels(pixels, preprocess), train=False)
    # A sum, not PyTorch's batch mean: only the sign of each sample's gradient is used.
    return losses.cross_entropy(logits, labels).sum()

  pixels = common.to_pixels(images, preprocess)
  pixels = jnp.clip(pixels + epsilon * jnp.sign(jax.grad(attack_loss)(pixels)), 0.0, 1.0)
  x_adv = common.from_pixels(jnp.round(pixels * 255.0) / 255.0, preprocess)  # the 8-bit grid
  logits, _, _ = common.forward(model, initial["params"], initial["batch_stats"], x_adv,
                                train=False)
  return x_adv, jnp.argmax(logits, axis=-1)


def loss_fn(params, batch_stats, images, targets, *, model, hp):
  """CE(f_θ(x), y_nbi) on the clean forget images."""
  logits, _, batch_stats = common.forward(model, params, batch_stats, images,
                                          train=hp.batchnorm_train)
  return losses.cross_entropy(logits, targets).mean(), batch_stats


def step(state, batch, frozen, *, model, tx, hp, preprocess):
  forget = batch["forget"]
  _, y_nbi = neighbours(frozen["initial"], forget["image"], forget["label"], model=model,
                        epsilon=hp.epsilon, preprocess=preprocess)
  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.variables["params"], state.variables["batch_stats"], forget["image"], y_nbi,
      model=model, hp=hp)
  state = common.apply_gradients(state, grads, batch_stats, tx)
  relabelled = jnp.mean(y_nbi != forget["label"], dtype=jnp.float32)  # attacks that crossed
  return state, {"loss": loss, "relabelled": relabelled}


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  tx = common.optimizer("sgd", hp.lr, momentum=hp.momentum)
  stream = {"forget": data.Side("forget", hp.forget_batch_size or ctx.batch_size, labels=True)}
  num_steps = hp.epochs * data.steps_per_pass(stream["forget"], ctx.num_forget, ctx.num_remain)
  step_fn = functools.partial(step, model=ctx.model, tx=tx, hp=hp, preprocess=ctx.preprocess)
  phase = base.Phase("unlearn", stream, step_fn, num_steps)
  return base.Program(common.init_state(ctx, tx), (phase,), lambda state: state.variables)


METHODS = (base.Method("boundary_shrink", "all", build, "boundary_shrink", default_config,
                       source="Boundary Shrink: Chen et al., CVPR 2023 (boundary_unlearning.py)"),)
