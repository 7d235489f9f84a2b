r"""Traces a registered method's steps and lists their costliest XLA operations.

  python benchmarks/profile_step.py --model=resnet18 --method=mixunlearn_agnostic \
      --steps=4 --trace_dir=runs/trace --out=runs/trace/top_ops.json

Builds the method's program as `mixunlearn_jax.benchmark` does, runs `--steps`
steps of each distinct phase step under `jax.profiler.trace` (TensorBoard and
Perfetto formats in --trace_dir), and prints the `--count` costliest XLA
operations per step with the JAX source op each was compiled from, e.g.
`transpose(jvp(CNN))/Conv_1/conv_general_dilated` for a kernel gradient. A
`cond` entry spans the operations of the branch it ran. Profiling adds
overhead: take timings from the benchmark, not from here.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from mixunlearn_jax import benchmark, config as config_lib, methods, models, runtime
from mixunlearn_jax.engine import parallel, supervised
import jax


def top_operations(trace_dir, hlo_text, num_steps, count=20):
  """The `count` costliest XLA operations in the newest Perfetto trace of `trace_dir`."""
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=["cnn", "resnet18"], default="cnn")
  parser.add_argument("--method", default="mixunlearn_agnostic", choices=methods.names())
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--set", action="append", default=[], help="section.field=value")
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--count", type=int, default=20)
  parser.add_argument("--trace_dir", required=True)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)

  mesh = parallel.make_mesh()
  config = config_lib.base_config()
  config.batch_size = args.batch_size
  for text in args.set:
    config_lib.set_field(config, *config_lib.parse_override(text, config))
  image_shape = {"cnn": (28, 28, 1), "resnet18": (32, 32, 3)}[args.model]
  model = models.create(args.model)
  initial = jax.jit(lambda key: supervised.init_variables(model, key, image_shape),
                    out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  _, program, frozen = benchmark.method_program(
      args.method, model, initial, config=config, image_shape=image_shape, num_classes=10,
      mesh=mesh, seed=0, num_forget=5923, num_remain=54077)
  results, state, done = {}, program.state, set()
  for phase in program.phases:
    if phase.step in done:
      continue
    done.add(phase.step)
    batch = benchmark.random_batch(phase.stream, 0, image_shape, 10, mesh)
    compiled, _ = benchmark.compile_step(parallel.jit_step(phase.step, mesh, num_frozen=1),
                                         state, batch, frozen)
    state, _ = benchmark.time_steps(compiled, state, (batch, frozen), warmup=1, steps=0)
    trace_dir = os.path.join(args.trace_dir, phase.name)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      state, _ = benchmark.time_steps(compiled, state, (batch, frozen), warmup=0,
                                      steps=args.steps)
    results[phase.name] = top_operations(trace_dir, compiled.as_text(), args.steps, args.count)
    for entry in results[phase.name]:
      print(f"{phase.name}: {entry['ms_per_step']:8.2f} ms  {entry['op']}  {entry['source']}")
  if args.out:
    benchmark.write_json(results, args.out)


if __name__ == "__main__":
  runtime.configure()
  main()
