r"""Throughput of any registered method's steps, the supervised step and the input pipeline.

  python -m mixunlearn_jax.benchmark --model=cnn --batch_size=32 --out=runs/bench/jax_cnn.json
  python -m mixunlearn_jax.benchmark --model=cnn --methods=mixunlearn_agnostic,neggrad,scrub \
      --out=runs/bench/jax_cnn_baselines.json
  python -m mixunlearn_jax.benchmark --model=resnet18 --batch_size=32 --steps=4 \
      --methods=mixunlearn_agnostic --set=mixunlearn.gen_interval=1 --out=runs/bench/gen.json
  python -m mixunlearn_jax.benchmark --nomodel_steps --input_pipeline --dataset=mnist \
      --manual_dir=../shared/datasets/mnist --data_dir=runs/tfds \
      --out=runs/bench/pipeline_mnist.json

Every method goes through the registry alone: the benchmark builds the
method's program as the job does (its config section, `--set` overrides
applied; auxiliary models a method would train through `ctx.run` are left
at their initial state), then times each distinct step function of its
phases on one random batch of that phase's stream, already on the devices,
so the numbers are the compiled programs' speed, not the input pipeline's.
Each program is compiled ahead of time (`jit(...).lower(...).compile()`),
run `--warmup` times, then `--steps` consecutive steps are timed one by one
with `jax.block_until_ready` on the step's metrics, continuing the state.

Per phase: `step_ms` (median), `mean_step_ms` (the mean over the consecutive
steps, e.g. MixUnlearn's mix of generator and plain steps when `--steps` is
a multiple of its gen_interval, the default 20 of 4), `examples_per_sec`
(from the mean) and `flops_per_step` (XLA's cost analysis; it charges a
`lax.cond` for its costlier branch and does not count custom calls, so with
oneDNN's convolutions, the default on one CPU device, count with
`--nocpu_onednn`). Per method, `examples_per_sec` weighs its phases by their
steps in a run on `--num_forget` / `--num_remain` samples (MNIST's class
setup by default). An example is one sample of the stream's first side: one
(forget, remain) pair for MixUnlearn, one remain image for NegGrad+.
`train_step`: the supervised Adam step of pretraining, median, B images.
Peak memory from the device's `memory_stats()` (None on CPU, where each
program's temporary buffer size from `memory_analysis()` is still reported).

benchmarks/profile_step.py traces a method's step and lists its costliest
XLA operations.
"""

import json
import os
import statistics
import time
from unittest import mock

from absl import app
from absl import flags
import jax
import numpy as np
import optax
import tensorflow_datasets as tfds

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax import runtime
from mixunlearn_jax.data import datasets
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised

_DEFAULT_IMAGE_SHAPE = {"cnn": (28, 28, 1), "resnet18": (32, 32, 3)}
# Training augmentation of each dataset's configs: (crop padding, random flip).
_AUGMENT = {"cifar10": (4, True), "svhn_cropped": (4, False)}

FLAGS = flags.FLAGS


def define_flags():
  """Defined when the module runs as a program, so that the CLI modules import side by side."""
  flags.DEFINE_enum("model", "cnn", sorted(_DEFAULT_IMAGE_SHAPE), "Classifier to time.")
  flags.DEFINE_integer("batch_size", 32, "The job's batch size (MixUnlearn's pairs per step, "
                       "the supervised step's images); baselines use their config sections'.")
  flags.DEFINE_list("methods", ["mixunlearn_agnostic"], "Registered methods to time.")
  flags.DEFINE_multi_string("set", [], "section.field=value: a config override, e.g. "
                            "mixunlearn.gen_interval=1 or neggrad.remain_batch_size=64.")
  flags.DEFINE_integer("num_forget", 5923, "|D_f| for the methods' phase lengths.")
  flags.DEFINE_integer("num_remain", 54077, "|D_r| for the methods' phase lengths.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the model.")
  flags.DEFINE_string("out", None, "Where to write the JSON results.")
  flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps before each measurement, after compilation.")
  flags.DEFINE_integer("image_size", 0, "Image side; 0: 28 for cnn, 32 for resnet18.")
  flags.DEFINE_integer("num_classes", 10, "Classes of the classifier.")
  flags.DEFINE_bool("cpu_onednn", True, "On one CPU device, convolutions on oneDNN if installed.")
  flags.DEFINE_integer("seed", 0, "Seed of the random data and the initial model.")
  flags.DEFINE_bool("model_steps", True, "Time the methods' and the supervised steps.")
  flags.DEFINE_bool("input_pipeline", False, "Also time MixUnlearn's paired stream on --dataset.")
  flags.DEFINE_enum("dataset", "digits", ["digits", "mnist", "cifar10"], "Pipeline's dataset.")
  flags.DEFINE_string("data_dir", None, "tfds data dir.")
  flags.DEFINE_string("manual_dir", None, "Raw dataset files for offline preparation.")
  flags.DEFINE_bool("mock_data", False,
                    "Use tfds.testing.mock_data (2,000 random examples) instead of the real "
                    "dataset, for timing the pipeline without network or prepared files.")
  flags.DEFINE_integer("pipeline_batches", 300, "Timed pipeline batches.")
  flags.DEFINE_integer("pipeline_warmup", 10, "Untimed pipeline batches before timing.")


def random_batch(stream, seed, image_shape, num_classes, mesh, num_train=60000):
  """One batch of `stream`: random normal images and what its sides ask for, on the devices."""
  rng = np.random.default_rng(seed)
  batch = {}
  for key, side in stream.items():
    size = side.batch_size
    batch[key] = {"image": rng.standard_normal((size, *image_shape), np.float32)}
    if side.labels:
      batch[key]["label"] = rng.integers(0, num_classes, size).astype(np.int32)
    if side.index:
      batch[key]["index"] = rng.integers(0, num_train, size).astype(np.int32)
    if side.source in ("mixed", "all"):
      batch[key]["tag"] = rng.integers(0, 2, size).astype(np.int32)
    if side.one_pass:
      batch[key]["mask"] = np.ones(size, np.float32)
  return jax.device_put(batch, parallel.data_sharded(mesh))


def compile_step(jitted, *args, compiler_options=None):
  """(compiled program, {'flops', 'bytes_accessed', 'temp_bytes', 'compile_s'})."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile(compiler_options)
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  memory = compiled.memory_analysis()
  return compiled, {"flops": cost.get("flops"), "bytes_accessed": cost.get("bytes accessed"),
                    "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
                    "compile_s": seconds}


def time_steps(step, state, args, *, warmup, steps):
  """Runs `warmup` then `steps` steps; returns the final state and each step's seconds."""
  for _ in range(warmup):
    state, metrics = step(state, *args)
  jax.block_until_ready(state)
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, *args)
    jax.block_until_ready(metrics)
    seconds.append(time.perf_counter() - start)
  return state, seconds


def method_program(name, model, initial, *, config, image_shape, num_classes, mesh, seed,
                   num_forget, num_remain):
  """(method, program, frozen) of a registered method, built as the job builds it."""
  method = methods.get(name)
  ctx = methods.UnlearnContext(
      model=model, initial=initial, image_shape=image_shape, num_classes=num_classes,
      num_forget=num_forget, num_remain=num_remain, batch_size=config.batch_size,
      config=method.hyperparameters(config), seed=seed, mesh=mesh,
      theta0=lambda: initial,
      recipe=config_lib.pretraining_recipe(config),
      run=lambda phase, state, counts=True: state,  # auxiliary models are not trained here
      preprocess=data.Preprocess((0.0,) * image_shape[-1], (1.0,) * image_shape[-1]),
      forget=np.arange(num_forget), remain=np.arange(num_forget, num_forget + num_remain))
  program = method.build(ctx)
  frozen = {"initial": initial,
            **jax.device_put(dict(program.frozen), parallel.replicated(mesh))}
  return method, program, frozen


def bench_method(name, model, initial, *, config, image_shape, num_classes, mesh, seed, steps,
                 warmup, num_forget, num_remain, compiler_options=None):
  """Each distinct step of the method's phases, timed as the module doc says."""
  method, program, frozen = method_program(
      name, model, initial, config=config, image_shape=image_shape, num_classes=num_classes,
      mesh=mesh, seed=seed, num_forget=num_forget, num_remain=num_remain)
  timed, phases, state = {}, [], program.state
  for phase in program.phases:
    methods.check_stream(method, phase.stream)
    if phase.step not in timed:
      batch = random_batch(phase.stream, seed, image_shape, num_classes, mesh)
      jitted = parallel.jit_step(phase.step, mesh, num_frozen=1)
      compiled, cost = compile_step(jitted, state, batch, frozen,
                                    compiler_options=compiler_options)
      state, seconds = time_steps(compiled, state, (batch, frozen), warmup=warmup, steps=steps)
      mean_s = statistics.mean(seconds)
      timed[phase.step] = {
          "phase": phase.name, "examples_per_step": phase.examples_per_step,
          "step_ms": 1e3 * statistics.median(seconds), "mean_step_ms": 1e3 * mean_s,
          "examples_per_sec": phase.examples_per_step / mean_s, "steps_per_sec": 1.0 / mean_s,
          "timed_steps": steps, "flops_per_step": cost["flops"], "program": cost}
      phases.append(timed[phase.step])
  examples = sum(p.num_steps * p.examples_per_step for p in program.phases)
  seconds = sum(p.num_steps * timed[p.step]["mean_step_ms"] / 1e3 for p in program.phases)
  return {"labels": method.labels, "phases": phases, "examples_per_sec": examples / seconds,
          "run_steps": sum(p.num_steps for p in program.phases),
          "overrides": dict(method.overrides)}


def bench_train(model, batch, *, image_shape, batch_size, mesh, seed, steps, warmup,
                compiler_options=None):
  """The supervised step of pretraining and retraining (Adam, cross-entropy)."""
  tx = optax.adam(1e-3)
  state = supervised.create_train_state(model, tx, jax.random.key(seed), image_shape, mesh)
  jitted = parallel.jit_step(supervised.train_step, mesh, model=model, tx=tx)
  compiled, cost = compile_step(jitted, state, batch, compiler_options=compiler_options)
  _, seconds = time_steps(compiled, state, (batch,), warmup=warmup, steps=steps)
  step_s = statistics.median(seconds)
  return {"examples_per_step": batch_size, "examples_per_sec": batch_size / step_s,
          "steps_per_sec": 1.0 / step_s, "step_ms": 1e3 * step_s, "timed_steps": steps,
          "flops_per_step": cost["flops"], "program": cost}


def load_dataset(name, *, data_dir, manual_dir, mock_data):
  """The dataset; under `mock_data`, tfds' random examples and no preparation."""
  if not mock_data or name == "digits":
    return data.load(name, data_dir=data_dir, manual_dir=manual_dir, download=False)
  with tfds.testing.mock_data(num_examples=2000), \
       mock.patch.object(datasets, "prepare", lambda *args, **kwargs: None):
    return data.load(name, data_dir=data_dir)


def bench_input_pipeline(dataset, *, batch_size, seed, batches, warmup):
  """Pairs per second that MixUnlearn's paired stream yields on the host (class 0 forgotten)."""
  crop_padding, random_flip = _AUGMENT.get(dataset.name, (0, False))
  preprocess = data.Preprocess(dataset.mean, dataset.std, crop_padding, random_flip)
  labels = dataset.train_labels
  iterator = data.stream_pipeline(
      dataset.train_images, labels, np.flatnonzero(labels == 0), np.flatnonzero(labels != 0),
      data.paired_stream(batch_size, labels=True), num_steps=warmup + batches, seed=seed,
      preprocess=preprocess)
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return {"dataset": dataset.name, "image_shape": list(dataset.image_shape),
          "examples_per_step": batch_size, "examples_per_sec": batches * batch_size / seconds,
          "batches_per_sec": batches / seconds, "timed_batches": batches,
          "crop_padding": crop_padding, "random_flip": random_flip}


def environment(mesh):
  device = jax.devices()[0]
  return {"jax_version": jax.__version__, "platform": device.platform,
          "device_kind": device.device_kind, "device_count": jax.device_count(),
          "process_count": jax.process_count(), "mesh_shape": dict(mesh.shape),
          "cpu_count": os.cpu_count(), "machine": runtime.machine(), "malloc": malloc_name()}


def malloc_name():
  """'tcmalloc' when it is loaded (launch/tcmalloc.sh), else 'system'."""
  try:
    with open("/proc/self/maps") as f:
      return "tcmalloc" if "libtcmalloc" in f.read() else "system"
  except OSError:  # not Linux
    return "system"


def peak_memory():
  """Peak bytes in use on device 0 over this process, or None (e.g. on CPU)."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return {"peak_bytes": None, "bytes_limit": None}
  return {"peak_bytes": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}


def run(*, model_name="cnn", batch_size=32, dtype="float32", cpu_onednn=True, steps=20, warmup=3,
        image_size=0, num_classes=10, method_names=("mixunlearn_agnostic",), overrides=(),
        num_forget=5923, num_remain=54077, seed=0, model_steps=True, dataset=None,
        pipeline_batches=300, pipeline_warmup=10, compiler_options=None):
  """All measurements as one JSON-ready dict; `dataset` (a data.Dataset) adds the pipeline.

  `overrides`: 'section.field=value' strings applied to the base config.
  `compiler_options` go to every XLA compilation (tests lower the backend's
  optimisation level to compile faster; the timings then mean nothing).
  """
  mesh = parallel.make_mesh()
  parallel.check_batch_size(batch_size, mesh)
  config = config_lib.base_config()
  config.batch_size = batch_size
  for text in overrides:
    config_lib.set_field(config, *config_lib.parse_override(text, config))
  side, _, channels = _DEFAULT_IMAGE_SHAPE[model_name]
  image_shape = (image_size or side, image_size or side, channels)
  results = {"model": model_name, "batch_size": batch_size, "dtype": dtype,
             "image_shape": list(image_shape), "overrides": list(overrides),
             "examples_per_step": "methods: one sample of a phase's first stream side (a "
                                  "(forget, remain) pair for MixUnlearn); train_step: batch_size "
                                  "images; input_pipeline: batch_size pairs per element",
             **environment(mesh)}
  if model_steps:
    model = models.create(model_name, num_classes=num_classes, dtype=dtype,
                          cpu_onednn=cpu_onednn)
    results["conv_path"] = models.conv_path(cpu_onednn, dtype)
    initial = jax.jit(lambda key: supervised.init_variables(model, key, image_shape),
                      out_shardings=parallel.replicated(mesh))(jax.random.key(seed))
    results["num_params"] = sum(x.size for x in jax.tree.leaves(initial["params"]))
    results["methods"] = {
        name: bench_method(name, model, initial, config=config, image_shape=image_shape,
                           num_classes=num_classes, mesh=mesh, seed=seed, steps=steps,
                           warmup=warmup, num_forget=num_forget, num_remain=num_remain,
                           compiler_options=compiler_options)
        for name in method_names}
    batch = random_batch({"train": data.Side("remain", batch_size, labels=True)}, seed,
                         image_shape, num_classes, mesh)["train"]
    results["train_step"] = bench_train(model, batch, image_shape=image_shape,
                                        batch_size=batch_size, mesh=mesh, seed=seed,
                                        steps=steps, warmup=warmup,
                                        compiler_options=compiler_options)
  if dataset is not None:
    results["input_pipeline"] = bench_input_pipeline(
        dataset, batch_size=batch_size, seed=seed, batches=pipeline_batches,
        warmup=pipeline_warmup)
  results["memory"] = peak_memory()
  return results


def summary_lines(results):
  """One line per measured item."""
  head = f"{results['model']} {results['dtype']} on {results['device_count']}x " \
         f"{results['device_kind']}"
  if "conv_path" in results:
    head += f" ({results['conv_path']} convolutions)"
  lines = []
  for name, method in results.get("methods", {}).items():
    for phase in method["phases"]:
      lines.append(f"{head} {name}/{phase['phase']} B={phase['examples_per_step']}: "
                   f"{phase['examples_per_sec']:.1f} examples/s, "
                   f"{phase['mean_step_ms']:.2f} ms/step (mean), {phase['step_ms']:.2f} (median)")
  if "train_step" in results:
    t = results["train_step"]
    lines.append(f"{head} train_step B={results['batch_size']}: {t['examples_per_sec']:.1f} "
                 f"images/s, {t['steps_per_sec']:.2f} steps/s, {t['step_ms']:.2f} ms/step")
  if "input_pipeline" in results:
    p = results["input_pipeline"]
    lines.append(f"input_pipeline {p['dataset']} B={results['batch_size']}: "
                 f"{p['examples_per_sec']:.0f} pairs/s, {p['batches_per_sec']:.1f} batches/s")
  memory = results["memory"]["peak_bytes"]
  lines.append(f"peak device memory: {'n/a' if memory is None else f'{memory / 2**20:.1f} MiB'}")
  return lines


def write_json(results, path):
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(results, f, indent=2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (FLAGS.model_steps or FLAGS.input_pipeline):
    raise app.UsageError("Nothing to time: --nomodel_steps needs --input_pipeline.")
  parallel.maybe_initialize_distributed()
  dataset = None
  if FLAGS.input_pipeline:
    dataset = load_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                           mock_data=FLAGS.mock_data)
  results = run(model_name=FLAGS.model, batch_size=FLAGS.batch_size, dtype=FLAGS.dtype,
                cpu_onednn=FLAGS.cpu_onednn, steps=FLAGS.steps, warmup=FLAGS.warmup,
                image_size=FLAGS.image_size, num_classes=FLAGS.num_classes,
                method_names=FLAGS.methods, overrides=FLAGS.set, num_forget=FLAGS.num_forget,
                num_remain=FLAGS.num_remain, seed=FLAGS.seed, model_steps=FLAGS.model_steps,
                dataset=dataset, pipeline_batches=FLAGS.pipeline_batches,
                pipeline_warmup=FLAGS.pipeline_warmup)
  for line in summary_lines(results):
    print(line, flush=True)
  if FLAGS.out and jax.process_index() == 0:
    write_json(results, FLAGS.out)
    print(f"Wrote {FLAGS.out}", flush=True)


if __name__ == "__main__":
  define_flags()
  runtime.configure()
  app.run(main)
