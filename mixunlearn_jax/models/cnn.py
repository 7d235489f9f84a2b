"""The LAF/MixUnlearn CNN for small grey images (MNIST, Fashion-MNIST, digits)."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool(x, size):
  """Non-overlapping max pooling (VALID: a ragged edge is dropped).

  Same values and gradients as `nn.max_pool(x, (size, size), (size, size))`
  up to ties (which after a ReLU only happen at zero, where the ReLU's own
  gradient is zero), but with an elementwise backward pass: on XLA:CPU,
  `reduce_window`'s select-and-scatter and `jnp.max`'s tie-counting vjp
  cost several times more (docs/performance.md).
  """
  b, h, w, c = x.shape
  h, w = h // size, w // size
  return _window_max(x[:, :h * size, :w * size].reshape(b, h, size, w, size, c))


@jax.custom_vjp
def _window_max(windows):
  return windows.max(axis=(2, 4))


def _window_max_fwd(windows):
  pooled = _window_max(windows)
  return pooled, (windows, pooled)


def _window_max_bwd(residuals, grad):
  windows, pooled = residuals
  at_max = windows == pooled[:, :, None, :, None]
  return (jnp.where(at_max, grad[:, :, None, :, None], 0).astype(windows.dtype),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


class CNN(nn.Module):
  """Conv5x5(16)-pool-Conv5x5(32)-pool-Dense256-Dense128-Dense(classes).

  No activations between the dense layers, as in the LAF code the paper
  follows. Returns `(logits, features)` with `features['mix']` the pooled
  conv-2 map (the MixBlock's input) and `features['embed']` the 256-d layer.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's (see models/conv.py)

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No BatchNorm or dropout: train and eval are the same function.
    conv = functools.partial(nn.Conv, dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated)
    x = x.astype(self.dtype)
    x = max_pool(nn.relu(conv(16, (5, 5))(x)), 2)
    mix = max_pool(nn.relu(conv(32, (5, 5))(x)), 2)
    embed = nn.Dense(256, dtype=self.dtype)(mix.reshape(mix.shape[0], -1))
    x = nn.Dense(128, dtype=self.dtype)(embed)
    logits = nn.Dense(self.num_classes, dtype=self.dtype)(x)
    return logits, {"mix": mix, "embed": embed}
