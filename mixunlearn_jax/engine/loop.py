"""The one checkpointed training loop that every stage runs through.

A stage is (initial state, jitted step, batch source, step count). The loop
restores the newest checkpoint of the stage if there is one, feeds batches
from that step on, logs and checks losses every `log_every` steps (the only
host syncs), saves every `checkpoint_every` steps and at the end, and records
wall time and throughput in the checkpoint's metadata so a resumed stage
reports totals.
"""

import dataclasses
import itertools
import logging as std_logging
import math
import os
import time
from typing import Any, Callable, Iterator

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from flax.metrics import tensorboard


class _OnlyWarningsFromOrbax(std_logging.Filter):
  """Orbax logs every checkpoint step at INFO; keep the progress lines readable."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logging():
  """Drops Orbax's INFO lines from the absl log (entry points call this once)."""
  logging.get_absl_handler().addFilter(_OnlyWarningsFromOrbax())


class NonFiniteLossError(RuntimeError):
  """A loss (or, raised by evaluation, a model's outputs) became NaN or infinite.

  A stage that raises it keeps its last good checkpoint.
  """

  def __init__(self, stage, step, values):
    super().__init__(f"{stage}: non-finite {values} at step {step}.")
    self.stage, self.step, self.values = stage, step, values


@dataclasses.dataclass(frozen=True)
class StageResult:
  state: Any
  seconds: float  # wall time of the stage's steps, summed over resumes, compilation left out
  examples_per_sec: float
  compile_seconds: float = 0.0  # the step's compilation, summed over resumes
  metrics: dict = dataclasses.field(default_factory=dict)  # the last step's scalars
  # With a stopping monitor: {'checks': [...], 'stopped': a reason or None}.
  stop: dict | None = None
  steps: int = 0  # the steps it ran: num_steps, or where the monitor stopped it


def run_stage(*, name, directory, state, step_fn: Callable, batches: Callable[[int], Iterator],
              num_steps, examples_per_step, checkpoint_every, log_every,
              write_summaries=True, args=(), monitor=None) -> StageResult:
  """Runs `state, metrics = step_fn(state, batch, *args)` up to `num_steps`, resumably.

  Args:
    name: stage name for logs and errors (e.g. 'seed 0 / unlearn mixunlearn_aware').
    directory: the stage's folder; checkpoints and TensorBoard events go there.
    state: the initial state, already placed on the devices (it also serves as
      the restore target: its shardings say where restored arrays go).
    step_fn: the step; it receives ownership of `state` (donation). A jitted
      step is compiled on the first batch before the clock starts.
    batches: batches(start_step) yields device batches for steps start_step...
    num_steps: total number of steps of the stage.
    examples_per_step: for the throughput figure.
    checkpoint_every, log_every: intervals in steps.
    write_summaries: whether this process writes TensorBoard scalars.
    args: further arguments of every step (e.g. the frozen models).
    monitor: a stopping rule (engine/stopping.py, Watch): after each step
      where `monitor.due(step)`, the loop appends `monitor.check(step, state)`
      to the stage's checks and stops early when `monitor.halt(checks)` gives
      a reason. The checks and the reason are saved with every checkpoint,
      and a stage stopped early counts as finished.
  """
  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(directory, "checkpoints")),
      options=ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.LatestN(2), create=True))
  start, seconds, compile_seconds, scalars = 0, 0.0, 0.0, {}
  checks, stopped = [], None
  if manager.latest_step() is not None:
    start = manager.latest_step()
    restored = manager.restore(start, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state), meta=ocp.args.JsonRestore()))
    state, seconds = restored.state, restored.meta["seconds"]
    compile_seconds = restored.meta.get("compile_seconds", 0.0)
    scalars = restored.meta.get("metrics", {})
    checks, stopped = restored.meta.get("checks", []), restored.meta.get("stopped")
    logging.info("%s: resumed at step %d/%d.", name, start, num_steps)
  if start >= num_steps or stopped:
    manager.close()
    return StageResult(state, seconds, _throughput(start, examples_per_step, seconds),
                       compile_seconds, scalars, _stop(monitor, checks, stopped), start)

  writer = tensorboard.SummaryWriter(directory) if write_summaries else None
  elapsed = 0.0
  try:
    step = start
    iterator = batches(start)
    first = next(iterator)
    step_fn, seconds_to_compile = _compiled(step_fn, state, first, args)
    if monitor:
      seconds_to_compile += monitor.compile(state)
    compile_seconds += seconds_to_compile
    logging.info("%s: compiled in %.1fs.", name, seconds_to_compile)
    timer = _Timer(start)
    if monitor and start == 0 and monitor.due(0):  # the starting model, before any step
      checks.append(_log_check(name, monitor.check(0, state), writer))
    for batch in itertools.chain([first], iterator):
      state, metrics = step_fn(state, batch, *args)
      step += 1
      if monitor and monitor.due(step):
        checks.append(_log_check(name, monitor.check(step, state), writer))
        stopped = monitor.halt(checks)
      done = step == num_steps or stopped
      at_log, at_save = step % log_every == 0, step % checkpoint_every == 0
      if at_log or at_save or done:
        scalars = _check_finite(name, step, jax.device_get(metrics))
        timer.lap(step)
        if at_log or done:
          _log(name, step, num_steps, scalars, timer, examples_per_step, writer)
      if at_save or done:
        # The stage's time is its steps' time up to the last save, the same
        # number a run that later reuses this stage reads from the checkpoint.
        elapsed = timer.elapsed
        meta = {"step": step, "num_steps": num_steps, "seconds": seconds + elapsed,
                "compile_seconds": compile_seconds, "examples_per_step": examples_per_step,
                "metrics": scalars, **({"checks": checks, "stopped": stopped} if monitor else {})}
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
      if done:
        if stopped:
          logging.info("%s: stopped at step %d/%d (%s).", name, step, num_steps, stopped)
        break
  finally:
    manager.wait_until_finished()
    manager.close()
    if writer:
      writer.close()
  return StageResult(state, seconds + elapsed,
                     _throughput(step - start, examples_per_step, elapsed), compile_seconds,
                     scalars, _stop(monitor, checks, stopped), step)


def _stop(monitor, checks, stopped):
  """StageResult.stop: the stage's checks and why it stopped early (or None)."""
  return {"checks": checks, "stopped": stopped} if monitor else None


def _log_check(name, check, writer):
  """Logs one check of the stopping rule (and writes it to TensorBoard); returns it."""
  logging.info("%s: stopping rule at step %d: %s", name, check["step"],
               ", ".join(f"{k}={v:.4f}" for k, v in check.items() if k != "step"))
  if writer:
    for k, v in check.items():
      if k != "step":
        writer.scalar(f"stop/{k}", v, check["step"])
  return check


def _compiled(step_fn, state, batch, args):
  """(the step compiled for these arguments, seconds it took); plain callables as they are."""
  if not hasattr(step_fn, "lower"):
    return step_fn, 0.0
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch, *args).compile()
  return compiled, time.perf_counter() - start


def has_checkpoint(directory):
  """Whether the stage in `directory` has saved a step (finished or not)."""
  folder = os.path.join(directory, "checkpoints")
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def restore_finished(directory, state) -> StageResult:
  """The final state of a finished stage in `directory` (e.g. of another workdir)."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(directory, "checkpoints")))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"No checkpoint of a finished stage in {directory}.")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(state), meta=ocp.args.JsonRestore()))
  manager.close()
  meta = restored.meta
  if meta["step"] != meta["num_steps"]:
    raise ValueError(f"The stage in {directory} stopped at step {meta['step']} of "
                     f"{meta['num_steps']}; finish it there first.")
  return StageResult(restored.state, meta["seconds"],
                     _throughput(meta["num_steps"], meta.get("examples_per_step", 0),
                                 meta["seconds"]), meta.get("compile_seconds", 0.0),
                     meta.get("metrics", {}), steps=meta["num_steps"])


class _Timer:
  """Wall time from the first step on (the step is compiled before)."""

  def __init__(self, start_step):
    self.t0 = self.t_lap = time.perf_counter()
    self.step_lap = start_step
    self.rate = float("nan")

  @property
  def elapsed(self):
    return time.perf_counter() - self.t0

  def lap(self, step):
    now = time.perf_counter()
    self.rate = (step - self.step_lap) / max(now - self.t_lap, 1e-9)
    self.t_lap, self.step_lap = now, step


def _check_finite(name, step, metrics):
  scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
  bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
  if bad:
    raise NonFiniteLossError(name, step, bad)
  return scalars


def _log(name, step, num_steps, scalars, timer, examples_per_step, writer):
  steps_per_sec = timer.rate
  eta = (num_steps - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
  losses = ", ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items()))
  logging.info("%s: step %d/%d (%3.0f%%) %s | %.1f steps/s, %.0f examples/s, eta %.0fs",
               name, step, num_steps, 100.0 * step / num_steps, losses, steps_per_sec,
               steps_per_sec * examples_per_step, eta)
  if writer:
    for k, v in scalars.items():
      writer.scalar(k, v, step)
    writer.scalar("examples_per_sec", steps_per_sec * examples_per_step, step)


def _throughput(steps, examples_per_step, seconds):
  return steps * examples_per_step / seconds if seconds > 0 else 0.0
