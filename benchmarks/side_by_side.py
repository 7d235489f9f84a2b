r"""JAX and eager PyTorch unlearning steps timed in turns, in one process.

On a shared or throttled CPU, two benchmark runs minutes apart can differ by
10% or more, more than the gaps worth measuring. This script builds both
steps (mixunlearn_jax's compiled one and pytorch_reference.py's), then times
whole generator intervals of each in turn, so that each JAX/PyTorch ratio
compares runs seconds apart:

  pip install torch==2.13.0
  python benchmarks/side_by_side.py --model=resnet18 --batch_size=32 --rounds=6 \
      --out=runs/bench/side_by_side_resnet18.json
  python benchmarks/side_by_side.py --model=cnn --batch_size=32 --rounds=10 --intervals=10 \
      --out=runs/bench/side_by_side_cnn.json

On Linux, run both under launch/tcmalloc.sh for the numbers of
docs/performance.md (item 12); the JSON records which malloc ran. The JAX
step runs once per convolution path of `--jax_convs`: `onednn` (the default
on one CPU device, models/onednn.py) and `xla` (XLA's own, Eigen).

Random data of the same shapes, the same models, hyperparameters and
gen_interval (4) as the two benchmarks; one unlearning example is one (forget, remain) pair. Both
frameworks use all cores (PyTorch with --num_threads threads); neither runs
while the other is timed.
"""

import argparse
import contextlib
import os
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), _HERE]  # the package and pytorch_reference.py

# pylint: disable=g-import-not-at-top,wrong-import-position
from mixunlearn_jax import benchmark, config as config_lib, models, runtime
from mixunlearn_jax.engine import parallel, supervised
import jax
import pytorch_reference
import torch


def jax_intervals(model_name, batch_size, seed, conv):
  """A function that runs n generator intervals of the JAX step; returns seconds."""
  mesh = parallel.make_mesh()
  channels, height, width = pytorch_reference.IMAGE_SHAPE[model_name]
  image_shape = (height, width, channels)
  path = models.conv_path(cpu_onednn=conv == "onednn")
  if path != conv:
    raise SystemExit(f"--jax_convs={conv}: here convolutions run on {path} (models.conv_path)")
  model = models.create(model_name, cpu_onednn=conv == "onednn")
  initial = jax.jit(lambda key: supervised.init_variables(model, key, image_shape),
                    out_shardings=parallel.replicated(mesh))(jax.random.key(seed))
  config = config_lib.base_config()
  config.batch_size = batch_size
  _, program, frozen = benchmark.method_program(
      "mixunlearn_agnostic", model, initial, config=config, image_shape=image_shape,
      num_classes=10, mesh=mesh, seed=seed, num_forget=5923, num_remain=54077)
  phase = program.phases[0]
  pair = benchmark.random_batch(phase.stream, seed, image_shape, 10, mesh)
  compiled, _ = benchmark.compile_step(parallel.jit_step(phase.step, mesh, num_frozen=1),
                                       program.state, pair, frozen)
  box = [program.state]
  interval = config.mixunlearn.gen_interval

  def run(n):
    box[0], seconds = benchmark.time_steps(compiled, box[0], (pair, frozen), warmup=0,
                                           steps=n * interval)
    return sum(seconds)
  return run, interval


def torch_intervals(model_name, batch_size, seed, num_threads, gen_interval):
  torch.set_num_threads(num_threads)
  torch.manual_seed(seed)
  image_shape = pytorch_reference.IMAGE_SHAPE[model_name]
  initial = pytorch_reference.create_model(model_name, 10, image_shape[1]).eval()
  batch = [t for _ in range(2) for t in (torch.randn(batch_size, *image_shape),
                                         torch.randint(0, 10, (batch_size,)))]
  with torch.no_grad():
    mix_channels = initial(batch[0][:1])[1]["mix"].shape[1]
  method = pytorch_reference.MixUnlearn(initial, mix_channels, gen_interval=gen_interval,
                                        label_aware=False, num_classes=10,
                                        autocast=contextlib.nullcontext)

  def run(n):
    start = time.perf_counter()
    for _ in range(n * gen_interval):
      method.step(*batch)
    return time.perf_counter() - start
  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=["cnn", "resnet18"], default="resnet18")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--intervals", type=int, default=1,
                      help="generator intervals (of 4 steps) per framework and round")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_threads", type=int, default=os.cpu_count())
  parser.add_argument("--jax_convs", default="onednn,xla",
                      help="JAX convolution paths to time, comma-separated: onednn, xla")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)

  runs = {}
  for conv in args.jax_convs.split(","):
    runs[f"jax_{conv}"], interval = jax_intervals(args.model, args.batch_size, args.seed, conv)
  runs["pytorch"] = torch_intervals(args.model, args.batch_size, args.seed, args.num_threads,
                                    interval)
  for run in runs.values():
    run(1)  # warm-up: compilation, allocator, first generator step
  steps = args.intervals * interval
  ms = {name: [] for name in runs}
  for i in range(args.rounds):
    for name, run in runs.items():
      ms[name].append(1e3 * run(args.intervals) / steps)
    print(f"round {i}: " + ", ".join(f"{name} {ms[name][-1]:.1f}" for name in runs)
          + " ms/step", flush=True)
  ratios = {name: [j / p for j, p in zip(ms[name], ms["pytorch"])]
            for name in runs if name != "pytorch"}
  results = {
      "model": args.model, "batch_size": args.batch_size, "dtype": "float32",
      "gen_interval": interval, "rounds": args.rounds, "steps_per_round": steps, "num_threads": args.num_threads,
      "jax_version": jax.__version__, "torch_version": torch.__version__,
      "device_kind": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
      "malloc": benchmark.malloc_name(), "mix_step_ms": ms,
      "median_mix_step_ms": {k: statistics.median(v) for k, v in ms.items()},
      "median_pairs_per_sec": {k: 1e3 * args.batch_size / statistics.median(v)
                               for k, v in ms.items()},
      "over_pytorch_time": {name: {"per_round": r, "median": statistics.median(r)}
                            for name, r in ratios.items()},
  }
  for name, ratio in results["over_pytorch_time"].items():
    print(f"{args.model} B={args.batch_size}: {name}/PyTorch time per mixed step, median over "
          f"{args.rounds} rounds: {ratio['median']:.3f} ({name} "
          f"{results['median_mix_step_ms'][name]:.1f} ms, PyTorch "
          f"{results['median_mix_step_ms']['pytorch']:.1f} ms)")
  if args.out:
    benchmark.write_json(results, args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
  runtime.configure()
  main()
