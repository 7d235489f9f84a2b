"""What an unlearning method is, as far as the engine is concerned.

A method turns the frozen initial model f_D plus paired forget/remain batches
into new classifier variables. The engine owns everything else (data,
sharding, the checkpointed loop, evaluation), so a method only says:

- whether it may read labels (`uses_labels`; the pipeline strips labels for
  label-agnostic methods, so they cannot read them by accident);
- `build(ctx)`: an `UnlearnProgram` with its initial state, its step and its
  length. Methods with extra models (teachers, VAEs) train them inside
  `build` through `ctx.run_stage`, which checkpoints them like any stage;
  methods with phases (SCRUB's max/min) switch inside the step with
  `lax.cond`; ensembles (SISA, DSMixup) return a stacked state and their own
  `predict`.
"""

import dataclasses
from typing import Any, Callable

import ml_collections


@dataclasses.dataclass(frozen=True)
class UnlearnContext:
  model: Any  # the classifier module (f_D's architecture)
  initial: dict  # f_D's variables, frozen
  image_shape: tuple
  num_classes: int
  num_forget: int
  num_remain: int
  batch_size: int
  config: ml_collections.ConfigDict  # the method's own section of the config
  seed: int
  mesh: Any
  run_stage: Callable  # (name, **run_stage kwargs) -> StageResult, for sub-stages


@dataclasses.dataclass(frozen=True)
class UnlearnProgram:
  """A method's unlearning run: `step(state, batch, initial) -> (state, metrics)`.

  `step` is a pure function that the engine jits over the mesh with the state
  donated; `classifier(state)` gives the unlearned classifier's variables.
  """
  state: Any
  step: Callable
  num_steps: int
  classifier: Callable[[Any], dict]
  # Optional: `samples(state, batch, initial) -> {name: array}` for the report's
  # picture of what the method generated (MixUnlearn: its mixed images).
  samples: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  uses_labels: bool
  build: Callable[[UnlearnContext], UnlearnProgram]
  config_key: str = "unlearn"  # the config section given to `build` as ctx.config
