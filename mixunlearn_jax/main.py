r"""Runs the whole MixUnlearn job of a config, resuming whatever a workdir holds.

  python -m mixunlearn_jax.main --config=configs/digits_class.py --workdir=runs/digits_class
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from mixunlearn_jax import experiment
from mixunlearn_jax.engine import loop

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints and results go.")
flags.DEFINE_bool("overwrite", False,
                  "Delete a run of a different config found in --workdir and start afresh.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  loop.quiet_orbax_logging()
  experiment.run(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
  app.run(main)
