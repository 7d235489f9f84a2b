r"""Hyperparameter sensitivity: one unlearning run per grid value, one table.

  python -m mixunlearn_jax.sweep --config=configs/mnist_class.py --workdir=runs/sweep \
      --config.seeds='(0,)' --grid=mixunlearn.gen_interval=1,2,4,8 --grid=mixunlearn.alpha=0.3,0.75,1.5

Each grid is swept on its own, the other fields at the config's values. The
first run trains the initial and retrained models (or takes them from the
config's `reuse_workdir`); every other run reuses them, so only unlearning is
repeated. Writes sweep.md and sweep.json in --workdir.

--tune chooses hyperparameters by one rule for every method (config.methods
names one): the grids run in the order given, each with the values chosen
for the grids before it, and each grid's value whose model lands closest to
Retrain (mean |gap| over the setup's metrics, over the config's seeds; a
diverged point never wins) is chosen. This is coordinate search, and it
chooses by looking at Retrain, as the paper's protocol does (appendix A.3):
a user without Retrain cannot choose this way.

  python -m mixunlearn_jax.sweep --config=configs/mnist_class.py --workdir=runs/tune_scrub \
      --config.seeds='(0,)' --config.methods="('scrub',)" --tune \
      --grid=scrub.kd_weight=0.0001,0.01,0.1,1,10,100 --grid=scrub.temperature=0.5,1,2,3
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
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
  flags.DEFINE_bool("tune", False, "Choose each grid's value closest to Retrain, in turn "
                    "(coordinate search; config.methods names one method).")
  flags.mark_flags_as_required(["config", "workdir"])


def run_sweep(config, workdir, grids, tune=False):
  """Runs every grid point; returns ({field: {value: results}}, {field: chosen value}).

  With `tune`, each grid runs with the values chosen for the grids before it
  and its value closest to Retrain is chosen (module docstring); otherwise
  nothing is chosen and every grid runs at the config's other values.
  """
  if tune and len(config.methods) != 1:
    raise ValueError(f"--tune chooses one method's values; config.methods is {config.methods}.")
  base_dir = os.path.join(workdir, "base")
  base = config.copy_and_resolve_references()
  base.unlock()
  base.methods = ()
  experiment.run(base, base_dir)  # trains (or resumes) f_D and Retrain once, no method
  table, chosen = {}, {}
  for field, values in grids:
    table[field] = {}
    for value in values:
      point = config.copy_and_resolve_references()
      point.unlock()
      for stage in ("pretrain", "retrain"):  # the base may itself reuse another workdir
        point[stage].reuse_workdir = config[stage].reuse_workdir or base_dir
      values_here = {**chosen, field: value}
      for name, v in values_here.items():
        config_lib.set_field(point, name, [v])
      point.lock()
      # The folder names the values chosen before too, so that no two points share one.
      folder = ",".join(f"{name}={v}" for name, v in values_here.items())
      table[field][value] = experiment.run(point, os.path.join(workdir, folder))
    if tune:
      chosen[field] = closest(table[field], config.methods[0],
                              default=config_lib.get_field(config, field))
  return table, chosen


def closest(runs, method, default):
  """The value of `runs` ({value: results}) whose `method` is closest to Retrain; `default`
  if it diverged at every value."""
  finished = {v: r["models"][method]["distance_to_retrain"] for v, r in runs.items()
              if method in r["models"]}
  if not finished:
    logging.warning("%s diverged at every value; keeping %s.", method, default)
    return default
  return min(finished, key=finished.get)


def markdown(table, chosen=None):
  """One table per grid; with `chosen` (--tune), the values each grid ran with and chose."""
  chosen, lines, before = chosen or {}, [], {}
  for field, runs in table.items():
    first = next(iter(runs.values()))
    metrics = first["metrics"]
    methods = [m for m in (*first["models"], *first.get("diverged", {}))
               if m not in ("initial", "retrain")]
    fixed = f" (with {overrides(before)})" if before else ""
    lines += [f"## {field}{fixed}", "", "| value | method | " + " | ".join(metrics)
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
    if field in chosen:
      before[field] = chosen[field]
      finished = any(m in r["models"] for r in runs.values() for m in methods)
      why = ("closest to Retrain" if finished
             else "every value diverged: the value it ran with, kept")
      lines += [f"Chosen: {field}={chosen[field]} ({why}).", ""]
  if chosen:
    lines += ["## Chosen", "", f"    {overrides(chosen)}", ""]
  return "\n".join(lines)


def overrides(values):
  """{field: value} as the command line's --config overrides."""
  return " ".join(f"--config.{field}={value}" for field, value in values.items())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  loop.quiet_orbax_logging()
  grids = [config_lib.parse_override(g, FLAGS.config) for g in FLAGS.grid]
  table, chosen = run_sweep(FLAGS.config, FLAGS.workdir, grids, tune=FLAGS.tune)
  with open(os.path.join(FLAGS.workdir, "sweep.json"), "w") as f:
    json.dump({"grids": {field: {str(v): r for v, r in runs.items()}
                         for field, runs in table.items()},
               "chosen": chosen}, f, indent=2)
  with open(os.path.join(FLAGS.workdir, "sweep.md"), "w") as f:
    f.write(markdown(table, chosen))
  print(markdown(table, chosen))


if __name__ == "__main__":
  define_flags()
  runtime.configure()
  app.run(main)
