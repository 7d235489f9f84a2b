"""Unlearning as a library call: your own Flax classifier and arrays in memory.

    import mixunlearn_jax as mu
    unlearned = mu.unlearn(model, variables, forget=(x_f, y_f), remain=(x_r, y_r),
                           method="mixunlearn_aware", epochs=5, features={"mix": "Conv_1"})
    mu.evaluate(model, unlearned, forget=(x_f, y_f), remain=(x_r, y_r), test=(x_t, y_t))

The same code as the job runs the method (`experiment.unlearn`): the arrays
become an in-memory dataset (D_f first, then D_r) and a split; steps are
compiled once, data parallel over the devices, checkpointed in `workdir` (a
temporary folder unless given: then a call resumes after a kill, as long as
the workdir holds only that call's data). Images are [N, H, W, C], uint8
pixels or floats in [0, 1]; `normalize=(mean, std)` per channel is applied
to [0, 1] pixels as the job does (default: none). The model's contract is in
models/contract.py.
"""

import contextlib
import dataclasses
import tempfile
from typing import Any, Callable

import jax
import numpy as np

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax import methods
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.evaluation import metrics
from mixunlearn_jax.models import contract


@dataclasses.dataclass(frozen=True)
class Unlearned:
  """What `unlearn` returns: the model, and how its unlearning ran."""
  method: str
  variables: Any  # the unlearned classifier's variables, or a method's own result (SISA)
  predict: Callable | None  # predict(variables, images) -> probabilities; None: the classifier's
  seconds: float  # the steps' wall time, compilation left out
  compile_seconds: float
  examples_per_sec: float
  losses: dict  # the last step's losses and statistics


def unlearn(model, variables, forget, remain, *, method="mixunlearn_aware", seed=0,
            features=None, config=None, workdir=None, normalize=None,
            **hyperparameters) -> Unlearned:
  """Unlearns `forget` from `model` with `variables` (f_D), keeping `remain`.

  Args:
    model: a Flax module (see models/contract.py for what it must return).
    variables: f_D's variables ({'params'} and, with BatchNorm, {'batch_stats'}).
    forget, remain: (images, labels) or images alone (label-agnostic methods
      and, for D_f, methods that read remain labels only).
    method: a registered method (`methods.names()`).
    seed: the seed of the method's randomness and data order.
    features: {'mix' or 'embed': submodule path} for features the model does
      not return itself.
    config: a full config (`config.base_config()`) for fields outside the
      method's section (batch_size, pretrain's recipe for SISA...).
    workdir: where the method's checkpoints go; None: a temporary folder.
    normalize: (mean, std) per channel applied to [0, 1] pixels.
    **hyperparameters: fields of the method's config section (e.g. epochs=5).
  """
  spec = methods.get(method)
  c = _config(config, spec, seed, hyperparameters)
  classifier = contract.Classifier(model, features=features)
  variables = _with_batch_stats(variables)
  (x_f, y_f), (x_r, y_r) = (_arrays(forget, "forget", spec.labels == "all"),
                            _arrays(remain, "remain", spec.uses_labels))
  num_classes = contract.check(classifier, variables, x_f.shape[1:], spec.features,
                               f"method {method!r}")
  with _folder(workdir) as folder:
    run_ = _seed_run(c, folder, classifier, (x_f, y_f), (x_r, y_r), None, num_classes,
                     normalize)
    experiment.check_batch_sizes(c, run_.job.mesh)
    initial = jax.device_put(variables, parallel.replicated(run_.job.mesh))
    trained = experiment.unlearn(run_, method, lambda: experiment.Trained(initial, None))
  stage = trained.stage
  return Unlearned(method, _without_empty_batch_stats(trained.result), trained.predict,
                   stage.seconds, stage.compile_seconds, stage.examples_per_sec,
                   dict(stage.metrics))


def evaluate(model, variables, forget, remain, test, *, setup=None, seed=0, features=None,
             normalize=None, batch_size=500, attack_trees=100, asr_protocols=("spec",)):
  """The job's metrics for `variables` (or an `Unlearned`): accuracies and ASR, in %.

  `setup` 'class' (Test_r, Test_f, ASR) when D_f is one class that D_r lacks,
  else 'data' (Train_r, Train_f, Test, ASR); None picks it that way.
  `asr_protocols` as the config's `asr.protocols` ('laf' takes the test
  arrays' order as the raw order). Returns {'metrics': {...}, 'attack': the
  attack's two sides}.
  """
  predict = None
  if isinstance(variables, Unlearned):
    variables, predict = variables.variables, variables.predict
  classifier = contract.Classifier(model, features=features)
  (x_f, y_f), (x_r, y_r), (x_t, y_t) = (_arrays(s, name, True) for s, name in
                                        [(forget, "forget"), (remain, "remain"), (test, "test")])
  setup, forget_class = _setup(setup, y_f, y_r)
  c = config_lib.base_config()
  c.eval_batch_size = batch_size
  c.asr.protocols = tuple(asr_protocols)
  experiment.validate(c)
  if predict is None:
    variables = _with_batch_stats(variables)
    num_classes = contract.check(classifier, variables, x_f.shape[1:])
  else:
    num_classes = int(max(y_f.max(), y_r.max(), y_t.max())) + 1
  with _folder(None) as folder:
    run_ = _seed_run(c, folder, classifier, (x_f, y_f), (x_r, y_r), (x_t, y_t), num_classes,
                     normalize, seed)
    parallel.check_batch_size(batch_size, run_.job.mesh, "batch_size")
    result = jax.device_put(variables, parallel.replicated(run_.job.mesh))
    train_probs, test_probs = experiment.probabilities(run_, result, predict)
  scores, attack = metrics.evaluate(
      train_probs, test_probs, setup=setup, split=run_.split, test_labels=y_t,
      forget_class=forget_class, seed=seed, trees=attack_trees,
      attack_sets=experiment.attack_sets(run_))
  return {"metrics": scores, "attack": attack}


# -- helpers --------------------------------------------------------------------------------


def _config(config, spec, seed, hyperparameters):
  c = config_lib.base_config() if config is None else config.copy_and_resolve_references()
  c.methods, c.seeds = (spec.name,), (seed,)
  section = c[spec.section]
  for field, value in hyperparameters.items():
    if field not in section:
      raise ValueError(f"{field!r} is not a field of {spec.section!r}; its fields: "
                       f"{', '.join(sorted(section))}.")
    section[field] = value
  experiment.validate(c)
  return c


def _arrays(given, name, labels_needed):
  """(images, labels) from (images, labels) or images; float images as float32."""
  images, labels = given if isinstance(given, (tuple, list)) else (given, None)
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"{name} images have shape {images.shape}; expected [N, H, W, C] "
                     "(add a channel axis to grey images).")
  if images.dtype != np.uint8:
    images = images.astype(np.float32)
  if labels is None:
    if labels_needed:
      raise ValueError(f"This method reads {name} labels: pass {name}=(images, labels).")
    labels = np.zeros(len(images), np.int32)  # never read: the pipelines withhold them
  labels = np.asarray(labels, np.int32)
  if labels.shape != (len(images),):
    raise ValueError(f"{name} labels have shape {labels.shape}; expected ({len(images)},).")
  return images, labels


def _setup(setup, y_f, y_r):
  classes = np.unique(y_f)
  if setup is None:
    setup = "class" if len(classes) == 1 and classes[0] not in y_r else "data"
  if setup not in ("class", "data"):
    raise ValueError(f"setup={setup!r}; use 'class' or 'data'.")
  if setup == "class" and len(classes) != 1:
    raise ValueError(f"setup='class' needs D_f of one class; it holds {classes.tolist()}.")
  return setup, int(classes[0]) if setup == "class" else 0


def _seed_run(c, folder, classifier, forget, remain, test, num_classes, normalize, seed=None):
  """A one-seed job over D = forget + remain (in that order) and the test arrays."""
  (x_f, y_f), (x_r, y_r) = forget, remain
  images = np.concatenate([x_f, x_r])
  x_t, y_t = test if test is not None else (images[:0], y_f[:0])
  channels = images.shape[-1]
  mean, std = normalize or ((0.0,) * channels, (1.0,) * channels)
  dataset = data.Dataset("arrays", images, np.concatenate([y_f, y_r]), x_t, y_t, num_classes,
                         tuple(mean), tuple(std))
  mesh = parallel.make_mesh()
  job = experiment.Job(c, folder, dataset, mesh, classifier, data.Preprocess(mean, std))
  split = data.Split(np.arange(len(x_f)), np.arange(len(x_f), len(images)), dataset.train_labels)
  seed = c.seeds[0] if seed is None else seed
  return experiment.SeedRun(job, seed, f"{folder}/seed_{seed}", split)


@contextlib.contextmanager
def _folder(workdir):
  if workdir:
    yield workdir
  else:
    with tempfile.TemporaryDirectory(prefix="mixunlearn_") as folder:
      yield folder


def _with_batch_stats(variables):
  """{'params', 'batch_stats'} as the methods read them; {} for a model without BatchNorm."""
  if "params" not in variables:
    raise ValueError(f"variables hold {list(variables)}; expected 'params' (and "
                     "'batch_stats' with BatchNorm), as model.init returns them.")
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def _without_empty_batch_stats(result):
  """The classifier's variables as its own init returns them (no empty 'batch_stats')."""
  if isinstance(result, dict) and "batch_stats" in result and not jax.tree.leaves(
      result["batch_stats"]):
    return {k: v for k, v in result.items() if k != "batch_stats"}
  return result
