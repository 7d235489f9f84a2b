"""ResNet-18 with a 256-d embedding layer, as in the LAF/MixUnlearn code."""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class BasicBlock(nn.Module):
  filters: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(x)))
    y = self.norm(scale_init=nn.initializers.ones)(self.conv(self.filters, (3, 3))(y))
    if residual.shape != y.shape:
      residual = self.norm()(
          self.conv(self.filters, (1, 1), self.strides, name="downsample")(residual))
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet with BasicBlocks; `features['mix']` is the stage-3 output.

  stem='cifar': 3x3 stride-1 conv, no max-pool (native 32x32).
  stem='imagenet': 7x7 stride-2 conv + 3x3 stride-2 max-pool (224x224).
  """
  stage_sizes: Sequence[int]
  num_classes: int = 10
  stem: str = "cifar"
  widths: Sequence[int] = (64, 128, 256, 512)
  embed_dim: int = 256
  mix_stage: int = 2  # zero-based: stage 3
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's (see models/conv.py)

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME", dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated)
    # PyTorch's BatchNorm momentum 0.1 is Flax's 0.9.
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    x = x.astype(self.dtype)
    if self.stem == "cifar":
      x = nn.relu(norm()(conv(self.widths[0], (3, 3), name="stem_conv")(x)))
    elif self.stem == "imagenet":
      x = nn.relu(norm()(conv(self.widths[0], (7, 7), 2, name="stem_conv")(x)))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"Unknown ResNet stem {self.stem!r}; use 'cifar' or 'imagenet'.")
    features = {}
    for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(blocks):
        x = BasicBlock(width, 2 if i > 0 and j == 0 else 1, conv, norm)(x)
      if i == self.mix_stage:
        features["mix"] = x
    x = jnp.mean(x, axis=(1, 2))
    features["embed"] = nn.Dense(self.embed_dim, dtype=self.dtype)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype)(features["embed"])
    return logits, features


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
