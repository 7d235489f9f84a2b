"""GLI, Guided Loss-Increasing (Choi et al., CVPRW 2024; BASELINES.md §9): never trains on D_f.

Per remain batch (x_r, y_r) t, with the next forget batch x_f (its labels
never read), in [0, 1] pixel space:
- w_t = w_start + t·(w_end − w_start)/(N − 1) over the N steps of the ramp;
- δ = 0, then K times δ ← δ + s·sign(∇_δ J), with
  J = −w_t CE(f_θ(x'), y_r) + MSE(f_θ(x'), stopgrad f_θ(x_f)), x' = clip_[0,1](x_r + δ):
  ascent keeps x' classified (the guidance) while pushing its logits away
  from the forget batch's; δ is not projected, so ‖δ‖∞ <= s·K. Only δ is
  differentiated, so the search leaves θ as it was (the notebooks zero its
  parameter gradients);
- one SGD step on CE(f_θ(stopgrad x'), y_r).
An epoch is one pass over D_r.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax.methods import base
from mixunlearn_jax.methods import common

RAMPS = ("run", "epoch")


def default_config():
  """The multi-class MUFAC notebook's defaults, one epoch as BASELINES.md suggests."""
  c = ml_collections.ConfigDict()
  c.epochs = 1  # passes over D_r
  c.lr = 1e-3  # plain SGD
  c.batch_size = 64  # of each side
  c.iterations = 2  # K: sign-ascent steps on δ (the paper's grid: 2 to 5)
  c.step_size = 0.01  # s: each step's change of a pixel, in [0, 1] pixels
  c.weight_start = 200.0  # w_start
  c.weight_end = 1000.0  # w_end
  c.weight_ramp = "run"  # w_t ramps once over the 'run', or restarts every 'epoch'
  c.search_batchnorm_train = True  # the notebooks search in train mode (batch statistics)
  c.batchnorm_train = True  # the notebooks train in train mode
  return c


def task_weight(step, *, hp, ramp_steps):
  """w_t, linear from w_start at t = 0 to w_end at t = ramp_steps - 1."""
  t = (step % ramp_steps).astype(jnp.float32)
  return hp.weight_start + t * (hp.weight_end - hp.weight_start) / max(ramp_steps - 1, 1)


def perturbation(variables, x_remain, y_remain, x_forget, weight, *, model, hp, preprocess):
  """δ in pixel space after K sign-ascent steps on J; `variables` are only read."""
  params, batch_stats = variables["params"], variables["batch_stats"]
  # BatchNorm's statistic updates of the search forwards are dropped: only δ comes out.
  forget_logits, _, _ = common.forward(model, params, batch_stats, x_forget,
                                       train=hp.search_batchnorm_train)
  forget_logits = jax.lax.stop_gradient(forget_logits)
  pixels = common.to_pixels(x_remain, preprocess)

  def objective(delta):
    images = common.from_pixels(jnp.clip(pixels + delta, 0.0, 1.0), preprocess)
    logits, _, _ = common.forward(model, params, batch_stats, images,
                                  train=hp.search_batchnorm_train)
    return losses.gli_objective(logits, y_remain, forget_logits, weight).mean()

  delta = jnp.zeros_like(pixels)
  for _ in range(hp.iterations):  # K is static: an unrolled loop
    delta = delta + hp.step_size * jnp.sign(jax.grad(objective)(delta))
  return delta


def perturbed(x_remain, delta, preprocess):
  """stopgrad clip(x_r + δ), normalised again."""
  pixels = jnp.clip(common.to_pixels(x_remain, preprocess) + delta, 0.0, 1.0)
  return jax.lax.stop_gradient(common.from_pixels(pixels, preprocess))


def loss_fn(params, batch_stats, images, labels, *, model, hp):
  logits, _, batch_stats = common.forward(model, params, batch_stats, images,
                                          train=hp.batchnorm_train)
  return losses.cross_entropy(logits, labels).mean(), batch_stats


def step(state, batch, frozen, *, model, tx, hp, preprocess, ramp_steps):
  del frozen  # GLI starts from f_D but never reads it again
  remain, forget = batch["remain"], batch["forget"]
  weight = task_weight(state.step, hp=hp, ramp_steps=ramp_steps)
  delta = perturbation(state.variables, remain["image"], remain["label"], forget["image"], weight,
                       model=model, hp=hp, preprocess=preprocess)
  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.variables["params"], state.variables["batch_stats"],
      perturbed(remain["image"], delta, preprocess), remain["label"], model=model, hp=hp)
  state = common.apply_gradients(state, grads, batch_stats, tx)
  return state, {"loss": loss, "task_weight": weight}


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  if hp.weight_ramp not in RAMPS:
    raise ValueError(f"gli.weight_ramp={hp.weight_ramp!r}; use one of {RAMPS}.")
  tx = common.optimizer("sgd", hp.lr)
  # Equal batch sizes: the notebooks skip a step whose two batches differ, and MSE pairs them.
  stream = {"remain": data.Side("remain", hp.batch_size, labels=True),
            "forget": data.Side("forget", hp.batch_size)}
  per_epoch = data.steps_per_pass(stream["remain"], ctx.num_forget, ctx.num_remain)
  ramp_steps = per_epoch * (hp.epochs if hp.weight_ramp == "run" else 1)
  step_fn = functools.partial(step, model=ctx.model, tx=tx, hp=hp, preprocess=ctx.preprocess,
                              ramp_steps=ramp_steps)
  phase = base.Phase("unlearn", stream, step_fn, hp.epochs * per_epoch)
  return base.Program(common.init_state(ctx, tx), (phase,), lambda state: state.variables)


METHODS = (base.Method("gli", "remain", build, "gli", default_config,
                       source="GLI: Choi et al., CVPRW 2024 (Dasol-Choi/Guided_Loss_Increasing)"),)
