r"""Does the attack read confidence? ASR of a finished workdir's models with their logits scaled.

  python -m mixunlearn_jax.confidence --workdir=runs/mnist_class --scales=1,2,3,4

Scaling a model's logits by k > 0 before the softmax changes no prediction, so
every accuracy stays; it makes the model k times more sure of each of them.
For each seed, each classifier of the workdir (f_D, Retrain, every method
whose predictions are one classifier's) and each k, the attack is refitted on
the scaled softmax outputs under each protocol of `--protocols` (metrics.
PROTOCOLS), with the job's own index sets. The finished stages are restored,
not trained. A workdir of sequential requests is studied after request
`--request`. Writes confidence.{md,json} in the workdir (or in --out).
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from mixunlearn_jax import experiment
from mixunlearn_jax import runtime
from mixunlearn_jax.evaluation import metrics

FLAGS = flags.FLAGS


def define_flags():
  """Defined when the module runs as a program, so that the CLI modules import side by side."""
  flags.DEFINE_string("workdir", None, "A workdir whose stages are finished.")
  flags.DEFINE_list("scales", ["1", "2", "3", "4"], "Factors k the logits are multiplied by.")
  flags.DEFINE_list("protocols", ["spec", "laf"], "Attack protocols (metrics.PROTOCOLS).")
  flags.DEFINE_list("seeds", None, "Seeds to study (default: the workdir config's).")
  flags.DEFINE_integer("request", 1, "With sequential requests: the request to study after.")
  flags.DEFINE_string("out", None, "Folder for confidence.{md,json} (default: the workdir).")
  flags.mark_flag_as_required("workdir")


def seed_trainers(job, seed, request):
  """(run, {model: train()}) of `seed`: the seed's own, or after sequential request `request`."""
  if job.config.requests > 1:
    from mixunlearn_jax import sequential  # pylint: disable=g-import-not-at-top
    for r, found in enumerate(sequential.request_trainers(job, seed), 1):
      if r == request:
        return found
    raise ValueError(f"request={request}, but the workdir has {job.config.requests} requests.")
  run_ = experiment.seed_run(job, seed)
  return run_, experiment.trainers(run_, lambda: experiment.pretrain(run_))


def study(workdir, scales, protocols, request=1, seeds=None):
  """{seed: {model: {k: {protocol: breakdown}}}} for the classifiers of a finished workdir."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.asr.protocols = tuple(protocols)
  if seeds is not None:
    config.seeds = tuple(seeds)
  job = experiment.make_job(config, workdir)
  results = {}
  for seed in config.seeds:
    run_, trainers = seed_trainers(job, seed, request)
    sets = experiment.attack_sets(run_)
    results[seed] = {}
    for name, train in trainers.items():
      trained = train()
      if trained.predict is not None:
        logging.info("%s: its predictions are not one classifier's; left out.", name)
        continue
      results[seed][name] = {}
      for k in scales:  # on the device, as the job computes them: k = 1 gives the job's ASR
        probs = experiment.probabilities(run_, trained.result,
                                         metrics.classifier_probs(job.model, k))
        results[seed][name][k] = {s.protocol: metrics.membership_attack(
            *probs, s, seed=seed, trees=config.asr.trees) for s in sets}
      logging.info("seed %d / %s: %s", seed, name, {
          k: {p: round(a["ASR"], 2) for p, a in v.items()} for k, v in results[seed][name].items()})
  return results


def markdown(results, scales, protocols):
  """One table per protocol: ASR mean ± std over seeds, a row per model, a column per k."""
  seeds = sorted(results)
  names = [n for n in results[seeds[0]]]
  lines = [f"Seeds {seeds}. ASR in % with the logits scaled by k before the softmax "
           "(accuracies unchanged); the attack refitted at each k."]
  for protocol in protocols:
    lines += ["", f"### protocol {protocol}", "",
              "| model | " + " | ".join(f"k={k:g}" for k in scales) + " |",
              "|---|" + "---|" * len(scales)]
    for name in names:
      cells = []
      for k in scales:
        values = [results[s][name][k][protocol]["ASR"] for s in seeds]
        cells.append(f"{np.mean(values):.2f} ± {np.std(values):.2f}")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  scales = [float(k) for k in FLAGS.scales]
  if not scales or min(scales) <= 0:
    raise app.UsageError(f"--scales must be positive numbers, got {FLAGS.scales}.")
  results = study(FLAGS.workdir, scales, FLAGS.protocols, FLAGS.request,
                  FLAGS.seeds and [int(s) for s in FLAGS.seeds])
  out = FLAGS.out or FLAGS.workdir
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "confidence.json"), "w") as f:
    json.dump({str(s): {n: {str(k): v for k, v in m.items()} for n, m in r.items()}
               for s, r in results.items()}, f, indent=1)
  table = markdown(results, scales, FLAGS.protocols)
  with open(os.path.join(out, "confidence.md"), "w") as f:
    f.write(table)
  print(table)


if __name__ == "__main__":
  define_flags()
  runtime.configure()
  app.run(main)
