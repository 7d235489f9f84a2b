"""NegGrad+ (Kurmanji et al., SCRUB's code; BASELINES.md §2): descent on D_r, ascent on D_f.

L = α [CE(f(x_r), y_r) + (wd/2) ||θ - θ_0||²] - (1 - α) CE(f(x_f), y_f), one
SGD step per remain batch with the next forget batch drawn alongside; an
epoch is one pass over D_r. The paper's grid writes the retain weight as
λ = α / (1 - α) on L = λ CE_r - CE_f; the two differ by the factor 1 - α,
which SGD's learning rate absorbs.
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
  """The notebook's `negative_grad` defaults (SCRUB, small scale)."""
  c = ml_collections.ConfigDict()
  c.epochs = 10  # passes over D_r
  c.alpha = 0.95  # weight of the retain term; 1 - alpha on the forget term
  c.anchor_weight_decay = 0.0  # wd of the (wd/2) ||θ - θ_0||² term (the notebook's; off)
  c.optimizer = "sgd"
  c.lr = 0.01
  c.momentum = 0.0
  c.forget_batch_size = 64
  c.remain_batch_size = 32
  c.batchnorm_train = False  # the notebook calls model.eval(): statistics frozen
  return c


def loss_fn(params, batch_stats, batch, initial_params, *, model, hp):
  """(L, aux) on one forget and one remain batch."""
  x = jnp.concatenate([batch["remain"]["image"], batch["forget"]["image"]])
  logits, _, batch_stats = common.forward(model, params, batch_stats, x,
                                          train=hp.batchnorm_train)
  num_remain = batch["remain"]["image"].shape[0]
  ce_remain = losses.cross_entropy(logits[:num_remain], batch["remain"]["label"]).mean()
  ce_forget = losses.cross_entropy(logits[num_remain:], batch["forget"]["label"]).mean()
  anchor = sum(jnp.sum(jnp.square(p - p0)) for p, p0 in
               zip(jax.tree.leaves(params), jax.tree.leaves(initial_params)))
  loss = (hp.alpha * (ce_remain + 0.5 * hp.anchor_weight_decay * anchor)
          - (1.0 - hp.alpha) * ce_forget)
  return loss, {"ce_remain": ce_remain, "ce_forget": ce_forget, "batch_stats": batch_stats}


def step(state, batch, frozen, *, model, tx, hp):
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.variables["params"], state.variables["batch_stats"], batch,
      frozen["initial"]["params"], model=model, hp=hp)
  state = common.apply_gradients(state, grads, aux.pop("batch_stats"), tx)
  return state, {"loss": loss, **aux}


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  tx = common.optimizer(hp.optimizer, hp.lr, momentum=hp.momentum)
  stream = {"remain": data.Side("remain", hp.remain_batch_size, labels=True),
            "forget": data.Side("forget", hp.forget_batch_size, labels=True)}
  num_steps = hp.epochs * data.steps_per_pass(stream["remain"], ctx.num_forget, ctx.num_remain)
  phase = base.Phase("unlearn", stream, functools.partial(step, model=ctx.model, tx=tx, hp=hp),
                     num_steps)
  return base.Program(common.init_state(ctx, tx), (phase,), lambda state: state.variables)


METHODS = (base.Method("neggrad", "all", build, "neggrad", default_config,
                       source="NegGrad+: Kurmanji et al., NeurIPS 2023 (meghdadk/SCRUB)"),)
