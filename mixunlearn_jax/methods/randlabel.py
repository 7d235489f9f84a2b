"""RandLabel (defined by the MixUnlearn paper; BASELINES.md §11): label-agnostic.

Each forget sample gets a uniformly random class ỹ, a function of the method's
seed and the sample's dataset index, so it is the same on every epoch and
after a resume; the remain target is f_D's output on the same image:
L = MSE(p(x_f), onehot(ỹ)) + w_r MSE(p(x_r), p_D(x_r)), on paired batches, an
epoch being one pass over D_f (LAF's loaders).
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
  """BASELINES.md's suggestion: LAF's loaders, Adam at LAF's lr_ra and its epoch count."""
  c = ml_collections.ConfigDict()
  c.epochs = 20  # passes over D_f
  c.lr = 1e-4
  c.batch_size = 32
  c.retain_weight = 1.0  # w_r; the paper's grid (A.3) {1e-4, 0.01, 0.1, 1, 10, 100}
  c.outputs = "probs"  # the MSE on 'probs' (softmax) or 'logits' (open point)
  c.fixed_targets = True  # one ỹ per sample for the whole run; False: a new one every epoch
  c.batchnorm_train = False  # LAF protocol: statistics frozen
  return c


def random_targets(key, index, num_classes, epoch=None):
  """ỹ for each dataset index: a class drawn from (key, index[, epoch]) alone."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
  if epoch is not None:
    keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys)
  return jax.vmap(lambda k: jax.random.randint(k, (), 0, num_classes))(keys)


def outputs(logits, kind):
  return jax.nn.softmax(logits) if kind == "probs" else logits


def loss_fn(params, batch_stats, batch, initial, targets, *, model, hp):
  x_f, x_r = batch["forget"]["image"], batch["remain"]["image"]
  reference, _, _ = common.forward(model, initial["params"], initial["batch_stats"], x_r,
                                   train=False)
  logits, _, batch_stats = common.forward(model, params, batch_stats,
                                          jnp.concatenate([x_f, x_r]), train=hp.batchnorm_train)
  out_f, out_r = jnp.split(outputs(logits, hp.outputs), 2)
  mse_forget = losses.squared_error(out_f, jax.nn.one_hot(targets, out_f.shape[-1])).mean()
  mse_remain = losses.squared_error(
      out_r, jax.lax.stop_gradient(outputs(reference, hp.outputs))).mean()
  return mse_forget + hp.retain_weight * mse_remain, {"mse_forget": mse_forget, "mse_remain": mse_remain,
                                   "batch_stats": batch_stats}


def step(state, batch, frozen, *, model, tx, hp, key, num_classes, steps_per_epoch):
  epoch = None if hp.fixed_targets else state.step // steps_per_epoch
  targets = random_targets(key, batch["forget"]["index"], num_classes, epoch)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.variables["params"], state.variables["batch_stats"], batch, frozen["initial"],
      targets, model=model, hp=hp)
  state = common.apply_gradients(state, grads, aux.pop("batch_stats"), tx)
  return state, {"loss": loss, **aux}


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  if hp.outputs not in ("probs", "logits"):
    raise ValueError(f"randlabel.outputs={hp.outputs!r}; use 'probs' or 'logits'.")
  tx = common.optimizer("adam", hp.lr)
  stream = {"forget": data.Side("forget", hp.batch_size, index=True),
            "remain": data.Side("remain", hp.batch_size)}
  per_epoch = data.steps_per_pass(stream["forget"], ctx.num_forget, ctx.num_remain)
  # A key, not an array, in the partial: the targets depend on the seed alone.
  step_fn = functools.partial(step, model=ctx.model, tx=tx, hp=hp, num_classes=ctx.num_classes,
                              key=jax.random.key(ctx.seed), steps_per_epoch=per_epoch)
  phase = base.Phase("unlearn", stream, step_fn, hp.epochs * per_epoch)
  return base.Program(common.init_state(ctx, tx), (phase,), lambda state: state.variables)


METHODS = (base.Method("randlabel", "none", build, "randlabel", default_config,
                       source="RandLabel as defined in the MixUnlearn paper (ICLR 2025)"),)
