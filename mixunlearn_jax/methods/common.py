"""Pieces the baselines share: one classifier's state, its optimizer, its forward pass."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from mixunlearn_jax.engine import parallel


@flax.struct.dataclass
class ClassifierState:
  """An unlearner started from f_D: its variables and one optimizer state."""
  step: jax.Array
  variables: dict  # {'params', 'batch_stats'}
  opt_state: Any


def optimizer(name, lr, *, momentum=0.0, weight_decay=0.0):
  """'sgd' (PyTorch's: weight decay added to the gradient, then momentum) or 'adam'.

  The learning rate is a hyperparameter of the state (`set_lr`), so a phase
  can change it without another compiled program.
  """
  def make(learning_rate):
    if name == "sgd":
      core = optax.sgd(learning_rate, momentum=momentum or None)
    elif name == "adam":
      core = optax.adam(learning_rate)
    else:
      raise ValueError(f"optimizer {name!r}; use 'sgd' or 'adam'.")
    return optax.chain(optax.add_decayed_weights(weight_decay), core) if weight_decay else core

  return optax.inject_hyperparams(make)(learning_rate=lr)


def set_lr(state, lr):
  """`state` with its optimizer's learning rate set to `lr`."""
  hyperparams = dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


def init_state(ctx, tx):
  """The unlearner as a copy of f_D with a fresh optimizer state, replicated on the mesh."""

  def init(initial):
    variables = {"params": initial["params"], "batch_stats": initial["batch_stats"]}
    return ClassifierState(jnp.zeros((), jnp.int32), variables, tx.init(variables["params"]))

  return jax.jit(init, out_shardings=parallel.replicated(ctx.mesh))(ctx.initial)


def forward(model, params, batch_stats, images, *, train):
  """(logits in float32, features, batch_stats); train mode updates BatchNorm's statistics."""
  variables = {"params": params, "batch_stats": batch_stats}
  if train:
    (logits, features), updates = model.apply(variables, images, train=True,
                                              mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", {})
  else:
    logits, features = model.apply(variables, images, train=False)
  return logits.astype(jnp.float32), features, batch_stats


def apply_gradients(state, grads, batch_stats, tx):
  """One optimizer update of the parameters; BatchNorm statistics as the loss left them."""
  params = state.variables["params"]
  updates, opt_state = tx.update(grads, state.opt_state, params)
  return state.replace(step=state.step + 1, opt_state=opt_state,
                       variables={"params": optax.apply_updates(params, updates),
                                  "batch_stats": batch_stats})


def masked_mean(values, mask=None):
  """Mean over the samples whose mask is 1 (all without a mask)."""
  if mask is None:
    return jnp.mean(values)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def to_pixels(images, preprocess):
  """Normalised batch images back to [0, 1] pixels (the inverse of the pipeline's normalisation)."""
  return images * jnp.asarray(preprocess.std, images.dtype) + jnp.asarray(preprocess.mean,
                                                                          images.dtype)


def from_pixels(pixels, preprocess):
  """[0, 1] pixels to the normalised images the models read."""
  return (pixels - jnp.asarray(preprocess.mean, pixels.dtype)) / jnp.asarray(preprocess.std,
                                                                            pixels.dtype)
