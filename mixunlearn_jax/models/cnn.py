"""The LAF/MixUnlearn CNN for small grey images (MNIST, Fashion-MNIST, digits)."""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


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
    x = nn.max_pool(nn.relu(conv(16, (5, 5))(x)), (2, 2), (2, 2))
    mix = nn.max_pool(nn.relu(conv(32, (5, 5))(x)), (2, 2), (2, 2))
    embed = nn.Dense(256, dtype=self.dtype)(mix.reshape(mix.shape[0], -1))
    x = nn.Dense(128, dtype=self.dtype)(embed)
    logits = nn.Dense(self.num_classes, dtype=self.dtype)(x)
    return logits, {"mix": mix, "embed": embed}
