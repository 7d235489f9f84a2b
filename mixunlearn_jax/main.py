r"""Runs the whole unlearning job of a config, resuming whatever a workdir holds.

  python -m mixunlearn_jax.main --config=configs/digits_class.py --workdir=runs/digits_class
  python -m mixunlearn_jax.main --list                      # methods, models, datasets, setups
  python -m mixunlearn_jax.main --config=configs/mnist_class.py --print_config > my_config.py
"""

import os
import time

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
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints and results go.")
  flags.DEFINE_bool("overwrite", False,
                    "Delete and redo the stages of --workdir whose config fields changed.")
  flags.DEFINE_bool("list", False, "Print the registered methods, models, datasets and setups.")
  flags.DEFINE_bool("print_config", False,
                    "Print the resolved config as a config file --config can read, and exit.")


def summary(results, workdir, seconds):
  """The end-of-run report: the table, where the files are, the job's wall time."""
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  plots = os.path.join(workdir, "plots")
  return (f"{table}\nResults: {os.path.join(workdir, 'results.md')}, "
          f"{os.path.join(workdir, 'results.json')}"
          + (f"; plots: {plots}/" if os.path.isdir(plots) else "") +
          f"\nJob wall time: {seconds:.0f} s (seeds {results['seeds']}).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.list:
    print(config_lib.catalogue())
    return
  if FLAGS.config is None:
    raise app.UsageError("--config is required (or --list).")
  if FLAGS.print_config:
    print(config_lib.as_file(FLAGS.config), end="")
    return
  if FLAGS.workdir is None:
    raise app.UsageError("--workdir is required.")
  loop.quiet_orbax_logging()
  start = time.perf_counter()
  results = experiment.run(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)
  if results is not None:  # process 0
    print(summary(results, FLAGS.workdir, time.perf_counter() - start), flush=True)


if __name__ == "__main__":
  define_flags()
  runtime.configure()
  app.run(main)
