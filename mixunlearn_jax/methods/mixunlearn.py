"""MixUnlearn (spec §4): a MixBlock generator against the unlearner, alternated.

One jitted step per pair of batches: f_D gives the MixBlock's feature maps
and the targets once; every `gen_interval` steps `lax.cond` takes the
generator branch (L_gen, the generator's own Adam); then the unlearner takes
its step on L_unlearn = L_mix + ω L_real with its own Adam.

The paper's ablations (§5.5, spec §7) are switches of the same step,
registered as variants: `mixer='vanilla'` (w/o MixBlock: x_mix = λx_f +
(1-λ)x_r) and `mixer='none'` (w/o L_mix: L_unlearn = ω L_real) compile no
generator and hold no generator state; ω = 0 is w/o L_real; Sharpen's
temperature 0 is w/o Sharpen. The generator branch reports how far its
masks follow λ (`mask_statistics`), and AdAutoMix's λ options are config
switches: λ in the mask logits, a mask-mean loss, the upsampling.
"""

import dataclasses
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

MIXERS = ("mixblock", "vanilla", "none")


@flax.struct.dataclass
class MixUnlearnState:
  step: jax.Array
  key: jax.Array
  unlearner: dict  # {'params', 'batch_stats'}, initialised from f_D
  generator: Any  # MixBlock params; None without a MixBlock (mixer 'vanilla', 'none')
  unlearner_opt: Any
  generator_opt: Any  # None without a MixBlock
  generator_metrics: Any  # {GENERATOR_METRICS} of the latest generator step, for logging


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
  """Runs f_D on both sides once; no gradient ever reaches it.

  The feature maps (h) are None for a model without features['mix'], which
  only the ablations without a MixBlock accept (their `Method.features`).
  """
  x_f, x_r = batch["forget"]["image"], batch["remain"]["image"]
  logits, features = model.apply(initial, jnp.concatenate([x_f, x_r]), train=False)
  logits, mix = jax.lax.stop_gradient((logits, features.get("mix")))
  batch_size = x_f.shape[0]
  if label_aware:
    target_f = jax.nn.one_hot(batch["forget"]["label"], num_classes)
    target_r = jax.nn.one_hot(batch["remain"]["label"], num_classes)
  else:
    probs = jax.nn.softmax(logits.astype(jnp.float32))
    targets = losses.sharpen(probs, sharpen_temperature) if sharpen_temperature else probs
    target_f, target_r = targets[:batch_size], targets[batch_size:]
  h_f, h_r = (None, None) if mix is None else (mix[:batch_size], mix[batch_size:])
  return PairInputs(x_f, x_r, h_f, h_r, target_f, target_r)


def generate_mask(generator_params, inputs, lam, *, mixblock):
  """The MixBlock's mask M, or, without one (vanilla mixup), λ and 1 - λ at every pixel."""
  batch, height, width = inputs.x_forget.shape[:3]
  if mixblock is None:
    lam = jnp.reshape(jnp.asarray(lam, jnp.float32), (-1, 1, 1, 1))
    return jnp.broadcast_to(jnp.concatenate([lam, 1.0 - lam], axis=-1),
                            (batch, height, width, 2))
  return mixblock.apply({"params": generator_params}, inputs.h_forget, inputs.h_remain, lam,
                        (height, width))


def mixed_images(generator_params, inputs, lam, *, mixblock):
  """x_mix = x_f M0 + x_r M1; without a MixBlock, λx_f + (1 - λ)x_r."""
  mask = generate_mask(generator_params, inputs, lam, mixblock=mixblock)
  return models.mix_images(inputs.x_forget, inputs.x_remain, mask)


def _share_of_x_f(mask, lam):
  """(M0, its mean per pair, λ per pair), in float32."""
  m0 = mask[..., 0].astype(jnp.float32)
  per_pair = jnp.mean(m0, axis=(1, 2))
  return m0, per_pair, jnp.broadcast_to(jnp.asarray(lam, jnp.float32), per_pair.shape)


def mask_statistics(mask, lam):
  """How the mask's share of x_f (M0) compares with λ, as scalars.

  mask_mean: M0's mean over the batch; mask_lambda_gap: mean over pairs of
  |mean(M0) - λ|; mask_spatial_std: mean over pairs of M0's standard
  deviation over the pixels (0 for a uniform mask).
  """
  m0, per_pair, lam = _share_of_x_f(mask, lam)
  return {"mask_mean": jnp.mean(per_pair),
          "mask_lambda_gap": jnp.mean(jnp.abs(per_pair - lam)),
          "mask_spatial_std": jnp.mean(jnp.std(m0, axis=(1, 2)))}


def mask_loss(mask, lam, margin):
  """AdAutoMix's L1 mask loss, per pair: mean_b max(|mean(M0_b) - λ_b| - margin, 0)."""
  _, per_pair, lam = _share_of_x_f(mask, lam)
  return jnp.mean(jnp.maximum(jnp.abs(per_pair - lam) - margin, 0.0))


def mixed_samples(state, batch, frozen, *, model, mixblock, num_classes, label_aware, hp):
  """The trained generator's masks and mixtures on one batch, λ drawn per pair."""
  inputs = frozen_inputs(frozen["initial"], batch, model=model, num_classes=num_classes,
                         label_aware=label_aware, sharpen_temperature=hp.sharpen_temperature)
  lam = sample_lambda(jax.random.key(0), hp.alpha, inputs.x_forget.shape[0], per_sample=True)
  mask = generate_mask(state.generator, inputs, lam, mixblock=mixblock)
  return {"x_forget": inputs.x_forget, "x_remain": inputs.x_remain, "mask": mask, "lam": lam,
          "x_mix": models.mix_images(inputs.x_forget, inputs.x_remain, mask)}


GENERATOR_METRICS = ("l_gen", "l_mask", "mask_mean", "mask_lambda_gap", "mask_spatial_std")


def l_gen(generator_params, unlearner, inputs, lam, *, model, mixblock, tau_gen,
          mask_loss_weight, mask_loss_margin):
  """(L_gen, {GENERATOR_METRICS}): L_gen = -C(λ, τ_gen) + w · mask loss.

  The unlearner is held fixed (stop_gradient); the mask loss (AdAutoMix's,
  weight w, 0 = off) pulls the mask's mean toward λ.
  """
  mask = generate_mask(generator_params, inputs, lam, mixblock=mixblock)
  x_mix = models.mix_images(inputs.x_forget, inputs.x_remain, mask)
  logits, _ = model.apply(jax.lax.stop_gradient(unlearner), x_mix, train=False)
  l_mask = mask_loss(mask, lam, mask_loss_margin)
  loss = (-losses.contrastive(jax.nn.softmax(logits.astype(jnp.float32)), inputs.target_forget,
                              inputs.target_remain, lam, tau_gen)
          + mask_loss_weight * l_mask)
  return loss, {"l_gen": loss, "l_mask": l_mask, **mask_statistics(mask, lam)}


def unlearner_losses(unlearner_params, batch_stats, generator_params, inputs, lam, *, model,
                     mixblock, mixer, tau_mix, tau_real, omega, batchnorm_train):
  """(L_unlearn, aux): L_mix on a fresh stop_gradient'ed mixture plus ω L_real.

  The mixture, x_f and x_r go through the unlearner as one batch of 3B.
  With `batchnorm_train` the BatchNorm statistics span those 3B images.
  With mixer 'none' (w/o L_mix) there is no mixture: L_unlearn = ω L_real
  on the 2B real images.
  """
  images = [inputs.x_forget, inputs.x_remain]
  if mixer != "none":
    images.insert(0, jax.lax.stop_gradient(
        mixed_images(generator_params, inputs, lam, mixblock=mixblock)))
  variables = {"params": unlearner_params, "batch_stats": batch_stats}
  if batchnorm_train:
    (logits, _), updates = model.apply(variables, jnp.concatenate(images), train=True,
                                       mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", {})
  else:
    logits, _ = model.apply(variables, jnp.concatenate(images), train=False)
  probs = jnp.split(jax.nn.softmax(logits.astype(jnp.float32)), len(images))
  l_real = losses.l_real(*probs[-2:], inputs.target_forget, inputs.target_remain, tau_real)
  if mixer == "none":
    return omega * l_real, {"l_real": l_real, "batch_stats": batch_stats}
  l_mix = losses.contrastive(probs[0], inputs.target_forget, inputs.target_remain, lam, tau_mix)
  return (losses.l_unlearn(l_mix, l_real, omega),
          {"l_mix": l_mix, "l_real": l_real, "batch_stats": batch_stats})


def sample_lambda(key, alpha, batch_size, per_sample):
  """λ ~ Beta(α, α): one draw per branch and step, or one per pair."""
  return jax.random.beta(key, alpha, alpha, (batch_size,) if per_sample else ())


def update_generator(state, *, inputs, lam, model, mixblock, generator_tx, hp):
  """The generator branch: one Adam step of the MixBlock on L_gen."""
  (_, metrics), grads = jax.value_and_grad(l_gen, has_aux=True)(
      state.generator, state.unlearner, inputs, lam, model=model, mixblock=mixblock,
      tau_gen=hp.tau_gen, mask_loss_weight=hp.mask_loss_weight,
      mask_loss_margin=hp.mask_loss_margin)
  updates, opt = generator_tx.update(grads, state.generator_opt, state.generator)
  return state.replace(generator=optax.apply_updates(state.generator, updates),
                       generator_opt=opt, generator_metrics=metrics)


def make_mixblock(model, hp):
  """The generator for `model` (its dtype and convolution); None unless mixer 'mixblock'."""
  if hp.mixer != "mixblock":
    return None
  return models.MixBlock(dtype=model.dtype,
                         conv_general_dilated=getattr(model, "conv_general_dilated", None),
                         lambda_logits=hp.lambda_logits, upsampling=hp.mask_upsampling)


def unlearn_step(state, batch, frozen, *, model, mixblock, unlearner_tx, generator_tx,
                 num_classes, label_aware, hp):
  """One MixUnlearn step; `hp` is the method's config section (static)."""
  inputs = frozen_inputs(frozen["initial"], batch, model=model, num_classes=num_classes,
                         label_aware=label_aware, sharpen_temperature=hp.sharpen_temperature)
  batch_size = inputs.x_forget.shape[0]
  # Keys derive from (seed, step) only, so a resumed run draws the same numbers.
  key_gen, key_mix = jax.random.split(jax.random.fold_in(state.key, state.step))
  lam_mix = sample_lambda(key_mix, hp.alpha, batch_size, hp.per_sample_lambda)

  generator_metrics = {}
  if mixblock is not None:  # the ablations without a MixBlock compile no generator branch
    lam_gen = sample_lambda(key_gen, hp.alpha, batch_size, hp.per_sample_lambda)
    state = jax.lax.cond(
        state.step % hp.gen_interval == 0,
        functools.partial(update_generator, inputs=inputs, lam=lam_gen, model=model,
                          mixblock=mixblock, generator_tx=generator_tx, hp=hp),
        lambda s: s, state)
    generator_metrics = state.generator_metrics

  (loss, aux), grads = jax.value_and_grad(unlearner_losses, has_aux=True)(
      state.unlearner["params"], state.unlearner["batch_stats"], state.generator, inputs, lam_mix,
      model=model, mixblock=mixblock, mixer=hp.mixer, tau_mix=hp.tau_mix, tau_real=hp.tau_real,
      omega=hp.omega, batchnorm_train=hp.batchnorm_train)
  batch_stats = aux.pop("batch_stats")
  params = state.unlearner["params"]
  updates, opt = unlearner_tx.update(grads, state.unlearner_opt, params)
  state = state.replace(
      step=state.step + 1, unlearner_opt=opt,
      unlearner={"params": optax.apply_updates(params, updates), "batch_stats": batch_stats})
  return state, {"l_unlearn": loss, **aux, **generator_metrics}


def init_state(ctx, mixblock, unlearner_tx, generator_tx):
  """Unlearner = a copy of f_D; generator = a fresh MixBlock (if any); their Adam states."""

  def init(key, initial):
    key_gen, key_state = jax.random.split(key)
    unlearner = {"params": initial["params"], "batch_stats": initial["batch_stats"]}
    generator = generator_opt = generator_metrics = None
    if mixblock is not None:
      h = jax.eval_shape(lambda x: ctx.model.apply(initial, x, train=False)[1]["mix"],
                         jnp.zeros((1, *ctx.image_shape)))
      feature = jnp.zeros(h.shape, jnp.float32)
      generator = mixblock.init(key_gen, feature, feature, 0.5, ctx.image_shape[:2])["params"]
      generator_opt = generator_tx.init(generator)
      generator_metrics = {name: jnp.zeros((), jnp.float32) for name in GENERATOR_METRICS}
    return MixUnlearnState(
        step=jnp.zeros((), jnp.int32), key=key_state, unlearner=unlearner, generator=generator,
        unlearner_opt=unlearner_tx.init(unlearner["params"]), generator_opt=generator_opt,
        generator_metrics=generator_metrics)

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
  # 'mixblock' (the method); 'vanilla': w/o MixBlock, x_mix = λx_f + (1-λ)x_r with
  # λ ~ Beta(alpha, alpha), no generator; 'none': w/o L_mix, L_unlearn = ω L_real.
  c.mixer = "mixblock"
  # AdAutoMix's λ options for the MixBlock (defaults: off, MixUnlearn's own mask).
  c.lambda_logits = False  # add log λ, log(1-λ) to the mask's logits: its mean follows λ
  c.mask_loss_weight = 0.0  # weight in L_gen of mean_b max(|mean(M0_b) - λ_b| - margin, 0)
  c.mask_loss_margin = 0.1  # that loss's margin (AdAutoMix's)
  c.mask_upsampling = "bilinear"  # feature map to image size: 'bilinear' or 'nearest'
  return c


def build(ctx: base.UnlearnContext, *, label_aware) -> base.Program:
  hp = ctx.config
  for field, choices in (("mixer", MIXERS), ("mask_upsampling", models.mixblock.UPSAMPLING)):
    if hp[field] not in choices:
      raise ValueError(f"mixunlearn.{field}={hp[field]!r}; use one of {choices}.")
  mixblock = make_mixblock(ctx.model, hp)
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
      samples=None if mixblock is None else jax.jit(functools.partial(mixed_samples, **common)))


_SOURCE = "Peng, Tang, Yang, Adversarial Mixup Unlearning, ICLR 2025 (spec §4)"
AWARE = base.Method("mixunlearn_aware", "all", functools.partial(build, label_aware=True),
                    "mixunlearn", default_config, source=_SOURCE, features=("mix",))
AGNOSTIC = base.Method("mixunlearn_agnostic", "none", functools.partial(build, label_aware=False),
                       "mixunlearn", default_config, source=_SOURCE, features=("mix",))
# The paper's ablations (§5.5): (suffix, overrides, what it removes), in both label modes.
_ABLATIONS = (
    ("vanilla_mixup", {"mixer": "vanilla"},
     "w/o MixBlock: x_mix = λx_f + (1-λ)x_r, λ ~ Beta(α, α) (mixunlearn.alpha)"),
    ("no_real", {"omega": 0.0}, "w/o L_real (ω = 0)"),
    ("no_mix", {"mixer": "none"}, "w/o L_mix: L_unlearn = ω L_real, no generator"),
)
METHODS = (
    AWARE, AGNOSTIC,
    # Without a MixBlock nothing reads the feature map: any classifier will do.
    *(dataclasses.replace(base.variant(method, f"{method.name}_{suffix}",
                                       f"MixUnlearn's ablation, {what}", **overrides),
                          features=method.features if "mixer" not in overrides else ())
      for suffix, overrides, what in _ABLATIONS for method in (AWARE, AGNOSTIC)),
    # The other points of Table 3's w/o-MixBlock grid (α 0.75 is mixunlearn.alpha's default),
    # for the label-agnostic mode it ablates; α fixed by the name, not by the section.
    *(dataclasses.replace(
        base.variant(AGNOSTIC, f"mixunlearn_agnostic_vanilla_mixup_alpha{tag}",
                     f"MixUnlearn's ablation, w/o MixBlock at α = {alpha}", mixer="vanilla",
                     alpha=alpha), features=())
      for tag, alpha in (("035", 0.35), ("150", 1.5))),
    # Sharpen acts on f_D's outputs, the label-agnostic targets only.
    base.variant(AGNOSTIC, "mixunlearn_agnostic_no_sharpen",
                 "MixUnlearn's ablation, w/o Sharpen: targets f_D's softmax",
                 sharpen_temperature=0.0),
)
