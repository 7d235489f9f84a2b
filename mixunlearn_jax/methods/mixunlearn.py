"""MixUnlearn (spec §4): a MixBlock generator against the unlearner, alternated.

One jitted step per pair of batches: f_D gives the MixBlock's feature maps
and the targets once; every `gen_interval` steps `lax.cond` takes the
generator branch (L_gen, the generator's own Adam); then the unlearner takes
its step on L_unlearn = L_mix + ω L_real with its own Adam.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax import models
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.methods import base


@flax.struct.dataclass
class MixUnlearnState:
  step: jax.Array
  key: jax.Array
  unlearner: dict  # {'params', 'batch_stats'}, initialised from f_D
  generator: Any  # MixBlock params
  unlearner_opt: Any
  generator_opt: Any
  l_gen: jax.Array  # L_gen of the latest generator step, for logging


@flax.struct.dataclass
class PairInputs:
  """What f_D provides once per batch: images, feature maps and targets."""
  x_forget: jax.Array
  x_remain: jax.Array
  h_forget: jax.Array
  h_remain: jax.Array
  target_forget: jax.Array
  target_remain: jax.Array


def frozen_inputs(initial, batch, *, model, num_classes, label_aware, sharpen_temperature):
  """Runs f_D on both sides once; no gradient ever reaches it."""
  x_f, x_r = batch["forget"]["image"], batch["remain"]["image"]
  logits, features = model.apply(initial, jnp.concatenate([x_f, x_r]), train=False)
  logits, mix = jax.lax.stop_gradient((logits, features["mix"]))
  batch_size = x_f.shape[0]
  if label_aware:
    target_f = jax.nn.one_hot(batch["forget"]["label"], num_classes)
    target_r = jax.nn.one_hot(batch["remain"]["label"], num_classes)
  else:
    probs = jax.nn.softmax(logits.astype(jnp.float32))
    targets = losses.sharpen(probs, sharpen_temperature) if sharpen_temperature else probs
    target_f, target_r = targets[:batch_size], targets[batch_size:]
  return PairInputs(x_f, x_r, mix[:batch_size], mix[batch_size:], target_f, target_r)


def generate_mask(generator_params, inputs, lam, *, mixblock):
  return mixblock.apply({"params": generator_params}, inputs.h_forget, inputs.h_remain, lam,
                        inputs.x_forget.shape[1:3])


def mixed_images(generator_params, inputs, lam, *, mixblock):
  mask = generate_mask(generator_params, inputs, lam, mixblock=mixblock)
  return models.mix_images(inputs.x_forget, inputs.x_remain, mask)


def mixed_samples(state, batch, frozen, *, model, mixblock, num_classes, label_aware, hp):
  """The trained generator's masks and mixtures on one batch, λ drawn per pair."""
  inputs = frozen_inputs(frozen["initial"], batch, model=model, num_classes=num_classes,
                         label_aware=label_aware, sharpen_temperature=hp.sharpen_temperature)
  lam = sample_lambda(jax.random.key(0), hp.alpha, inputs.x_forget.shape[0], per_sample=True)
  mask = generate_mask(state.generator, inputs, lam, mixblock=mixblock)
  return {"x_forget": inputs.x_forget, "x_remain": inputs.x_remain, "mask": mask, "lam": lam,
          "x_mix": models.mix_images(inputs.x_forget, inputs.x_remain, mask)}


def l_gen(generator_params, unlearner, inputs, lam, *, model, mixblock, tau_gen):
  """L_gen = -C(λ, τ_gen); the unlearner is held fixed (stop_gradient)."""
  x_mix = mixed_images(generator_params, inputs, lam, mixblock=mixblock)
  logits, _ = model.apply(jax.lax.stop_gradient(unlearner), x_mix, train=False)
  return -losses.contrastive(jax.nn.softmax(logits.astype(jnp.float32)), inputs.target_forget,
                             inputs.target_remain, lam, tau_gen)


def unlearner_losses(unlearner_params, batch_stats, generator_params, inputs, lam, *, model,
                     mixblock, tau_mix, tau_real, omega, batchnorm_train):
  """(L_unlearn, aux): L_mix on a fresh stop_gradient'ed mixture plus ω L_real.

  The mixture, x_f and x_r go through the unlearner as one batch of 3B.
  With `batchnorm_train` the BatchNorm statistics span those 3B images.
  """
  x_mix = jax.lax.stop_gradient(mixed_images(generator_params, inputs, lam, mixblock=mixblock))
  images = jnp.concatenate([x_mix, inputs.x_forget, inputs.x_remain])
  variables = {"params": unlearner_params, "batch_stats": batch_stats}
  if batchnorm_train:
    (logits, _), updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", {})
  else:
    logits, _ = model.apply(variables, images, train=False)
  p_mix, p_f, p_r = jnp.split(jax.nn.softmax(logits.astype(jnp.float32)), 3)
  l_mix = losses.contrastive(p_mix, inputs.target_forget, inputs.target_remain, lam, tau_mix)
  l_real = losses.l_real(p_f, p_r, inputs.target_forget, inputs.target_remain, tau_real)
  l_unlearn = losses.l_unlearn(l_mix, l_real, omega)
  return l_unlearn, {"l_mix": l_mix, "l_real": l_real, "batch_stats": batch_stats}


def sample_lambda(key, alpha, batch_size, per_sample):
  """λ ~ Beta(α, α): one draw per branch and step, or one per pair."""
  return jax.random.beta(key, alpha, alpha, (batch_size,) if per_sample else ())


def update_generator(state, *, inputs, lam, model, mixblock, generator_tx, tau_gen):
  """The generator branch: one Adam step of the MixBlock on L_gen."""
  loss, grads = jax.value_and_grad(l_gen)(state.generator, state.unlearner, inputs, lam,
                                          model=model, mixblock=mixblock, tau_gen=tau_gen)
  updates, opt = generator_tx.update(grads, state.generator_opt, state.generator)
  return state.replace(generator=optax.apply_updates(state.generator, updates),
                       generator_opt=opt, l_gen=loss)


def make_mixblock(model):
  """The generator for `model`: same compute dtype and convolution."""
  return models.MixBlock(dtype=model.dtype,
                         conv_general_dilated=getattr(model, "conv_general_dilated", None))


def unlearn_step(state, batch, frozen, *, model, mixblock, unlearner_tx, generator_tx,
                 num_classes, label_aware, hp):
  """One MixUnlearn step; `hp` is the method's config section (static)."""
  inputs = frozen_inputs(frozen["initial"], batch, model=model, num_classes=num_classes,
                         label_aware=label_aware, sharpen_temperature=hp.sharpen_temperature)
  batch_size = inputs.x_forget.shape[0]
  # Keys derive from (seed, step) only, so a resumed run draws the same numbers.
  key_gen, key_mix = jax.random.split(jax.random.fold_in(state.key, state.step))
  lam_gen = sample_lambda(key_gen, hp.alpha, batch_size, hp.per_sample_lambda)
  lam_mix = sample_lambda(key_mix, hp.alpha, batch_size, hp.per_sample_lambda)

  state = jax.lax.cond(
      state.step % hp.gen_interval == 0,
      functools.partial(update_generator, inputs=inputs, lam=lam_gen, model=model,
                        mixblock=mixblock, generator_tx=generator_tx, tau_gen=hp.tau_gen),
      lambda s: s, state)

  (loss, aux), grads = jax.value_and_grad(unlearner_losses, has_aux=True)(
      state.unlearner["params"], state.unlearner["batch_stats"], state.generator, inputs, lam_mix,
      model=model, mixblock=mixblock, tau_mix=hp.tau_mix, tau_real=hp.tau_real, omega=hp.omega,
      batchnorm_train=hp.batchnorm_train)
  params = state.unlearner["params"]
  updates, opt = unlearner_tx.update(grads, state.unlearner_opt, params)
  state = state.replace(
      step=state.step + 1, unlearner_opt=opt,
      unlearner={"params": optax.apply_updates(params, updates),
                 "batch_stats": aux["batch_stats"]})
  return state, {"l_unlearn": loss, "l_mix": aux["l_mix"], "l_real": aux["l_real"],
                 "l_gen": state.l_gen}


def init_state(ctx, mixblock, unlearner_tx, generator_tx):
  """Unlearner = a copy of f_D; generator = a fresh MixBlock; two Adam states."""

  def init(key, initial):
    key_gen, key_state = jax.random.split(key)
    h = jax.eval_shape(lambda x: ctx.model.apply(initial, x, train=False)[1]["mix"],
                       jnp.zeros((1, *ctx.image_shape)))
    feature = jnp.zeros(h.shape, jnp.float32)
    generator = mixblock.init(key_gen, feature, feature, 0.5, ctx.image_shape[:2])["params"]
    unlearner = {"params": initial["params"], "batch_stats": initial["batch_stats"]}
    return MixUnlearnState(
        step=jnp.zeros((), jnp.int32), key=key_state, unlearner=unlearner, generator=generator,
        unlearner_opt=unlearner_tx.init(unlearner["params"]),
        generator_opt=generator_tx.init(generator), l_gen=jnp.zeros((), jnp.float32))

  key = jax.random.key(ctx.seed)
  return jax.jit(init, out_shardings=parallel.replicated(ctx.mesh))(key, ctx.initial)


def default_config():
  """Spec §4's defaults (MNIST / Fashion-MNIST budget; config.paper_config sets the rest)."""
  c = ml_collections.ConfigDict()
  c.epochs = 20  # an epoch is one pass over D_f
  c.lr = 5e-5
  c.generator_lr = 1e-4
  c.gen_interval = 4
  c.alpha = 0.75
  c.per_sample_lambda = False
  c.tau_gen = 1.0
  c.tau_mix = 20.0
  c.tau_real = 20.0
  c.omega = 10.0
  c.sharpen_temperature = 0.3  # 0 disables Sharpen (ablation)
  c.batchnorm_train = False  # LAF protocol: BatchNorm statistics frozen
  return c


def build(ctx: base.UnlearnContext, *, label_aware) -> base.Program:
  hp = ctx.config
  mixblock = make_mixblock(ctx.model)
  unlearner_tx, generator_tx = optax.adam(hp.lr), optax.adam(hp.generator_lr)
  stream = data.paired_stream(ctx.batch_size, labels=label_aware)
  num_steps = hp.epochs * data.steps_per_pass(stream["forget"], ctx.num_forget, ctx.num_remain)
  common = dict(model=ctx.model, mixblock=mixblock, num_classes=ctx.num_classes,
                label_aware=label_aware, hp=hp)
  step = functools.partial(unlearn_step, unlearner_tx=unlearner_tx, generator_tx=generator_tx,
                           **common)
  return base.Program(
      state=init_state(ctx, mixblock, unlearner_tx, generator_tx),
      phases=(base.Phase("unlearn", stream, step, num_steps),),
      result=lambda state: state.unlearner,
      samples=jax.jit(functools.partial(mixed_samples, **common)))


_SOURCE = "Peng, Tang, Yang, Adversarial Mixup Unlearning, ICLR 2025 (spec §4)"
METHODS = (
    base.Method("mixunlearn_aware", "all", functools.partial(build, label_aware=True),
                "mixunlearn", default_config, source=_SOURCE),
    base.Method("mixunlearn_agnostic", "none", functools.partial(build, label_aware=False),
                "mixunlearn", default_config, source=_SOURCE),
)
