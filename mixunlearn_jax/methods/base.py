"""What an unlearning method is, as far as the engine is concerned.

A method turns the frozen initial model f_D, and batches of D_f and D_r, into
the variables of an unlearned model. The engine owns everything else (data,
sharding, the checkpointed loop, evaluation); a method says:

- which labels it may read (`labels`: 'all', 'remain' or 'none'); the
  pipelines never put another label into a batch, so a label-agnostic
  method cannot read one by accident, nor SCRUB a forget label;
- `build(ctx) -> Program`: its initial state and one or more `Phase`s, each
  a pure step over a `Stream` it describes (which sides, batch size per
  side, labels, dataset indices, a one-pass mode over D_f, a shuffled mixed
  stream with a per-sample tag);
- frozen pytrees beside f_D (teachers, VAEs), passed to every step as
  `frozen[name]`, replicated and never donated;
- how its result predicts (`Program.predict`), for results that are not one
  classifier (ensembles), and what the membership attack reads when that
  differs (`Program.attack_predict`);
- named sets of training-set indices a phase's sides may read
  (`Phase.sets`, e.g. SISA's shards);
- its own config section, named after it, with its defaults
  (`default_config`); a `variant` is a registered method plus overrides of
  that section (ablations, grid points).

Phases run one after another on one state, each a checkpointed sub-stage
in the method's folder that resumes after SIGKILL. A method trains auxiliary
models (teachers, VAEs) inside `build` with `ctx.run(phase, state)`, which
checkpoints them the same way; their time counts as the method's, unless
`counts=False` (work done before any deletion request, such as SISA's initial
ensemble), which is recorded apart as `setup_seconds`.
"""

import dataclasses
import types
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from mixunlearn_jax.data.pipeline import SOURCES, Stream

LABEL_USES = ("all", "remain", "none")




@dataclasses.dataclass(frozen=True)
class Phase:
  """A sub-program: `step(state, batch, frozen) -> (state, metrics)` for `num_steps` steps.

  `step` is pure; the engine jits it over the mesh (batch sharded, state
  replicated and donated, `frozen` replicated) and compiles it once per
  distinct step function, so phases that share a step object share a
  program. `enter(state) -> state`, if given, runs (jitted) once when the
  phase starts from the previous phase's state, e.g. to set a learning rate
  for the phase; a phase resumed from its own checkpoint does not run it.
  An example, for throughput, is one sample of the stream's first side.
  `sets` names sets of training-set indices that the stream's sides may read
  as their `source` besides 'forget', 'remain', 'mixed' and 'all'; the method
  keeps D_f indices out of any set that must not hold them.
  """
  name: str
  stream: Stream
  step: Callable
  num_steps: int
  enter: Callable | None = None
  sets: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    clash = sorted(set(self.sets) & set(SOURCES))
    if clash:
      raise ValueError(f"Phase {self.name!r}: set names {clash} are source names.")

  @property
  def examples_per_step(self):
    return next(iter(self.stream.values())).batch_size


@dataclasses.dataclass(frozen=True)
class Program:
  """A method's unlearning run.

  Attributes:
    state: the initial state, placed on the mesh (replicated).
    phases: run in order on one state; one phase runs in the method's
      folder, several each in a sub-folder named after the phase.
    result: final state -> what evaluation predicts with (classifier
      variables, or a stacked ensemble).
    frozen: pytrees every step reads as `frozen[name]` besides 'initial'
      (f_D's variables), placed replicated by the engine, never donated.
    predict: `predict(result, images) -> probabilities`; None means the
      classifier's softmax on `result` as variables.
    attack_predict: the same for the membership attack, where it reads
      other outputs than the accuracies (SISA: the shard models' mean
      softmax, while accuracy uses their vote); None means `predict`'s.
    samples: `samples(state, batch, frozen) -> {name: array}` for the report's
      picture of what the method generated, on one batch of the first phase.
  """
  state: Any
  phases: tuple[Phase, ...]
  result: Callable[[Any], Any]
  frozen: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  predict: Callable | None = None
  samples: Callable | None = None
  attack_predict: Callable | None = None


@dataclasses.dataclass(frozen=True)
class UnlearnContext:
  """What a method's `build` may read; all of it read-only.

  Attributes:
    model: the classifier module (f_D's architecture).
    initial: f_D's variables, on the mesh.
    batch_size: the job's unlearning batch size (`config.batch_size`).
    config: the method's own config section, overrides applied.
    seed: the method's own seed (derived from the job's seed and its name).
    theta0: () -> the variables pretraining started from (θ_0).
    recipe: the pretraining recipe: {'epochs', 'lr', 'batch_size',
      'optimizer'} of f_D's training.
    run: (phase, state, counts=True) -> state: trains an auxiliary model as
      a checkpointed sub-stage of the method (folder `phase.name`); with
      `counts=False` its time is recorded apart (`setup_seconds`), not as
      the method's unlearning time.
    forget, remain: the training-set indices of D_f and D_r (for methods
      that define sets over them, e.g. SISA's shards).
    preprocess: the data.Preprocess the batches' images went through
      (image = (pixel - mean) / std, pixels in [0, 1]), for methods that
      work in pixel space (methods/common.py: to_pixels, from_pixels).
  """
  model: Any
  initial: Any
  image_shape: tuple
  num_classes: int
  num_forget: int
  num_remain: int
  batch_size: int
  config: ml_collections.ConfigDict
  seed: int
  mesh: Any
  theta0: Callable[[], Any] | None = None
  recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  run: Callable | None = None
  preprocess: Any = None
  forget: np.ndarray | None = None
  remain: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method: `build(ctx) -> Program` and what it may read.

  Attributes:
    name: the registry name (`config.methods`).
    labels: 'all', 'remain' (remain labels only) or 'none'.
    build: UnlearnContext -> Program.
    section: the config section given to `build` as ctx.config.
    default_config: () -> that section's defaults.
    overrides: fields of the section a variant sets.
    source: one line: the paper or code the method follows.
    features: the model features it reads besides the logits ('mix', 'embed':
      models/contract.py), checked before a run with a user's model.
    variant_of: the registered method a `variant` derives from; '' for a
      method of its own.
    ignores: fields of a shared section this method never reads (L-Mix's in
      LAF's section, for LAF); `hyperparameters` leaves them out, so they are
      not part of its stage's identity and changing them redoes none of its runs.
  """
  name: str
  labels: str
  build: Callable[[UnlearnContext], Program]
  section: str
  default_config: Callable[[], ml_collections.ConfigDict]
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  source: str = ""
  features: tuple[str, ...] = ()
  variant_of: str = ""
  ignores: tuple[str, ...] = ()

  def __post_init__(self):
    if self.labels not in LABEL_USES:
      raise ValueError(f"{self.name}: labels={self.labels!r}; use one of {LABEL_USES}.")
    unknown = sorted(set(self.ignores) - set(self.default_config()))
    if unknown:
      raise ValueError(f"{self.name} ignores {unknown}, which are not fields of its section "
                       f"{self.section!r}.")
    object.__setattr__(self, "overrides", types.MappingProxyType(dict(self.overrides)))

  @property
  def uses_labels(self):
    return self.labels != "none"

  def hyperparameters(self, config):
    """The fields of the method's section it reads, with the variant's overrides applied."""
    section = ml_collections.ConfigDict({k: v for k, v in config[self.section].to_dict().items()
                                         if k not in self.ignores})
    for field, value in self.overrides.items():
      if field not in section:
        raise ValueError(f"Variant {self.name!r} overrides {self.section}.{field}, "
                         "which is not a field of that section it reads.")
      section[field] = value
    return section


def variant(method: Method, name: str, source: str = "", **overrides) -> Method:
  """`method` under another name with fields of its config section overridden."""
  return dataclasses.replace(method, name=name, overrides={**method.overrides, **overrides},
                             source=source or method.source,
                             variant_of=method.variant_of or method.name)


def check_stream(method: Method, stream: Stream, sets=None, forget=None):
  """Raises if a side would hand `method` labels it may not read.

  A named set (`sets`) counts as remain samples only if it holds no index of
  `forget` (D_f); without `forget` it counts as holding some, so its labels
  are for methods with labels 'all'.
  """
  sets = sets or {}
  for key, side in stream.items():
    if not side.labels:
      continue
    in_remain = side.source == "remain" or (
        side.source in sets and forget is not None
        and not np.isin(sets[side.source], forget).any())
    if method.labels == "none" or (method.labels == "remain" and not in_remain):
      # 'mixed' and 'all' sides hold D_f samples too.
      raise ValueError(f"{method.name} may read {method.labels} labels, but its stream side "
                       f"{key!r} asks for the labels of {side.source!r} samples.")
