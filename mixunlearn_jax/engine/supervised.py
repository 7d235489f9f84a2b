"""Supervised training of the initial model f_D and the retrained f_{D_r}."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from mixunlearn_jax import losses
from mixunlearn_jax.engine import parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}


def init_variables(model, key, image_shape):
  """Initialises a classifier; `batch_stats` is {} for models without BatchNorm."""
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def create_train_state(model, tx, key, image_shape, mesh):
  """A fresh state created directly replicated over the mesh."""

  def init(key):
    variables = init_variables(model, key, image_shape)
    return TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                      tx.init(variables["params"]))

  return jax.jit(init, out_shardings=parallel.replicated(mesh))(key)


def train_step(state, batch, *, model, tx):
  """One Adam step on mean cross-entropy; BatchNorm in train mode."""

  def loss_fn(params):
    (logits, _), updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"])
    loss = jnp.mean(losses.cross_entropy(logits, batch["label"]))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (updates.get("batch_stats", {}), accuracy)

  (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), batch_stats,
                     opt_state)
  return state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}
