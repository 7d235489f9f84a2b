"""Deletion requests that keep arriving: `config.requests` requests on one model lineage.

Request r deletes D_f^r. Each method's unlearning for request r starts from
its own result for request r-1 (request 1: from f_D); Retrain for request r
trains from scratch on D minus every request so far, the gold standard after
it. The metrics after request r score every deleted sample so far: Test_f
the forgotten classes, Train_f the deleted samples, ASR the union.

The requests, seeded and saved with the split:
- class setup: class `forget_class` + r - 1 for request r;
- the other setups: the setup's D_f cut into `requests` disjoint parts of
  equal size (data level: `forget_fraction` 0.3 gives three 10% requests).

Layout: seed_<s>/pretrain (f_D), seed_<s>/requests.npz, and per request
seed_<s>/request_<r>/ with its own identity.json, retrain/, unlearn_<method>/
and eval/; results_request_<r>.{md,json} per request and results.md with the
distance to Retrain after each request. Every stage resumes as in the job.
"""

import functools
import json
import os

from absl import logging
import jax
import numpy as np

from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax.engine import loop
from mixunlearn_jax.evaluation import metrics
from mixunlearn_jax.evaluation import report

_REQUEST_STREAM = 13  # separates the requests' draw from the split's


def request_sets(config, split, num_classes, seed):
  """The requests' sorted index sets into the training set, in order."""
  k = config.requests
  if config.setup == "class":
    classes = [config.forget_class + r for r in range(k)]
    if classes[-1] >= num_classes:
      raise ValueError(f"requests={k} from forget_class={config.forget_class} needs classes "
                       f"{classes}; the data has 0..{num_classes - 1}.")
    return [np.intersect1d(np.flatnonzero(split.train_labels == c), split.train)
            for c in classes]
  if len(split.forget) < k:
    raise ValueError(f"requests={k}, but D_f holds {len(split.forget)} samples.")
  order = np.random.default_rng([seed, _REQUEST_STREAM]).permutation(split.forget)
  return [np.sort(part) for part in np.array_split(order, k)]


def request_runs(job, seed):
  """(the seed's own run, [one SeedRun per request]) with cumulative splits."""
  seed_dir = os.path.join(job.workdir, f"seed_{seed}")
  base = experiment.SeedRun(job, seed, seed_dir, experiment.make_split(job, seed))
  requests = request_sets(job.config, base.split, job.dataset.num_classes, seed)
  if jax.process_index() == 0:
    np.savez(os.path.join(seed_dir, "requests.npz"),
             **{f"request_{r}": s for r, s in enumerate(requests, 1)})
  return base, [experiment.SeedRun(job, seed, os.path.join(seed_dir, f"request_{r}"), split,
                                   request=request)
                for r, (request, split) in enumerate(
                    zip(requests, cumulative_splits(base.split, requests)), 1)]


def cumulative_splits(split, requests):
  """After each request: D_f every request so far, D_r the rest of D (later requests too)."""
  splits, deleted = [], np.zeros(0, np.int64)
  for request in requests:
    deleted = np.union1d(deleted, request)
    splits.append(data.Split(deleted, np.setdiff1d(split.train, deleted), split.train_labels,
                             split.labelled, split.heldout))
  return splits


def run_seed(job, seed):
  """Every request of `seed` in turn; each method's lineage from f_D through the requests."""
  for run_, run_trainers in request_trainers(job, seed):
    for name, train in run_trainers.items():
      experiment.evaluate(run_, name, train)


def request_trainers(job, seed):
  """Yields (run, {model: train()}) per request: each method's unlearning for request r
  starts from its own result for request r-1 (request 1: from f_D)."""
  base, runs = request_runs(job, seed)
  initial = functools.cache(functools.partial(experiment.pretrain, base))
  previous, previous_run = {name: initial for name in job.config.methods}, None
  for r, run_ in enumerate(runs, 1):
    logging.info("Seed %d: deletion request %d of %d (%d samples; %d deleted so far).", seed, r,
                 len(runs), len(run_.request), len(run_.split.forget))
    current = {name: functools.cache(functools.partial(
        experiment.unlearn, run_, name, _classifier_of(previous[name], name, previous_run)))
               for name in job.config.methods}
    yield run_, {experiment.INITIAL: initial,
                 experiment.RETRAIN: functools.partial(experiment.retrain, run_), **current}
    previous, previous_run = current, run_


def _classifier_of(trained, name, previous_run):
  """`trained`, checked to be a classifier's variables: the next request starts from them.

  If the lineage diverged in `previous_run` (the request before; None for
  f_D), its record is raised again rather than the stage rerun to its NaN.
  """

  def checked():
    record = (os.path.join(previous_run.dir, "eval", f"{name}.json")
              if previous_run is not None else None)
    if record and os.path.exists(record):
      with open(record) as f:
        failure = json.load(f).get("diverged")
      if failure:
        raise loop.NonFiniteLossError(failure["stage"], failure["step"], failure["values"])
    result = trained()
    if result.predict is not None:
      raise ValueError(f"{name} keeps its own model (predict), not one classifier; "
                       "sequential requests need a classifier to continue from.")
    return result

  return checked


def run(job):
  """All seeds' requests, then the tables (process 0); returns {'requests': [results]}."""
  c = job.config
  if all(os.path.exists(os.path.join(job.workdir, f"seed_{seed}", f"request_{r}", "eval",
                                     f"{name}.json"))
         for seed in c.seeds for r in range(1, c.requests + 1)
         for name in experiment.model_names(c)):
    logging.info("Every model of this job was evaluated already: rebuilding the tables only.")
  for seed in c.seeds:
    run_seed(job, seed)
  if jax.process_index() != 0:
    return None
  return rebuild(job.workdir, job.config)


def rebuild(workdir, config):
  """results_request_<r>.{md,json} per request and results.md: distance to Retrain over requests."""
  names = experiment.model_names(config)
  metric_names = metrics.metric_names(config.setup)
  tables, lines = [], []
  for r in range(1, config.requests + 1):
    per_seed = {}
    for seed in config.seeds:
      folder = os.path.join(workdir, f"seed_{seed}", f"request_{r}", "eval")
      per_seed[seed] = {}
      for name in names:
        with open(os.path.join(folder, f"{name}.json")) as f:
          per_seed[seed][name] = json.load(f)
    results = report.aggregate(per_seed, metric_names)
    title = f"{config.data.name}, {config.setup} setup, after deletion request {r} of {config.requests}"
    with open(os.path.join(workdir, f"results_request_{r}.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(workdir, f"results_request_{r}.md"), "w") as f:
      f.write(report.markdown(results, title))
    tables.append(results)
  header = ["model", *[f"after request {r}" for r in range(1, config.requests + 1)]]
  lines = [f"# {config.data.name}, {config.setup} setup: {config.requests} deletion requests",
           "", f"Seeds: {list(config.seeds)}. Distance to that request's Retrain (mean |gap| "
           "over the metrics, points); results_request_<r>.md holds each request's table.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name in names:
    if name == experiment.RETRAIN:
      continue
    cells = [f"{t['models'][name]['distance_to_retrain']:.2f}" if name in t["models"]
             else "diverged" for t in tables]
    lines.append("| " + " | ".join([name, *cells]) + " |")
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  combined = {"requests": tables, "seeds": list(config.seeds), "dataset": config.data.name,
              "setup": config.setup}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(combined, f, indent=2)
  return combined
