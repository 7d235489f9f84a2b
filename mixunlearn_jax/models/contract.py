"""The model contract every method relies on, and an adapter for any Flax classifier.

A classifier here is called as `model.apply(variables, x, train=...)` (with
`mutable=['batch_stats']` where a method trains BatchNorm) and returns
`(logits, features)`; methods read named features (`Method.features`):

  features['mix']    a spatial map [B, H, W, C]: MixUnlearn's MixBlock reads it
  features['embed']  an embedding [B, D]: LAF's VAEs read it

The package's models meet it. `Classifier` makes any Flax module meet it: the
module may return bare logits, take no `train` argument, have no `dtype` or
no BatchNorm; a feature it does not return is named by the path of the
submodule whose output it is (`features={'mix': 'Conv_1'}`), which Flax's
`capture_intermediates` records.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np

FEATURES = {"mix": (4, "a spatial feature map [B, H, W, C], which MixUnlearn's MixBlock mixes"),
            "embed": (2, "an embedding [B, D], which LAF's VAEs model")}


class Classifier:
  """`module` under the contract: `apply(variables, x, train, mutable) -> (logits, features)`.

  Args:
    module: a Flax module; `__call__(x)` or `__call__(x, train)` returning logits
      or `(logits, {name: array})`.
    features: {feature name: path of the submodule whose `__call__` output it
      is, '/'-separated as in the params tree (e.g. 'Conv_1', 'block/conv')}.
    dtype: the dtype of the method's own modules (MixBlock); default the
      module's `dtype` attribute, or float32.
  """

  def __init__(self, module, *, features=None, dtype=None):
    self.module = module
    self.features = dict(features or {})
    unknown = sorted(set(self.features) - set(FEATURES))
    if unknown:
      raise ValueError(f"features={self.features}: unknown names {unknown}; known: "
                       f"{sorted(FEATURES)}.")
    self.dtype = dtype or getattr(module, "dtype", None) or jnp.float32
    parameters = inspect.signature(module.__call__).parameters
    self._takes_train = "train" in parameters

  def init(self, key, x, train=False):
    return self.module.init(key, x, **self._train_kwarg(train))

  def apply(self, variables, x, *, train=False, mutable=False):
    collections = list(mutable or [])
    capture = bool(self.features)
    # A module without BatchNorm gets no (empty) batch_stats collection.
    variables = {k: v for k, v in variables.items() if k == "params" or jax.tree.leaves(v)}
    out = self.module.apply(
        variables, x, capture_intermediates=self._wanted if capture else False,
        mutable=collections + ["intermediates"] if capture else (collections or False),
        **self._train_kwarg(train))
    out, updates = out if (capture or collections) else (out, {})
    logits, features = out if isinstance(out, tuple) else (out, {})
    features = dict(features)
    for name, path in self.features.items():
      features[name] = _captured(updates.get("intermediates", {}), path)
    updates = {k: v for k, v in updates.items() if k != "intermediates"}
    return ((logits, features), updates) if collections else (logits, features)

  def _train_kwarg(self, train):
    return {"train": train} if self._takes_train else {}

  def _wanted(self, module, method_name):
    return method_name == "__call__" and "/".join(module.path) in self.features.values()


def _captured(intermediates, path):
  node = intermediates
  for part in path.split("/"):
    if part not in node:
      raise KeyError(path)
    node = node[part]
  return node["__call__"][0]


def submodule_paths(module, variables, x):
  """Every submodule's path, as `Classifier(features=...)` names them."""
  adapter = Classifier(module)
  _, state = jax.eval_shape(lambda v: module.apply(
      v, x, capture_intermediates=True, mutable=["intermediates"],
      **adapter._train_kwarg(False)), variables)  # pylint: disable=protected-access
  paths = []

  def walk(node, prefix):
    for key, value in node.items():
      if key == "__call__":
        paths.append("/".join(prefix))
      elif isinstance(value, dict):
        walk(value, (*prefix, key))

  walk(state["intermediates"], ())
  return [p for p in paths if p]  # the root's own output is the logits


def check(model, variables, image_shape, features=(), what="this method"):
  """Shapes of (logits, features) on a dummy batch; errors that say what is missing.

  Returns the number of classes.
  """
  x = jnp.zeros((2, *image_shape), jnp.float32)
  try:
    logits, returned = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  except KeyError as e:
    paths = ", ".join(submodule_paths(model.module, variables, x))
    raise ValueError(f"features={model.features}: no submodule {e}; submodules: {paths}.") from e
  if len(logits.shape) != 2:
    raise ValueError(f"The model's logits have shape {logits.shape}; expected [batch, classes].")
  for name in features:
    rank, meaning = FEATURES[name]
    if name not in returned:
      module = getattr(model, "module", model)
      raise ValueError(
          f"{what} reads features[{name!r}], {meaning}; the model returns "
          f"{sorted(returned) or 'no features'}. Return (logits, {{{name!r}: array}}) from "
          f"__call__, or pass features={{{name!r}: '<submodule path>'}} naming the submodule "
          f"whose output it is; submodules: {', '.join(submodule_paths(module, variables, x))}.")
    if len(returned[name].shape) != rank:
      raise ValueError(f"features[{name!r}] has shape {returned[name].shape}; {what} needs "
                       f"{meaning}.")
  return int(np.prod(logits.shape[1:]))
