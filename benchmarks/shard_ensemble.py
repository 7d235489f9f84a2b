r"""Shard-ensemble training throughput: S models in one vmapped step vs S single-model steps.

  python benchmarks/shard_ensemble.py --shards=1,5,10 --steps=20 --out=runs/shards.json

For each S, times SISA's training step (methods/sisa.py: S CNNs stacked, one
jitted vmapped step, each model on its own batch) against S runs of the same
step for one model, one after the other (what a shard-by-shard trainer
does), in turns. Images/s counts every model's batch: S x batch per round. Random
MNIST-shaped batches already on the device, so the input pipeline is not
timed; one device, with the convolution path the job would use there.
"""

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from mixunlearn_jax import runtime

runtime.configure()

import jax
import jax.numpy as jnp
import numpy as np

from mixunlearn_jax import models
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import common
from mixunlearn_jax.methods import sisa

SHAPE = (28, 28, 1)


def ensemble(model, tx, count):
  keys = jax.random.split(jax.random.key(0), count)
  variables = jax.vmap(lambda k: supervised.init_variables(model, k, SHAPE))(keys)
  steps = jnp.zeros(count, jnp.int32)
  return sisa.EnsembleState(steps, steps + 10**9, variables, jax.vmap(tx.init)(variables["params"]))


def batches(count, batch_size):
  rng = np.random.default_rng(0)
  return {f"shard{i}": {"image": jnp.asarray(rng.normal(size=(batch_size, *SHAPE)), jnp.float32),
                        "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)}
          for i in range(count)}


def seconds_per_round(runs, states, steps, warmup):
  """Median seconds of `state = run(state)` for each run, timed in turns.

  Turns, round by round, so that a shared machine's load changes hit both alike.
  """
  for _ in range(warmup):
    states = [run(state) for run, state in zip(runs, states)]
  jax.block_until_ready(states)
  times = [[] for _ in runs]
  for _ in range(steps):
    for i, run in enumerate(runs):
      start = time.perf_counter()
      states[i] = jax.block_until_ready(run(states[i]))
      times[i].append(time.perf_counter() - start)
  return [float(np.median(t)) for t in times]


def bench(model, shards, *, batch_size, steps, warmup):
  tx = common.optimizer("adam", 1e-4)
  batch = batches(shards, batch_size)
  keys = tuple(batch)
  vmapped = jax.jit(functools.partial(sisa.step, model=model, tx=tx, keys=keys), donate_argnums=0)
  single = jax.jit(functools.partial(sisa.step, model=model, tx=tx, keys=("shard0",)),
                   donate_argnums=0)
  one = [{"shard0": batch[key]} for key in keys]

  def sequential(states):  # shard by shard: S single-model steps, each on its own batch
    return [single(s, b, {})[0] for s, b in zip(states, one)]

  together, apart = seconds_per_round(
      [lambda s: vmapped(s, batch, {})[0], sequential],
      [ensemble(model, tx, shards), [ensemble(model, tx, 1) for _ in range(shards)]], steps,
      warmup)
  images = shards * batch_size
  return {"shards": shards, "vmapped_images_per_sec": images / together,
          "sequential_images_per_sec": images / apart, "speedup": apart / together}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shards", default="1,5,10")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--cpu_onednn", type=int, default=1, help="0: XLA's convolutions")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  model = models.create("cnn", cpu_onednn=bool(args.cpu_onednn))
  results = {"backend": jax.default_backend(), "devices": jax.device_count(),
             "conv_path": models.conv_path(bool(args.cpu_onednn)), "batch_size": args.batch_size,
             "runs": [bench(model, int(s), batch_size=args.batch_size, steps=args.steps,
                            warmup=args.warmup) for s in args.shards.split(",")]}
  for run in results["runs"]:
    print(f"S={run['shards']:3d}: vmapped {run['vmapped_images_per_sec']:8.0f} images/s, "
          f"sequential {run['sequential_images_per_sec']:8.0f} images/s, "
          f"x{run['speedup']:.2f}")
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
