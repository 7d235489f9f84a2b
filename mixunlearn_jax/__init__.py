"""mixunlearn-jax: MixUnlearn (Adversarial Mixup Unlearning, ICLR 2025) in JAX/Flax.

    import mixunlearn_jax as mu
    unlearned = mu.unlearn(model, variables, forget=(x_f, y_f), remain=(x_r, y_r))
    mu.evaluate(model, unlearned, forget=..., remain=..., test=...)

Importing the package changes nothing process-wide and loads neither JAX nor
TensorFlow until `unlearn` or `evaluate` is first used (mixunlearn_jax/api.py);
the entry points (main, sweep, benchmark) set XLA:CPU's flags (`runtime.configure`).
"""

__version__ = "0.1.0"
_API = ("unlearn", "evaluate", "Unlearned")


def __getattr__(name):
  if name in _API:
    from mixunlearn_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f"module 'mixunlearn_jax' has no attribute {name!r}")
