"""Model registry: config strings to Flax modules.

Every classifier is called as `model.apply(variables, x, train=...)` and
returns `(logits, features)` with at least `features['embed']` and
`features['mix']` (the feature map the MixBlock reads).
"""

import functools

from absl import logging
import jax
import jax.numpy as jnp

from mixunlearn_jax.models import conv
from mixunlearn_jax.models import onednn
from mixunlearn_jax.models.cnn import CNN
from mixunlearn_jax.models.mixblock import MixBlock, mix_images
from mixunlearn_jax.models.resnet import ResNet, ResNet18
from mixunlearn_jax.models.vae import EmbeddingVAE
from mixunlearn_jax.models.vit import ViT, VIT_VARIANTS, load_pretrained_npz

_REGISTRY = {
    "cnn": CNN,
    "resnet18": ResNet18,
    **{name: functools.partial(ViT, **variant) for name, variant in VIT_VARIANTS.items()},
}


def names():
  return sorted(_REGISTRY)


def create(name, *, num_classes=10, dtype="float32", cpu_onednn=True, **kwargs):
  """Builds the classifier `name` ('cnn', 'resnet18', 'vit_b16', ...).

  On the CPU backend, convolutional models use `conv.conv_general_dilated`,
  whose gradients stay fast inside `lax.cond` (see models/conv.py), through
  oneDNN where `conv_path(cpu_onednn, dtype)` says so; pass
  `conv_general_dilated=None` to get lax's own.
  """
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(names())}.")
  if name in CONV_MODELS:
    kwargs.setdefault("conv_general_dilated", default_conv(cpu_onednn, dtype))
  return _REGISTRY[name](num_classes=num_classes, dtype=dtype_of(dtype), **kwargs)


CONV_MODELS = ("cnn", "resnet18")


def default_conv(cpu_onednn=True, dtype="float32"):
  """The convolution `create` gives convolutional models here (see `conv_path`)."""
  return {"lax": None, "xla": conv.conv_general_dilated,
          "onednn": functools.partial(conv.conv_general_dilated, onednn=True)}[
              conv_path(cpu_onednn, dtype)]


def conv_path(cpu_onednn=True, dtype="float32"):
  """'lax' off the CPU; on it 'onednn' or 'xla' (ours, on XLA's Eigen kernels).

  oneDNN (models/onednn.py) needs `cpu_onednn`, float32, the library and one
  device: its custom calls have no partitioning rule, so over several
  devices XLA would gather each batch onto every device.
  """
  if jax.default_backend() != "cpu":
    return "lax"
  if cpu_onednn and dtype == "float32" and jax.device_count() == 1:
    if onednn.available():
      return "onednn"
    logging.warning("Convolutions run on XLA's Eigen path: %s.", onednn.unavailable_reason())
  return "xla"


def dtype_of(name):
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if name not in dtypes:
    raise ValueError(f"Unknown dtype {name!r}; use one of {sorted(dtypes)}.")
  return dtypes[name]


__all__ = ["CNN", "EmbeddingVAE", "MixBlock", "ResNet", "ResNet18", "ViT", "create",
           "load_pretrained_npz", "mix_images", "names"]
