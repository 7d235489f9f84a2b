r"""Hyperparameter sensitivity: one unlearning run per grid value, one table.

  python -m mixunlearn_jax.sweep --config=configs/mnist_class.py --workdir=runs/sweep \
      --config.seeds='(0,)' --grid=mixunlearn.gen_interval=1,2,4,8 --grid=mixunlearn.alpha=0.3,0.75,1.5

Each grid is swept on its own, the other fields at the config's values. The
first run trains the initial and retrained models (or takes them from the
config's `reuse_workdir`); every other run reuses them, so only unlearning is
repeated. Writes sweep.md and sweep.json in --workdir.
"""

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import experiment
from mixunlearn_jax import runtime
from mixunlearn_jax.engine import loop

FLAGS = flags.FLAGS


def define_flags():
  """Defined when the module runs as a program, so that the CLI modules import side by side."""
  config_flags.DEFINE_config_file("config", None, "Base config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Folder for one workdir per run and the sweep table.")
  flags.DEFINE_multi_string("grid", [], "field=v1,v2,...: a config field and its values.")
  flags.mark_flags_as_required(["config", "workdir"])


def run_sweep(config, workdir, grids):
  """Runs every grid point; returns {field: {value: results}}."""
  base_dir = os.path.join(workdir, "base")
  experiment.run(config, base_dir)  # trains (or resumes) f_D and Retrain once
  table = {}
  for field, values in grids:
    table[field] = {}
    for value in values:
      point = config.copy_and_resolve_references()
      point.unlock()
      for stage in ("pretrain", "retrain"):  # the base may itself reuse another workdir
        point[stage].reuse_workdir = config[stage].reuse_workdir or base_dir
      config_lib.set_field(point, field, [value])
      point.lock()
      table[field][value] = experiment.run(point, os.path.join(workdir, f"{field}={value}"))
  return table


def markdown(table):
  lines = []
  for field, runs in table.items():
    first = next(iter(runs.values()))
    metrics = first["metrics"]
    methods = [m for m in (*first["models"], *first.get("diverged", {}))
               if m not in ("initial", "retrain")]
    lines += [f"## {field}", "", "| value | method | " + " | ".join(metrics)
              + " | distance to Retrain |", "|---|---|" + "---|" * (len(metrics) + 1)]
    for value, results in runs.items():
      for method in methods:
        if method not in results["models"]:  # a non-finite loss at this value
          lines.append(f"| {value} | {method} | " + " | ".join(["diverged"] * (len(metrics) + 1))
                       + " |")
          continue
        entry = results["models"][method]
        cells = [f"{entry[m]['mean']:.2f} ± {entry[m]['std']:.2f}" for m in metrics]
        lines.append(f"| {value} | {method} | " + " | ".join(cells)
                     + f" | {entry['distance_to_retrain']:.2f} |")
    lines.append("")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  loop.quiet_orbax_logging()
  grids = [config_lib.parse_override(g, FLAGS.config) for g in FLAGS.grid]
  table = run_sweep(FLAGS.config, FLAGS.workdir, grids)
  with open(os.path.join(FLAGS.workdir, "sweep.json"), "w") as f:
    json.dump({field: {str(v): r for v, r in runs.items()} for field, runs in table.items()}, f,
              indent=2)
  with open(os.path.join(FLAGS.workdir, "sweep.md"), "w") as f:
    f.write(markdown(table))
  print(markdown(table))


if __name__ == "__main__":
  define_flags()
  runtime.configure()
  app.run(main)
