r"""The paper's tables from finished workdirs: our numbers beside the paper's, with cost.

  python -m mixunlearn_jax.tables --workdirs=runs/mnist_class,runs/mnist_class_baselines

Workdirs of one dataset and setup that share f_D and Retrain (the later ones
run with --config.pretrain.reuse_workdir=<the first>) are merged into one
table in the layout of the paper's Tables 1-6: Retrain, the label-aware
methods, the label-agnostic ones, the ablations after their group, each cell
ours with the paper's mean in brackets, then the distance to Retrain, the
wall time and its ratio to Retrain's. Prints it, and writes it to --out when
given.
"""

import json
import os

from absl import app
from absl import flags

from mixunlearn_jax import methods
from mixunlearn_jax.evaluation import paper

FLAGS = flags.FLAGS


def define_flags():
  """Defined when the module runs as a program, so that the CLI modules import side by side."""
  flags.DEFINE_list("workdirs", None, "Finished workdirs of one dataset and setup.")
  flags.DEFINE_string("out", None, "Markdown file to write the table to.")
  flags.mark_flag_as_required("workdirs")


def beside_paper(workdirs):
  """The markdown table of `workdirs` (their results.json) beside the paper's numbers."""
  results = []
  for workdir in workdirs:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{workdir} has no results.json: finish its job first.")
    with open(path) as f:
      results.append(json.load(f))
  agnostic = {m.name for m in methods.all_methods() if m.labels == "none"}
  return paper.markdown(paper.merge(results), agnostic)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    text = beside_paper(FLAGS.workdirs)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
