r"""Throughput of the MixUnlearn step, the supervised step and the input pipeline.

  python -m mixunlearn_jax.benchmark --model=cnn --batch_size=32 --out=runs/bench/jax_cnn.json
  python -m mixunlearn_jax.benchmark --model=resnet18 --batch_size=32 --steps=5 \
      --out=runs/bench/jax_resnet18.json
  python -m mixunlearn_jax.benchmark --nomodel_steps --input_pipeline --dataset=mnist \
      --manual_dir=../shared/datasets/mnist --data_dir=runs/tfds \
      --out=runs/bench/pipeline_mnist.json
  python -m mixunlearn_jax.benchmark --nomodel_steps --input_pipeline --dataset=cifar10 \
      --mock_data --out=runs/bench/pipeline_cifar10_mock.json

Steps run on one fixed batch of random normal images already on the devices,
so the numbers are the compiled programs' speed, not the input pipeline's.
Each program is compiled ahead of time (`jit(...).lower(...).compile()`), run
`--warmup` times, then timed step by step with `jax.block_until_ready` on the
step's metrics:

- `unlearn_step.generator_step_ms`: median over steps of a program with
  gen_interval=1, so every step takes the generator branch;
- `unlearn_step.plain_step_ms`: median with a gen_interval no step reaches
  (the state starts at step 1), so no step takes it;
- `unlearn_step.steps_per_sec` / `examples_per_sec`: the mean over whole
  gen_intervals at the config's interval (4), the mix a real run sees;
- `train_step.*`: the supervised Adam step of pretraining, median.

Convention (`examples_per_step` in the JSON): one unlearning example is one
(forget, remain) pair, so an unlearning step on batch size B counts B
examples, although f_D sees 2B images and the unlearner 3B. A supervised step
counts its B images. The input pipeline and the experiment's logs and
results count unlearning throughput the same way.

FLOPs per step come from XLA's cost analysis of each compiled program, for a
fraction of the accelerator's peak: `unlearn_step.flops_per_step` is the mix,
plain-step FLOPs plus the generator branch's divided by the interval. XLA
does not count custom calls, so with oneDNN's convolutions (`conv_path`
'onednn', the CPU default) the FLOPs leave them out: count with
`--nocpu_onednn`. Peak memory from the device's
`memory_stats()` (None on CPU, where each program's temporary buffer size from
`memory_analysis()` is still reported).

With `--profile_dir`, the timed steps of the mixed unlearning program and of
the supervised step run under `jax.profiler.trace` (so they include the
profiler's overhead): the traces (TensorBoard and Perfetto formats) land in
`unlearn_step/` and `train_step/` of that folder, and the JSON's
`unlearn_step.profile` and `train_step.profile` list the costliest XLA
operations per step with the JAX source op each one was compiled from, e.g.
`transpose(jvp(CNN))/Conv_1/conv_general_dilated` for a kernel gradient.
"""

import collections
import functools
import glob
import gzip
import json
import os
import re
import statistics
import time
from unittest import mock

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.data import datasets
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import mixunlearn

_DEFAULT_IMAGE_SHAPE = {"cnn": (28, 28, 1), "resnet18": (32, 32, 3)}
# Training augmentation of each dataset's configs: (crop padding, random flip).
_AUGMENT = {"cifar10": (4, True), "svhn_cropped": (4, False)}

flags.DEFINE_enum("model", "cnn", sorted(_DEFAULT_IMAGE_SHAPE), "Classifier to time.")
flags.DEFINE_integer("batch_size", 32, "Global batch size (pairs per unlearning step).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the model.")
flags.DEFINE_string("out", None, "Where to write the JSON results.")
flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
flags.DEFINE_integer("warmup", 3, "Untimed steps before each measurement, after compilation.")
flags.DEFINE_integer("image_size", 0, "Image side; 0: 28 for cnn, 32 for resnet18.")
flags.DEFINE_integer("num_classes", 10, "Classes of the classifier.")
flags.DEFINE_bool("cpu_onednn", True, "On one CPU device, convolutions on oneDNN if installed.")
flags.DEFINE_bool("label_aware", False, "Time label-aware MixUnlearn (default: label-agnostic).")
flags.DEFINE_integer("seed", 0, "Seed of the random data and the initial model.")
flags.DEFINE_bool("model_steps", True, "Time the unlearning and supervised steps.")
flags.DEFINE_bool("input_pipeline", False, "Also time data.paired_pipeline on --dataset.")
flags.DEFINE_enum("dataset", "digits", ["digits", "mnist", "cifar10"], "Pipeline's dataset.")
flags.DEFINE_string("data_dir", None, "tfds data dir.")
flags.DEFINE_string("manual_dir", None, "Raw dataset files for offline preparation.")
flags.DEFINE_bool("mock_data", False,
                  "Use tfds.testing.mock_data (2,000 random examples) instead of the real "
                  "dataset, for timing the pipeline without network or prepared files.")
flags.DEFINE_integer("pipeline_batches", 300, "Timed pipeline batches.")
flags.DEFINE_integer("pipeline_warmup", 10, "Untimed pipeline batches before timing.")
flags.DEFINE_string("profile_dir", None,
                    "Trace the mixed unlearning steps and the supervised steps into this folder.")
FLAGS = flags.FLAGS


def with_interval(hp, gen_interval):
  """A copy of the method's config section with another gen_interval."""
  hp = ml_collections.ConfigDict(hp.to_dict())
  hp.gen_interval = gen_interval
  return hp


def random_batches(seed, batch_size, image_shape, num_classes, mesh):
  """A paired {'forget', 'remain'} batch and a supervised batch, on the devices."""
  rng = np.random.default_rng(seed)

  def side():
    return {"image": rng.standard_normal((batch_size, *image_shape), np.float32),
            "label": rng.integers(0, num_classes, batch_size).astype(np.int32)}

  pair = {"forget": side(), "remain": side()}
  sharding = parallel.data_sharded(mesh)
  return jax.device_put(pair, sharding), jax.device_put(side(), sharding)


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


def timed_and_profiled(compiled, state, args, *, warmup, steps, trace_dir=None):
  """time_steps' seconds, and the top operations of a trace into `trace_dir` if given."""
  if trace_dir is None:
    return time_steps(compiled, state, args, warmup=warmup, steps=steps)[1], None
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    _, seconds = time_steps(compiled, state, args, warmup=warmup, steps=steps)
  return seconds, top_operations(trace_dir, compiled.as_text(), steps)


def generator_branch_flops(model, state, pair, initial, hp, *, num_classes, label_aware,
                           compiler_options=None):
  """FLOPs of the step's generator branch alone: L_gen's gradient and the generator's Adam.

  XLA's cost analysis charges a `lax.cond` for its costlier branch, so every
  compiled unlearning step reports the FLOPs of a generator step whatever its
  gen_interval; the other branch is the identity, so a plain step costs the
  program minus this.
  """
  inputs = jax.jit(functools.partial(
      mixunlearn.frozen_inputs, model=model, num_classes=num_classes, label_aware=label_aware,
      sharpen_temperature=hp.sharpen_temperature))(initial, pair)
  lam = jax.jit(mixunlearn.sample_lambda, static_argnums=(1, 2, 3))(
      jax.random.key(0), hp.alpha, pair["forget"]["image"].shape[0], hp.per_sample_lambda)
  branch = functools.partial(  # the step's own branch, jitted alone
      mixunlearn.update_generator, model=model, mixblock=mixunlearn.make_mixblock(model),
      generator_tx=optax.adam(hp.generator_lr), tau_gen=hp.tau_gen)
  jitted = jax.jit(lambda state, inputs, lam: branch(state, inputs=inputs, lam=lam))
  _, cost = compile_step(jitted, state, inputs, lam, compiler_options=compiler_options)
  return cost["flops"]


def unlearn_program(model, initial, hp, *, image_shape, num_classes, batch_size, mesh,
                    label_aware, seed, start_step=0):
  """The method's own step, jitted as the engine does, and its initial state."""
  ctx = methods.UnlearnContext(
      model=model, initial=initial, image_shape=image_shape, num_classes=num_classes,
      num_forget=batch_size, num_remain=batch_size, batch_size=batch_size, config=hp, seed=seed,
      mesh=mesh, run_stage=None)
  program = mixunlearn.build(ctx, label_aware=label_aware)
  state = program.state
  if start_step:
    step = jax.device_put(np.asarray(start_step, state.step.dtype), parallel.replicated(mesh))
    state = state.replace(step=step)
  return parallel.jit_step(program.step, mesh, num_frozen=1), state


def bench_unlearn(model, initial, pair, *, image_shape, num_classes, batch_size, mesh,
                  label_aware, seed, steps, warmup, compiler_options=None, profile_dir=None):
  """Generator-only, plain-only and mixed unlearning steps (see the module doc)."""
  hp = config_lib.base_config().unlearn
  interval = hp.gen_interval
  # (gen_interval, first step, timed steps). The mix spans whole intervals so that exactly
  # 1/interval of its steps take the generator branch; the plain run never reaches a multiple.
  runs = {"generator": (1, 0, steps),
          "plain": (warmup + steps + 2, 1, steps),
          "mix": (interval, 0, -(-steps // interval) * interval)}
  seconds, programs, profiles = {}, {}, {}
  for name, (gen_interval, start_step, num_steps) in runs.items():
    jitted, state = unlearn_program(
        model, initial, with_interval(hp, gen_interval), image_shape=image_shape,
        num_classes=num_classes, batch_size=batch_size, mesh=mesh, label_aware=label_aware,
        seed=seed, start_step=start_step)
    compiled, programs[name] = compile_step(jitted, state, pair, initial,
                                            compiler_options=compiler_options)
    if name == "mix":
      branch_flops = generator_branch_flops(model, state, pair, initial, hp,
                                            num_classes=num_classes, label_aware=label_aware,
                                            compiler_options=compiler_options)
    trace_dir = os.path.join(profile_dir, "unlearn_step") if profile_dir and name == "mix" \
        else None
    seconds[name], profiles[name] = timed_and_profiled(
        compiled, state, (pair, initial), warmup=warmup, steps=num_steps, trace_dir=trace_dir)
  mix_s = statistics.mean(seconds["mix"])
  program_flops = programs["mix"]["flops"]
  plain_flops = None if program_flops is None else program_flops - branch_flops
  return {
      "examples_per_step": batch_size,
      "examples_per_sec": batch_size / mix_s,
      "steps_per_sec": 1.0 / mix_s,
      "mix_step_ms": 1e3 * mix_s,
      "generator_step_ms": 1e3 * statistics.median(seconds["generator"]),
      "plain_step_ms": 1e3 * statistics.median(seconds["plain"]),
      "gen_interval": interval,
      "timed_steps": {k: len(v) for k, v in seconds.items()},
      "generator_step_flops": program_flops,
      "plain_step_flops": plain_flops,
      "generator_branch_flops": branch_flops,
      "flops_per_step": None if plain_flops is None else plain_flops + branch_flops / interval,
      "programs": programs,
      **({"profile": profiles["mix"]} if profile_dir else {}),
  }


def top_operations(trace_dir, hlo_text, num_steps, count=20):
  """The `count` costliest XLA operations in the newest Perfetto trace of `trace_dir`.

  Each entry: the HLO instruction, its result shape, the JAX op it was
  compiled from (from the HLO's metadata) and its milliseconds per step. A
  `cond` entry spans the operations of the branch it ran.
  """
  sources = {}
  for match in re.finditer(r'%?([\w.\-]+) = (\S+) [^\n]*?op_name="([^"]+)"', hlo_text):
    sources[match.group(1)] = (match.group(2), match.group(3))
  path = max(glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"), recursive=True),
             key=os.path.getmtime)
  with gzip.open(path) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  micros = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event.get("name") in sources:
      micros[event["name"]] += event.get("dur", 0)
  return [{"op": name, "shape": sources[name][0], "source": sources[name][1],
           "ms_per_step": us / 1e3 / num_steps} for name, us in micros.most_common(count)]


def bench_train(model, batch, *, image_shape, batch_size, mesh, seed, steps, warmup,
                compiler_options=None, profile_dir=None):
  """The supervised step of pretraining and retraining (Adam, cross-entropy)."""
  tx = optax.adam(1e-3)
  state = supervised.create_train_state(model, tx, jax.random.key(seed), image_shape, mesh)
  jitted = parallel.jit_step(supervised.train_step, mesh, model=model, tx=tx)
  compiled, cost = compile_step(jitted, state, batch, compiler_options=compiler_options)
  seconds, profile = timed_and_profiled(
      compiled, state, (batch,), warmup=warmup, steps=steps,
      trace_dir=os.path.join(profile_dir, "train_step") if profile_dir else None)
  step_s = statistics.median(seconds)
  return {"examples_per_step": batch_size, "examples_per_sec": batch_size / step_s,
          "steps_per_sec": 1.0 / step_s, "step_ms": 1e3 * step_s, "timed_steps": steps,
          "flops_per_step": cost["flops"], "program": cost,
          **({"profile": profile} if profile_dir else {})}


def load_dataset(name, *, data_dir, manual_dir, mock_data):
  """The dataset; under `mock_data`, tfds' random examples and no preparation."""
  if not mock_data or name == "digits":
    return data.load(name, data_dir=data_dir, manual_dir=manual_dir, download=False)
  with tfds.testing.mock_data(num_examples=2000), \
       mock.patch.object(datasets, "prepare", lambda *args, **kwargs: None):
    return data.load(name, data_dir=data_dir)


def bench_input_pipeline(dataset, *, batch_size, seed, batches, warmup):
  """Pairs per second that `data.paired_pipeline` yields on the host (class 0 forgotten)."""
  crop_padding, random_flip = _AUGMENT.get(dataset.name, (0, False))
  preprocess = data.Preprocess(dataset.mean, dataset.std, crop_padding, random_flip)
  labels = dataset.train_labels
  iterator = data.paired_pipeline(
      dataset.train_images, labels, np.flatnonzero(labels == 0), np.flatnonzero(labels != 0),
      batch_size=batch_size, num_steps=warmup + batches, seed=seed, preprocess=preprocess,
      with_labels=True)
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
          "cpu_count": os.cpu_count(), "malloc": malloc_name()}


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
        image_size=0, num_classes=10, label_aware=False, seed=0, model_steps=True, dataset=None,
        pipeline_batches=300, pipeline_warmup=10, compiler_options=None, profile_dir=None):
  """All measurements as one JSON-ready dict; `dataset` (a data.Dataset) adds the pipeline.

  `compiler_options` go to every XLA compilation (tests lower the backend's
  optimisation level to compile faster; the timings then mean nothing).
  """
  mesh = parallel.make_mesh()
  parallel.check_batch_size(batch_size, mesh)
  side, _, channels = _DEFAULT_IMAGE_SHAPE[model_name]
  image_shape = (image_size or side, image_size or side, channels)
  results = {"model": model_name, "batch_size": batch_size, "dtype": dtype,
             "image_shape": list(image_shape), "label_aware": label_aware,
             "examples_per_step": "unlearn_step: batch_size (forget, remain) pairs per step; "
                                  "train_step: batch_size images; input_pipeline: batch_size "
                                  "pairs per element",
             **environment(mesh)}
  if model_steps:
    model = models.create(model_name, num_classes=num_classes, dtype=dtype,
                          cpu_onednn=cpu_onednn)
    results["conv_path"] = models.conv_path(cpu_onednn, dtype)
    initial = jax.jit(lambda key: supervised.init_variables(model, key, image_shape),
                      out_shardings=parallel.replicated(mesh))(jax.random.key(seed))
    pair, batch = random_batches(seed, batch_size, image_shape, num_classes, mesh)
    results["num_params"] = sum(x.size for x in jax.tree.leaves(initial["params"]))
    results["unlearn_step"] = bench_unlearn(
        model, initial, pair, image_shape=image_shape, num_classes=num_classes,
        batch_size=batch_size, mesh=mesh, label_aware=label_aware, seed=seed, steps=steps,
        warmup=warmup, compiler_options=compiler_options, profile_dir=profile_dir)
    results["train_step"] = bench_train(model, batch, image_shape=image_shape,
                                        batch_size=batch_size, mesh=mesh, seed=seed,
                                        steps=steps, warmup=warmup,
                                        compiler_options=compiler_options,
                                        profile_dir=profile_dir)
  if dataset is not None:
    results["input_pipeline"] = bench_input_pipeline(
        dataset, batch_size=batch_size, seed=seed, batches=pipeline_batches,
        warmup=pipeline_warmup)
  results["memory"] = peak_memory()
  return results


def summary_lines(results):
  """One line per measured item."""
  head = f"{results['model']} B={results['batch_size']} {results['dtype']} " \
         f"on {results['device_count']}x {results['device_kind']}"
  if "conv_path" in results:
    head += f" ({results['conv_path']} convolutions)"
  lines = []
  if "unlearn_step" in results:
    u = results["unlearn_step"]
    lines += [
        f"{head} unlearn_step (gen_interval={u['gen_interval']}): "
        f"{u['examples_per_sec']:.1f} pairs/s, {u['steps_per_sec']:.2f} steps/s, "
        f"{u['mix_step_ms']:.2f} ms/step",
        f"{head} unlearn_step generator: {u['generator_step_ms']:.2f} ms/step (median)",
        f"{head} unlearn_step plain: {u['plain_step_ms']:.2f} ms/step (median)",
    ]
  if "train_step" in results:
    t = results["train_step"]
    lines.append(f"{head} train_step: {t['examples_per_sec']:.1f} images/s, "
                 f"{t['steps_per_sec']:.2f} steps/s, {t['step_ms']:.2f} ms/step")
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
                image_size=FLAGS.image_size,
                num_classes=FLAGS.num_classes, label_aware=FLAGS.label_aware, seed=FLAGS.seed,
                model_steps=FLAGS.model_steps, dataset=dataset,
                pipeline_batches=FLAGS.pipeline_batches, pipeline_warmup=FLAGS.pipeline_warmup,
                profile_dir=FLAGS.profile_dir)
  for line in summary_lines(results):
    print(line, flush=True)
  if FLAGS.out and jax.process_index() == 0:
    write_json(results, FLAGS.out)
    print(f"Wrote {FLAGS.out}", flush=True)


if __name__ == "__main__":
  app.run(main)
