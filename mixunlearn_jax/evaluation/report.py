"""results.json, results.md and the plots, rebuilt from a workdir's saved evaluations."""

import json
import os

import numpy as np

from mixunlearn_jax.evaluation import plots

REFERENCE = "retrain"
# The shared stages a workdir may take from another (config.<stage>.reuse_workdir), by model.
REUSABLE = {"initial": "pretrain", REFERENCE: "retrain"}
UNRECORDED = "machine not recorded"  # evaluations saved before records named it
# What a stage's record says of how it ran (the rest, of how its model scores).
HOW_IT_RAN = ("machine", "seconds", "compile_seconds", "examples_per_sec")


def _stats(values):
  values = [float(v) for v in values]
  return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": values}


def cost_ratio(entry, reference):
  """A model's stage time over Retrain's (what unlearning costs against retraining): each
  seed's own ratio, averaged, so that seeds run on machines of different speeds weigh alike."""
  pairs = zip(entry["seconds"]["per_seed"], reference["seconds"]["per_seed"])
  return float(np.mean([t / r if r > 0 else float("nan") for t, r in pairs]))


def machines_note(machines):
  """'' when every seed ran on one machine; else which seeds ran where."""
  kinds = {tuple(m) for m in machines.values()}
  if len(kinds) <= 1:
    return ""
  where = {}
  for seed, kind in machines.items():
    where.setdefault(" + ".join(kind), []).append(str(seed))
  return (" Seeds ran on different machines, so times compare only within a seed and "
          "time / Retrain averages each seed's own ratio: "
          + "; ".join(f"seed{'s' if len(s) > 1 else ''} {', '.join(s)}: {m}"
                      for m, s in where.items()) + ".")


def aggregate(per_seed, metric_names):
  """per_seed: {seed: {model: {'metrics': {...}, 'seconds': s, 'examples_per_sec': r}}}.

  The distance to Retrain averages the gaps of `metric_names`; a metric the
  evaluations add (another attack protocol's ASR_<protocol>) is a column of
  its own, with its gap, outside the distance.
  """
  seeds = sorted(per_seed)
  # A model that diverged on any seed has no mean to give: it is listed apart, by seed.
  diverged = {n: {s: per_seed[s][n]["diverged"] for s in seeds if "diverged" in per_seed[s][n]}
              for n in per_seed[seeds[0]]}
  diverged = {n: by_seed for n, by_seed in diverged.items() if by_seed}
  model_names = [n for n in per_seed[seeds[0]] if n not in diverged]
  every = [per_seed[s][n]["metrics"] for s in seeds for n in model_names]
  columns = [*metric_names, *(m for m in every[0]
                              if m not in metric_names and all(m in r for r in every))]
  results = {"seeds": seeds, "metrics": columns, "distance_metrics": list(metric_names),
             "models": {}, "diverged": diverged}
  for name in model_names:
    runs = [per_seed[s][name] for s in seeds]
    entry = {m: _stats([r["metrics"][m] for r in runs]) for m in columns}
    entry["seconds"] = _stats([r["seconds"] for r in runs])
    entry["compile_seconds"] = _stats([r.get("compile_seconds", 0.0) for r in runs])
    entry["examples_per_sec"] = _stats([r["examples_per_sec"] for r in runs])
    results["models"][name] = entry
  if REFERENCE in results["models"]:
    reference = results["models"][REFERENCE]
    for entry in results["models"].values():
      entry["gap"] = {m: abs(entry[m]["mean"] - reference[m]["mean"]) for m in columns}
      entry["distance_to_retrain"] = float(np.mean([entry["gap"][m] for m in metric_names]))
  results["timings"] = {n: e["seconds"]["mean"] for n, e in results["models"].items()}
  if REFERENCE in results["models"]:
    results["cost_ratio"] = {n: cost_ratio(e, results["models"][REFERENCE])
                             for n, e in results["models"].items()}
  # Seeds run on different machines have times in different units: say so beside them.
  results["machines"] = {s: sorted({per_seed[s][n].get("machine", UNRECORDED)
                                    for n in model_names}) for s in seeds}
  # Time spent before any deletion request (SISA's initial ensemble), not in `timings`.
  results["setup_seconds"] = {n: float(np.mean([per_seed[s][n]["setup_seconds"] for s in seeds]))
                              for n in model_names if "setup_seconds" in per_seed[seeds[0]][n]}
  results["throughput"] = {n: e["examples_per_sec"]["mean"] for n, e in results["models"].items()}
  # Where the stopping rule (engine/stopping.py) ended each method, when it was on.
  results["stopping"] = {n: _stopping([per_seed[s][n]["stop"] for s in seeds])
                         for n in model_names if "stop" in per_seed[seeds[0]][n]}
  return results


def _stopping(summaries):
  """The stopping rule over seeds: the step it stopped at, why, and where it was met.

  The budget is the seeds' mean: a shard ensemble's depends on where D_f fell.
  """
  return {"step": _stats([s["step"] for s in summaries]),
          "budget": float(np.mean([s["budget"] for s in summaries])),
          "reasons": [s["reason"] for s in summaries],
          "rule_steps": [s["rule"]["step"] if s["rule"] else None for s in summaries]}


def stop_cell(stop):
  """'740/3700 forgotten'; a run to its budget adds where the rule was met, seed by seed
  (dry runs)."""
  reasons = ", ".join(sorted(set(stop["reasons"])))
  cell = f"{stop['step']['mean']:.0f}/{stop['budget']:.0f} {reasons}"
  steps = stop["rule_steps"]
  if "budget" in stop["reasons"]:
    if all(step is None for step in steps):
      cell += " (rule never met)"
    else:
      cell += f" (rule met at {', '.join('never' if s is None else str(s) for s in steps)})"
  return cell


def markdown(results, title=""):
  metric_names = results["metrics"]
  stopping = results.get("stopping", {})
  header = ["model", *metric_names, "distance to Retrain", "time (s)", "time / Retrain",
            "examples/s", "compile (s)", *(["stop"] if stopping else [])]
  lines = [f"# {title}" if title else "", f"Seeds: {results['seeds']}. Accuracies and ASR in %, "
           "mean ± std over seeds; (gap) = |mean - Retrain mean|. Time and examples/s "
           "exclude compilation, shown apart." + _distance_note(results)
           + machines_note(results.get("machines", {})), "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, entry in results["models"].items():
    cells = [name]
    for m in metric_names:
      gap = entry.get("gap", {}).get(m)
      cells.append(f"{entry[m]['mean']:.2f} ± {entry[m]['std']:.2f}"
                   + (f" ({gap:.2f})" if gap is not None and name != REFERENCE else ""))
    distance = entry.get("distance_to_retrain")
    cells.append("—" if distance is None or name == REFERENCE else f"{distance:.2f}")
    cells.append(f"{entry['seconds']['mean']:.1f}")
    ratio = results.get("cost_ratio", {}).get(name)
    cells.append("—" if ratio is None else f"{ratio:.2f}")
    cells.append(f"{entry['examples_per_sec']['mean']:.0f}")
    cells.append(f"{entry['compile_seconds']['mean']:.1f}")
    if stopping:
      cells.append(stop_cell(stopping[name]) if name in stopping else "—")
    lines.append("| " + " | ".join(cells) + " |")
  if stopping:
    lines += ["", "stop: the step the stopping rule ended unlearning at (mean over seeds), of "
              "the fixed budget, and why: forgotten (the rule met), guard (held-out remain "
              "accuracy fell too far), budget (ran the fixed budget)."]
  diverged = results.get("diverged", {})
  if diverged:
    lines += ["", "Diverged (a non-finite loss; no metrics, the table leaves them out): "
              + "; ".join(f"{name} ({_diverged_cell(by_seed)})"
                          for name, by_seed in diverged.items()) + "."]
  setup = results.get("setup_seconds", {})
  if setup:
    lines += ["", "Time before any deletion request, not in the time column (the shard "
              "ensembles' initial training): " + ", ".join(
                  f"{name} {seconds:.1f} s" for name, seconds in setup.items()) + "."]
  return "\n".join(lines).lstrip("\n") + "\n"


def _diverged_cell(by_seed):
  """'seed_0/unlearn_neggrad at step 1800: loss nan' per diverged seed."""
  return ", ".join(f"{d['stage']} at step {d['step']}: "
                   + ", ".join(f"{k} {v}" for k, v in d["values"].items())
                   for d in by_seed.values())


def _distance_note(results):
  outside = [m for m in results["metrics"] if m not in results.get("distance_metrics",
                                                                   results["metrics"])]
  return (f" The distance to Retrain is the mean gap over {', '.join(results['distance_metrics'])}"
          f" ({', '.join(outside)}: another attack protocol, not in it).") if outside else ""


def rebuild(workdir, metric_names, config=None):
  """Writes results.json, results.md and plots/ from seed_*/eval/; returns the results.

  `config` (a dict) names the seeds and methods; by default the workdir's
  config.json, which processes sharing the workdir (one per seed) each
  rewrite when they start, so a job passes its own.
  """
  if config is None:
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
  names = ["initial", REFERENCE, *config["methods"]]
  evals = {seed: os.path.join(workdir, f"seed_{seed}", "eval") for seed in config["seeds"]}
  missing = [f"seed {seed}: {name}" for seed, folder in evals.items() for name in names
             if not os.path.exists(os.path.join(folder, f"{name}.json"))]
  if missing:
    raise FileNotFoundError(f"{workdir} is unfinished: no evaluation yet of {'; '.join(missing)}. "
                            "Run the job's command again to finish it.")
  per_seed = {}
  for seed, folder in evals.items():
    per_seed[seed] = {}
    for name in names:
      with open(os.path.join(folder, f"{name}.json")) as f:
        per_seed[seed][name] = json.load(f)
  _reused_timings(workdir, config, per_seed)
  results = aggregate(per_seed, metric_names)
  results.update(dataset=config["data"]["name"], setup=config["setup"])
  title = f"{results['dataset']}, {results['setup']} setup"
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown(results, title))
  if config.get("plots", True):  # workdirs made before the switch have no such field
    _plot(workdir, evals, per_seed, [n for n in names if n in results["models"]], title,
          config.get("tsne", {}))
  return results


def _reused_timings(workdir, config, per_seed):
  """Sets each reused f_D's and Retrain's time (and machine) to what the workdir that trained it
  records now.

  A reusing job copies the stage's time into its own evaluation when it loads
  the stage, a copy that goes stale when the owner trains it again (a lost
  runs folder, a rerun on an idle machine), so that the cost ratios of one
  setting would divide by different Retrain times.
  """
  for name, stage in REUSABLE.items():
    for seed, records in per_seed.items():
      owner = _owner_record(workdir, config, stage, name, seed)
      if owner is not None:
        records[name].update({k: owner[k] for k in HOW_IT_RAN if k in owner})


def _owner_record(workdir, config, stage, name, seed, seen=()):
  """The evaluation record of `name` in the workdir that trained `stage`, following reuse.

  The owner is looked for beside `workdir` first (workdirs copied or moved
  together, as docs/records), then at the path the config names (relative to
  where the job ran). None when the stage is not reused or its owner holds no
  record of it.
  """
  other = config.get(stage, {}).get("reuse_workdir")
  if not other:
    return None
  seen = (*seen, os.path.realpath(workdir))
  candidates = [os.path.join(os.path.dirname(os.path.normpath(workdir)), os.path.basename(
      os.path.normpath(other))), other]
  for owner in candidates:
    path = os.path.join(owner, f"seed_{seed}", "eval", f"{name}.json")
    if os.path.realpath(owner) in seen or not os.path.exists(path):
      continue
    with open(path) as f:
      record = json.load(f)
    config_path = os.path.join(owner, "config.json")
    if os.path.exists(config_path):  # the owner may itself have reused the stage
      with open(config_path) as f:
        further = _owner_record(owner, json.load(f), stage, name, seed, seen)
      record = further or record
    return record
  return None


def _plot(workdir, evals, per_seed, names, title, tsne):
  """Per seed: the loss densities, the t-SNE of the saved embeddings, the mixed samples, the
  stopping rule's traces.

  `per_seed`: the evaluations' records; `tsne`: the config's t-SNE section (perplexity, max_iter).
  """
  folder = os.path.join(workdir, "plots")
  os.makedirs(folder, exist_ok=True)
  for seed, eval_dir in evals.items():
    traces = {name: record["stop"] for name, record in per_seed[seed].items() if "stop" in record}
    if traces:
      plots.forgetting(traces, os.path.join(folder, f"forgetting_seed{seed}.png"),
                       f"{title}, seed {seed}")
    losses = {}
    for name in names:
      with np.load(os.path.join(eval_dir, f"{name}_losses.npz")) as f:
        losses[name] = dict(f)
    plots.loss_densities(losses, os.path.join(folder, f"loss_density_seed{seed}.png"),
                         f"{title}, seed {seed}")
    embeddings = {}
    for name in names:
      path = os.path.join(eval_dir, f"{name}_embed.npz")
      if os.path.exists(path):
        with np.load(path) as f:
          embeddings[name] = dict(f)
    if embeddings:  # none with tsne.samples 0 (or evaluations saved before embeddings were)
      plots.tsne(embeddings, os.path.join(folder, f"tsne_seed{seed}.png"),
                 title=f"{title}, seed {seed}", seed=seed,
                 missing=[name for name in names if name not in embeddings],
                 cache=os.path.join(folder, f"tsne_seed{seed}_points.npz"),
                 **{k: tsne[k] for k in ("perplexity", "max_iter") if k in tsne})
    for name in names:
      path = os.path.join(eval_dir, f"{name}_samples.npz")
      if os.path.exists(path):
        with np.load(path) as f:
          plots.mixed_samples(dict(f), os.path.join(folder, f"samples_{name}_seed{seed}.png"),
                              f"{name}, seed {seed}")
