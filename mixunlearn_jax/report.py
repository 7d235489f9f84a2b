r"""Rebuilds results.json, results.md and the plots of a workdir, without training.

  python -m mixunlearn_jax.report --workdir=runs/digits_class [--seeds=0,1,2] [--noplots]
"""

import json
import os

from absl import app
from absl import flags

from mixunlearn_jax.evaluation import metrics
from mixunlearn_jax.evaluation import report

FLAGS = flags.FLAGS


def define_flags():
  """Defined when the module runs as a program, so that the CLI modules import side by side."""
  flags.DEFINE_string("workdir", None, "A workdir whose evaluations are finished.")
  flags.DEFINE_list("seeds", None,
                    "The seeds to report; by default config.json's, which processes sharing the "
                    "workdir (one per seed) each rewrite with their own.")
  flags.DEFINE_bool("plots", True, "Draw the figures (plots/), also for a job run with "
                    "config.plots False.")
  flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  path = os.path.join(FLAGS.workdir, "config.json")
  if not os.path.exists(path):
    raise app.UsageError(f"{FLAGS.workdir} holds no run (no config.json).")
  with open(path) as f:
    config = json.load(f)
  if FLAGS.seeds:
    if not all(seed.isdigit() for seed in FLAGS.seeds):
      raise app.UsageError(f"--seeds={','.join(FLAGS.seeds)}: give seeds as integers, e.g. 0,1,2.")
    config["seeds"] = [int(seed) for seed in FLAGS.seeds]
  config["plots"] = FLAGS.plots
  try:
    report.rebuild(FLAGS.workdir, metrics.metric_names(config["setup"]), config)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e
  print(open(os.path.join(FLAGS.workdir, "results.md")).read())


if __name__ == "__main__":
  define_flags()
  app.run(main)
