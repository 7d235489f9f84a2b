"""The method registry: config names to unlearning methods.

A baseline joins by defining `Method` objects (see `base.py`) in its own
module and listing them here; the engine needs no change.
"""

from mixunlearn_jax.methods import mixunlearn
from mixunlearn_jax.methods.base import Method, UnlearnContext, UnlearnProgram

_REGISTRY = {m.name: m for m in mixunlearn.METHODS}


def names():
  return sorted(_REGISTRY)


def get(name) -> Method:
  if name not in _REGISTRY:
    raise ValueError(f"Unknown method {name!r}; known methods: {', '.join(names())}.")
  return _REGISTRY[name]


__all__ = ["Method", "UnlearnContext", "UnlearnProgram", "get", "names"]
