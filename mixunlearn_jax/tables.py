r"""The paper's tables from finished workdirs: our numbers beside the paper's, with cost.

  python -m mixunlearn_jax.tables --workdirs=runs/mnist_class,runs/mnist_class_baselines
  python -m mixunlearn_jax.tables --workdirs=runs/mnist_class --rule_workdirs=runs/mnist_class_rule

Workdirs of one dataset and setup that share f_D and Retrain (the later ones
run with --config.pretrain.reuse_workdir=<the first>) are merged into one
table in the layout of the paper's Tables 1-6: Retrain, the label-aware
methods, the label-agnostic ones, the ablations after their group, each cell
ours with the paper's mean in brackets, then the distance to Retrain, the
wall time and its ratio to Retrain's. With --rule_workdirs (the same methods
run with the stopping rule on, over the same f_D and Retrain) a second table
puts each method's fixed budget and the rule's stop side by side. Prints
them, and writes them to --out when given.
"""

import json
import os

from absl import app
from absl import flags

from mixunlearn_jax import methods
from mixunlearn_jax.evaluation import paper
from mixunlearn_jax.evaluation import report

FLAGS = flags.FLAGS


def define_flags():
  """Defined when the module runs as a program, so that the CLI modules import side by side."""
  flags.DEFINE_list("workdirs", None, "Finished workdirs of one dataset and setup.")
  flags.DEFINE_list("rule_workdirs", None,
                    "Finished workdirs of the same methods with the stopping rule on, over the "
                    "same f_D and Retrain: adds each method's fixed budget against the rule.")
  flags.DEFINE_string("out", None, "Markdown file to write the table(s) to.")
  flags.mark_flag_as_required("workdirs")


def merged(workdirs):
  """The results.json of `workdirs`, merged (paper.merge)."""
  results = []
  for workdir in workdirs:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{workdir} has no results.json: finish its job first.")
    with open(path) as f:
      results.append(json.load(f))
  return paper.merge(results)


def beside_paper(workdirs):
  """The markdown table of `workdirs` (their results.json) beside the paper's numbers."""
  agnostic = {m.name for m in methods.all_methods() if m.labels == "none"}
  return paper.markdown(merged(workdirs), agnostic)


def fixed_against_rule(fixed_workdirs, rule_workdirs):
  """Each method of `rule_workdirs` (the stopping rule on) under its row of `fixed_workdirs`
  (its fixed budget, on the same f_D and Retrain): metrics, distance, cost and where it stopped."""
  fixed, rule = merged(fixed_workdirs), merged(rule_workdirs)
  paper.check_comparable(fixed, rule)
  # Both runs' ratios divide by the Retrain row shown, even where a rule workdir's results.json
  # predates Retrain's training again (the report reads the owner's time when it runs).
  rule = {**rule, "models": {**rule["models"], "retrain": fixed["models"]["retrain"]}}
  header = ["method", "run", *fixed["metrics"], "distance to Retrain", "time (s)",
            "time / Retrain", "stop"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name in ["retrain", *paper.ordered((*rule["models"], *rule["diverged"]))]:
    for run, results in ([("", fixed)] if name == "retrain" else
                         [("fixed budget", fixed), ("rule", rule)]):
      stop = results["stopping"].get(name)
      lines.append("| " + " | ".join([name, run, *paper.cells(results, name),
                                      report.stop_cell(stop) if stop else "—"]) + " |")
  note = (f"{fixed['dataset']}, {fixed['setup']} setup, seeds {fixed['seeds']}: each method at its "
          "fixed budget and stopped by the rule, on the same f_D and Retrain (mean ± std % over "
          "seeds; stop: the step of the budget and why, README \"Stopping rule\")."
          + report.machines_note(paper.machines([fixed, rule])))
  return note + "\n\n" + "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    text = beside_paper(FLAGS.workdirs)
    if FLAGS.rule_workdirs:
      text += "\n" + fixed_against_rule(FLAGS.workdirs, FLAGS.rule_workdirs)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
