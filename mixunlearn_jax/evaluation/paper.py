"""The paper's Tables 1-6 (mean ± std %), and our results in their layout beside them.

The paper's cells are data: `paper_tables.txt` beside this module, transcribed
from the paper's text, says which cells the extraction left illegible.
"""

import functools
import pathlib

from mixunlearn_jax.evaluation import report

# The paper's row order: label-aware methods, then label-agnostic ones.
ROWS = ("retrain", "neggrad", "boundary_shrink", "sisa", "unrolling", "teacher_student", "scrub",
        "dsmixup", "gli", "laf_r", "mixunlearn_aware", "laf", "randlabel", "lmix",
        "mixunlearn_agnostic")
# Table 3's ablations of label-agnostic MixUnlearn, "w/o MB" at α = 0.35, 0.75 (our
# `mixunlearn.alpha` default) and 1.5; Table 4 has the same rows but one "w/o MB" (0.75).
ABLATION_ROWS = ("mixunlearn_agnostic_vanilla_mixup_alpha035", "mixunlearn_agnostic_vanilla_mixup",
                 "mixunlearn_agnostic_vanilla_mixup_alpha150", "mixunlearn_agnostic_no_real",
                 "mixunlearn_agnostic_no_mix", "mixunlearn_agnostic_no_sharpen")
_SOURCE = pathlib.Path(__file__).with_name("paper_tables.txt")


def table(dataset, setup):
  """{method: {metric: (mean, std) or None}} of the paper for (dataset, setup); {} if none."""
  return _tables().get((dataset, setup), {})


@functools.cache
def _tables():
  """{(dataset, setup): {method: {metric: cell}}} from `_SOURCE`; a key's blocks (Table 1
  then 3, or 2 then 4) add their rows in the file's order."""
  tables, columns, rows = {}, None, None
  for line in _SOURCE.read_text().splitlines():
    if not line or line.startswith("#"):
      continue
    if line.startswith("["):  # "[dataset setup] column ..."
      key, names = line[1:].split("]")
      rows, columns = tables.setdefault(tuple(key.split()), {}), names.split()
      continue
    method, *texts = line.split()
    rows[method] = dict(zip(columns, map(_cell, texts), strict=True))
  return tables


def _cell(text):
  """'98.79±0.20' -> (98.79, 0.20); '-' (not legible in the paper's text) -> None."""
  if text == "-":
    return None
  mean, std = text.split("±")
  return float(mean), float(std)


def merge(results_list):
  """One results dict from workdirs that share f_D and Retrain (`pretrain.reuse_workdir`).

  A method found in two workdirs, or workdirs whose dataset, setup, seeds or
  Retrain differ, are refused: their rows would not be comparable.
  """
  first = results_list[0]
  merged = {**first, "models": dict(first["models"]), "diverged": dict(first.get("diverged", {})),
            "stopping": dict(first.get("stopping", {})), "machines": machines(results_list)}
  for results in results_list[1:]:
    check_comparable(first, results)
    merged["stopping"].update(results.get("stopping", {}))
    for key in ("models", "diverged"):
      for name, entry in results.get(key, {}).items():
        if name in ("initial", "retrain"):
          continue
        if name in merged["models"] or name in merged["diverged"]:
          raise ValueError(f"{name} is in two workdirs: keep one.")
        merged[key][name] = entry
  return merged


def machines(results_list):
  """{seed: the machines any of `results_list` ran it on}."""
  merged = {}
  for results in results_list:  # results.json written before records named the machine: none
    for seed, kinds in results.get("machines", {}).items():
      merged[seed] = sorted({*merged.get(seed, ()), *kinds})
  return merged


def check_comparable(first, results):
  """Raises unless `results` has `first`'s dataset, setup, seeds, f_D and Retrain."""
  for key in ("dataset", "setup"):
    if results[key] != first[key]:
      raise ValueError(f"Workdirs differ in {key}: {first[key]} and {results[key]}.")
  if results["seeds"] != first["seeds"]:  # a job's own report covers the seeds it ran
    seeds = ",".join(str(s) for s in sorted(set(first["seeds"]) | set(results["seeds"])))
    raise ValueError(f"Workdirs differ in seeds: {first['seeds']} and {results['seeds']}. If "
                     "processes shared them, one per seed, rebuild each one's results for all "
                     f"seeds first: python -m mixunlearn_jax.report --workdir=... --seeds={seeds}")
  if results["metrics"] != first["metrics"]:  # a column would be empty for some rows
    raise ValueError(f"Workdirs differ in metrics: {first['metrics']} and {results['metrics']} "
                     "(asr.protocols): rerun the one without a column with the other's "
                     "protocols and --overwrite, which redoes its evaluations.")
  for shared in ("initial", "retrain"):  # per-seed metrics equal: the same trained models
    ours, theirs = first["models"][shared], results["models"][shared]
    if any(ours[m]["per_seed"] != theirs[m]["per_seed"] for m in _distance_metrics(first)):
      raise ValueError(f"Workdirs have different {shared} models: run the others with "
                       "--config.pretrain.reuse_workdir=<the first>.")


def _distance_metrics(results):
  # results.json files written before a second attack protocol existed have no such key.
  return results.get("distance_metrics", results["metrics"])


def ordered(names, label_agnostic=frozenset()):
  """The methods of `names` (f_D and Retrain left out) in the paper's order: label-aware
  ones, then `label_agnostic` ones, each group with its ablations after it."""
  order = {name: i for i, name in enumerate(ROWS + ABLATION_ROWS)}
  return sorted((n for n in names if n not in ("initial", "retrain")),
                key=lambda n: (n in label_agnostic, order.get(n, len(order)), n))


def cells(results, name, paper=None):
  """Model `name`'s metrics (mean ± std, with `paper`'s mean in brackets where it has the
  cell), its distance to Retrain, wall time and its ratio to Retrain's; 'diverged' cells for
  a model without metrics."""
  row = (paper or {}).get(name, {})
  entry = results["models"].get(name)
  if entry is None:
    return [_beside("diverged", row.get(m)) for m in results["metrics"]] + ["—"] * 3
  distance = entry.get("distance_to_retrain")  # report.aggregate's
  seconds = entry["seconds"]["mean"]
  return [*(_beside(f"{entry[m]['mean']:.2f} ± {entry[m]['std']:.2f}", row.get(m))
            for m in results["metrics"]),
          "—" if distance is None or name == "retrain" else f"{distance:.2f}",
          f"{seconds:.0f}", f"{report.cost_ratio(entry, results['models']['retrain']):.2f}"]


def _beside(cell, paper_cell):
  return cell + (f" ({paper_cell[0]:.2f})" if paper_cell else "")


def markdown(results, label_agnostic):
  """The paper's layout: Retrain, label-aware methods, label-agnostic ones (`label_agnostic`:
  their names), each cell ours (the paper's), then distance, wall time and its ratio to Retrain's."""
  paper = table(results["dataset"], results["setup"])
  header = ["", "method", *results["metrics"], "distance to Retrain", "time (s)",
            "time / Retrain"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  names = ordered((*results["models"], *results.get("diverged", {})), label_agnostic)
  for name in ["initial", "retrain", *names]:
    group = ("" if name in ("initial", "retrain") else
             "agnostic" if name in label_agnostic else "aware")
    lines.append("| " + " | ".join([group, "f_D" if name == "initial" else name,
                                    *cells(results, name, paper)]) + " |")
  note = (f"{results['dataset']}, {results['setup']} setup, seeds {results['seeds']}: ours, mean ± "
          "std % over seeds (the paper's mean in brackets where its table has the cell). "
          "Time: the stage's wall time without compilation; f_D's is pretraining."
          + report.machines_note(results.get("machines", {})))
  return note + "\n\n" + "\n".join(lines) + "\n"
