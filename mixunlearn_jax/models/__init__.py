"""Model registry: config strings to Flax modules.

Every classifier is called as `model.apply(variables, x, train=...)` and
returns `(logits, features)` with at least `features['embed']` and
`features['mix']` (the feature map the MixBlock reads).
"""

import functools

import jax.numpy as jnp

from mixunlearn_jax.models.cnn import CNN
from mixunlearn_jax.models.mixblock import MixBlock, mix_images
from mixunlearn_jax.models.resnet import ResNet, ResNet18
from mixunlearn_jax.models.vit import ViT, VIT_VARIANTS, load_pretrained_npz

_REGISTRY = {
    "cnn": CNN,
    "resnet18": ResNet18,
    **{name: functools.partial(ViT, **variant) for name, variant in VIT_VARIANTS.items()},
}


def names():
  return sorted(_REGISTRY)


def create(name, *, num_classes=10, dtype="float32", **kwargs):
  """Builds the classifier `name` ('cnn', 'resnet18', 'vit_b16', ...)."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(names())}.")
  return _REGISTRY[name](num_classes=num_classes, dtype=dtype_of(dtype), **kwargs)


def dtype_of(name):
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if name not in dtypes:
    raise ValueError(f"Unknown dtype {name!r}; use one of {sorted(dtypes)}.")
  return dtypes[name]


__all__ = ["CNN", "MixBlock", "ResNet", "ResNet18", "ViT", "create", "load_pretrained_npz",
           "mix_images", "names"]
