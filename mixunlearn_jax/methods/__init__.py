"""The method registry: config names to unlearning methods.

A method joins with one module under methods/ that defines its `Method`s
(see `base.py`) and one line here; the engine needs no change. Its config
section, named after it, comes from its `default_config`.
"""

from mixunlearn_jax.methods import boundary
from mixunlearn_jax.methods import gli
from mixunlearn_jax.methods import laf
from mixunlearn_jax.methods import mixunlearn
from mixunlearn_jax.methods import neggrad
from mixunlearn_jax.methods import randlabel
from mixunlearn_jax.methods import scrub
from mixunlearn_jax.methods import sisa
from mixunlearn_jax.methods import teacher_student
from mixunlearn_jax.methods import unrolling
from mixunlearn_jax.methods.base import (Method, Phase, Program, UnlearnContext, check_stream,
                                         variant)

_REGISTRY = {m.name: m for m in (
    *mixunlearn.METHODS,
    *neggrad.METHODS,
    *scrub.METHODS,
    *sisa.METHODS,
    *randlabel.METHODS,
    *boundary.METHODS,
    *gli.METHODS,
    *laf.METHODS,
    *teacher_student.METHODS,
    *unrolling.METHODS,
)}


def names():
  return sorted(_REGISTRY)


def all_methods():
  return [_REGISTRY[name] for name in names()]


def get(name) -> Method:
  if name not in _REGISTRY:
    raise ValueError(f"Unknown method {name!r}; known methods: {', '.join(names())}.")
  return _REGISTRY[name]


def register(method: Method):
  """Adds a method (yours, or a `variant`) to the registry; config sections come from it.

  Register before building the config (`config.base_config()` reads the
  sections of every registered method).
  """
  if method.name in _REGISTRY and _REGISTRY[method.name] is not method:
    raise ValueError(f"A method named {method.name!r} is registered already.")
  _REGISTRY[method.name] = method


def sections():
  """{section name: its default config} over every registered method."""
  return {m.section: m.default_config for m in _REGISTRY.values()}


__all__ = ["Method", "Phase", "Program", "UnlearnContext", "all_methods", "check_stream", "get",
           "names", "register", "sections", "variant"]
