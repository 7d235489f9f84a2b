"""The paper's Tables 1-6 (mean ± std %), and our results in their layout beside them.

Transcribed from the paper's text (Peng, Tang, Yang, ICLR 2025). Table 1 is
whole. In Table 2 the text extraction merged the MNIST, Fashion-MNIST and
L-Mix rows: a cell whose row we cannot tell for sure is None, not a guess
(MNIST's LAF and RandLabel Train_r, every label-agnostic MixUnlearn and L-Mix
cell on MNIST and Fashion-MNIST, CIFAR-10's Unrolling and RandLabel Train_r).
Tables 3 and 4 (ablations of label-agnostic MixUnlearn) are garbled the same
way on MNIST and Fashion-MNIST (Table 4 has no legible MNIST or Fashion-MNIST
cell, CIFAR-10's ASR column is missing); Tables 5 (noisy) and 6 (semi) are
whole and cover CIFAR-10 and SVHN only.
"""

# The paper's row order: label-aware methods, then label-agnostic ones.
ROWS = ("retrain", "neggrad", "boundary_shrink", "sisa", "unrolling", "teacher_student", "scrub",
        "dsmixup", "gli", "laf_r", "mixunlearn_aware", "laf", "randlabel", "lmix",
        "mixunlearn_agnostic")

_DATA_COLUMNS = ("Train_r", "Train_f", "Test", "ASR")
_COLUMNS = {"class": ("Test_r", "Test_f", "ASR"), "data": _DATA_COLUMNS, "noisy": _DATA_COLUMNS,
            "semi": _DATA_COLUMNS}

# Tables 3 and 4 ablate label-agnostic MixUnlearn. Table 3's "w/o MB" rows at α = 0.35,
# 0.75 (our `mixunlearn.alpha` default) and 1.5; Table 4 gives one "w/o MB" row, no α.
_DATA_ABLATION_ROWS = ("mixunlearn_agnostic_vanilla_mixup", "mixunlearn_agnostic_no_real",
                       "mixunlearn_agnostic_no_mix", "mixunlearn_agnostic_no_sharpen")
ABLATION_ROWS = ("mixunlearn_agnostic_vanilla_mixup_alpha035", _DATA_ABLATION_ROWS[0],
                 "mixunlearn_agnostic_vanilla_mixup_alpha150", *_DATA_ABLATION_ROWS[1:])
# Tables 5 (noisy: label-aware methods) and 6 (semi: label-agnostic ones) have these rows only.
_NOISY_ROWS = ("retrain", "neggrad", "sisa", "laf_r", "mixunlearn_aware")
_SEMI_ROWS = ("retrain", "laf", "lmix", "mixunlearn_agnostic")

# One string per dataset and setup: a line per row of ROWS, its cells in _COLUMNS' order.
_TABLES = {
    ("cifar10", "class"): """
        86.80±0.89 0±0 67.98±2.21
        58.48±3.41 0±0 51.53±1.21
        82.98±1.98 1.52±0.33 62.33±2.98
        73.01±0.56 0±0 51.53±0.12
        83.89±2.02 0±0 67.32±1.92
        86.31±1.12 5.20±1.32 46.98±3.26
        34.12±1.23 0±0 49.89±1.23
        64.31±2.01 0±0 50.83±1.93
        84.82±0.65 47.28±5.70 73.03±0.80
        87.20±0.69 0.20±0.04 56.89±1.23
        87.10±0.78 0±0 68.30±2.77
        82.01±0.89 3.10±0.98 51.34±1.27
        81.60±0.57 19.90±0.16 64.76±1.56
        82.34±0.99 0.66±1.57 53.61±1.88
        86.32±0.56 0±0 68.48±0.67""",
    ("svhn_cropped", "class"): """
        94.20±0.78 0±0 59.63±1.77
        77.12±1.56 5.98±1.33 53.22±2.10
        91.28±1.02 13.12±3.91 61.34±3.05
        92.04±0.81 0±0 62.45±1.34
        92.01±1.19 88.12±3.12 58.30±3.02
        92.89±0.82 7.86±2.06 48.97±0.88
        20.33±0.65 0±0 64.21±1.12
        82.31±1.90 0±0 50.62±1.77
        93.44±0.50 63.22±7.77 86.10±0.32
        91.35±0.73 0±0 61.89±1.37
        93.95±0.69 0±0 59.97±2.68
        84.89±1.34 0.78±0.22 56.45±0.65
        91.05±1.90 91.11±1.55 62.59±0.83
        88.74±0.88 0.30±0.47 52.00±1.11
        93.40±1.35 0±0 62.18±0.72""",
    ("mnist", "class"): """
        98.79±0.20 0±0 26.56±1.75
        98.89±0.22 81.89±5.23 38.12±2.11
        98.43±0.37 96.24±1.32 38.89±2.41
        99.11±0.05 0±0 50.24±0.35
        97.32±0.76 83.41±5.41 37.45±4.12
        61.53±10.45 0.21±0.05 36.83±3.12
        99.12±0.04 89.31±2.13 32.41±3.21
        99.09±0.18 0±0 25.01±0.59
        98.99±0.10 99.51±0.32 61.37±0.22
        99.12±0.05 0.23±0.05 25.01±1.24
        98.85±0.04 0±0 27.13±0.77
        97.97±0.26 0.27±0.06 49.31±3.23
        95.68±1.21 50.91±10.88 27.89±2.12
        98.05±0.14 0±0 24.01±0.19
        98.88±0.07 0±0 27.37±1.60""",
    ("fashion_mnist", "class"): """
        92.71±0.47 0±0 38.04±2.11
        88.91±0.92 1.23±0.34 37.98±2.45
        86.41±1.78 1.32±0.38 38.45±2.13
        92.33±0.12 0±0 49.80±0.13
        87.41±1.23 0.40±0.12 41.41±2.13
        91.51±0.64 21.43±5.55 26.13±0.78
        91.32±0.64 0.51±0.13 35.14±0.89
        91.56±0.47 0±0 35.33±1.01
        90.87±0.61 86.42±3.74 60.93±0.04
        91.85±0.34 0.33±0.07 34.89±2.89
        92.82±0.66 0±0 38.15±2.54
        89.88±0.80 3.12±0.82 31.89±1.32
        87.96±1.14 39.10±3.36 33.29±0.85
        90.15±1.33 5.01±2.94 32.95±1.59
        91.80±1.33 0±0 38.07±0.65""",
    ("cifar10", "data"): """
        84.15±0.37 77.85±1.56 86.99±0.78 57.42±1.33
        78.56±0.83 68.78±3.12 82.56±1.23 56.03±0.67
        55.34±1.58 16.99±3.13 52.89±3.67 60.14±1.34
        66.81±0.22 53.45±0.68 54.49±0.10 37.88±0.09
        - - - -
        71.54±1.42 71.98±3.12 77.01±3.21 55.62±1.34
        29.05±1.45 0.32±0.10 23.89±1.23 56.01±2.02
        58.19±1.55 53.97±1.39 63.44±1.22 51.12±1.49
        79.19±1.28 83.26±1.13 84.34±1.08 73.37±0.83
        79.20±1.20 79.20±0.91 84.88±1.21 57.84±0.88
        82.01±0.68 76.97±0.52 85.99±1.15 57.45±0.71
        78.12±1.03 73.42±3.56 82.33±2.03 57.70±0.77
        - 72.55±2.88 83.38±2.79 56.33±0.91
        - - - -
        79.18±0.98 78.48±1.25 84.82±1.39 57.29±1.02""",
    ("svhn_cropped", "data"): """
        83.70±0.35 75.38±1.03 93.44±0.88 58.58±1.59
        81.22±0.58 68.89±1.49 91.89±1.56 57.86±1.23
        65.12±1.56 30.01±2.01 72.02±1.12 87.58±3.91
        83.01±0.25 67.91±0.57 82.98±0.96 51.03±0.58
        70.12±2.13 47.23±2.09 83.88±0.78 55.45±1.23
        78.52±0.55 73.01±0.89 91.01±0.78 56.12±1.76
        23.45±0.10 0.23±0.05 20.89±0.23 64.32±2.33
        73.33±0.98 65.03±0.87 81.48±0.54 52.26±1.10
        82.10±0.83 76.08±1.51 93.10±0.36 78.48±0.36
        83.40±0.56 76.12±0.68 93.68±0.77 57.91±0.44
        83.37±0.39 75.89±0.68 93.31±0.55 58.11±0.38
        81.60±0.67 76.34±1.32 92.24±0.67 57.80±0.98
        77.90±1.24 72.55±1.55 83.38±0.89 56.33±1.33
        - - - -
        81.77±0.28 75.31±1.25 92.46±0.47 57.88±0.74""",
    ("mnist", "data"): """
        99.50±0.08 98.83±0.06 99.13±0.12 49.63±0.64
        99.02±0.15 98.90±0.17 98.68±0.35 50.67±0.49
        97.55±1.05 94.99±1.69 96.05±1.56 46.99±2.23
        99.11±0.14 98.44±0.11 99.01±0.08 34.89±0.09
        99.64±0.12 99.42±0.28 99.05±0.24 47.89±0.54
        94.35±0.98 93.33±2.51 93.67±1.23 48.01±0.88
        99.17±0.23 99.04±0.22 98.76±0.12 46.88±0.50
        99.50±0.14 98.51±0.09 98.97±0.03 47.28±0.05
        99.73±0.07 99.70±0.06 99.03±0.11 39.27±1.35
        99.43±0.16 99.20±0.27 98.78±0.12 49.20±0.57
        99.60±0.06 98.70±0.28 98.60±0.36 49.53±0.73
        - 97.21±1.28 97.44±0.81 47.79±0.92
        - 97.35±0.85 97.88±0.51 47.81±0.65
        - - - -
        - - - -""",
    ("fashion_mnist", "data"): """
        96.34±0.49 92.34±0.56 90.45±0.36 47.35±0.86
        93.78±0.45 89.56±0.35 89.44±0.34 46.34±0.78
        57.23±3.24 46.89±3.04 52.09±3.88 48.23±1.82
        91.77±0.30 90.89±0.10 90.01±0.30 31.41±0.19
        89.99±0.43 84.01±0.94 81.43±0.45 47.78±0.61
        83.01±1.34 86.89±2.45 82.67±1.34 44.37±2.40
        91.12±0.12 88.23±0.45 88.88±0.25 45.35±0.67
        90.85±0.22 88.15±0.32 88.77±0.31 49.92±0.29
        96.04±0.28 96.30±0.91 90.46±0.22 50.19±0.63
        94.23±0.35 94.86±1.44 90.55±0.35 47.42±0.32
        95.60±0.86 93.01±1.01 90.50±0.25 47.36±0.22
        91.45±1.46 91.01±2.30 87.33±2.69 46.86±0.76
        92.27±1.89 93.80±2.53 88.75±1.79 45.12±1.55
        - - - -
        - - - -""",
}


# Tables 3-6, as (rows, text) per dataset and setup; the class- and data-level
# ablations add their rows to Tables 1 and 2.
_MORE_TABLES = {
    ("cifar10", "class"): (ABLATION_ROWS, """
        85.01±0.53 0±0 65.24±0.88
        85.42±0.32 0±0 65.15±0.76
        84.96±0.69 0±0 65.01±0.91
        29.30±1.80 0±0 58.42±2.55
        82.15±1.69 0±0 61.30±2.31
        85.83±0.89 0±0 70.27±0.69"""),
    ("svhn_cropped", "class"): (ABLATION_ROWS, """
        92.34±0.69 0±0 62.87±1.41
        - - -
        92.01±0.86 0±0 63.17±0.98
        26.89±1.32 0±0 60.91±1.01
        91.68±1.06 0±0 50.95±2.66
        93.01±0.99 0±0 67.12±0.68"""),
    ("mnist", "class"): (ABLATION_ROWS, """
        99.00±0.22 - 30.01±1.02
        99.25±0.14 - 29.37±0.47
        99.03±0.18 - 29.01±0.58
        67.00±1.54 - 48.63±1.74
        97.49±0.25 - 31.30±0.75
        - - -"""),
    ("fashion_mnist", "class"): (ABLATION_ROWS, """
        90.96±0.76 0±0 36.24±1.12
        91.33±0.71 0±0 36.33±1.09
        91.01±0.89 0±0 36.01±0.98
        40.50±1.43 - 43.83±1.15
        - - 38.04±0.62
        - - -"""),
    ("cifar10", "data"): (_DATA_ABLATION_ROWS, """
        78.86±0.67 78.57±0.88 84.70±0.96 -
        19.92±1.47 0±0 16.27±0.76 -
        78.65±0.98 80.57±1.11 84.62±0.99 -
        78.97±0.77 78.12±0.91 84.71±1.11 -"""),
    ("svhn_cropped", "data"): (_DATA_ABLATION_ROWS, """
        81.76±0.27 76.15±0.64 92.06±0.29 56.74±0.95
        22.26±1.22 0±0 21.96±1.45 63.35±1.23
        81.61±0.66 77.89±0.56 92.41±0.96 56.32±1.21
        81.67±0.28 75.98±0.94 92.33±0.56 56.66±1.09"""),
    ("cifar10", "noisy"): (_NOISY_ROWS, """
        84.30±0.53 3.42±0.35 84.69±1.04 59.56±0.96
        25.31±2.55 5.21±0.83 22.14±1.22 65.30±3.44
        62.31±0.27 10.30±0.15 53.02±0.63 46.23±2.61
        77.80±0.89 4.88±1.20 78.30±0.79 59.09±0.88
        81.12±0.99 4.87±1.18 82.13±1.04 59.14±1.44"""),
    ("svhn_cropped", "noisy"): (_NOISY_ROWS, """
        82.46±0.15 2.37±0.23 93.38±0.35 59.55±1.22
        18.48±2.68 2.48±1.21 17.46±6.08 58.25±2.05
        80.17±0.13 2.45±0.31 80.02±0.07 44.84±0.04
        79.39±0.27 2.85±0.17 90.51±0.50 55.09±1.64
        81.01±0.44 2.21±0.37 92.18±0.88 54.13±0.52"""),
    ("cifar10", "semi"): (_SEMI_ROWS, """
        75.52±0.79 73.81±0.71 80.72±0.91 55.78±1.21
        65.22±0.75 60.03±1.04 70.13±0.95 52.47±1.05
        69.57±1.45 62.86±1.13 74.65±0.98 52.61±1.22
        71.35±0.89 71.76±1.30 77.65±1.25 55.35±1.89"""),
    ("svhn_cropped", "semi"): (_SEMI_ROWS, """
        81.42±1.12 70.41±0.69 90.50±0.59 57.88±0.97
        77.44±0.76 71.50±0.43 87.04±0.93 54.01±1.34
        77.70±1.09 71.73±0.77 87.45±1.23 54.81±0.89
        78.58±0.55 69.11±0.88 89.38±0.66 54.50±1.04"""),
}

def _cell(text):
  """'98.79±0.20' -> (98.79, 0.20); '-' (not legible in the paper's text) -> None."""
  if text == "-":
    return None
  mean, std = text.split("±")
  return float(mean), float(std)


def table(dataset, setup):
  """{method: {metric: (mean, std) or None}} of the paper for (dataset, setup); {} if none."""
  sources = [(ROWS, _TABLES[dataset, setup])] if (dataset, setup) in _TABLES else []
  sources += [_MORE_TABLES[dataset, setup]] if (dataset, setup) in _MORE_TABLES else []
  return {row: cells for rows, text in sources for row, cells in _parse(rows, text, setup).items()}


def _parse(rows, text, setup):
  lines = text.strip().splitlines()
  assert len(lines) == len(rows), (rows, text)
  return {row: dict(zip(_COLUMNS[setup], map(_cell, line.split()), strict=True))
          for row, line in zip(rows, lines)}


def merge(results_list):
  """One results dict from workdirs that share f_D and Retrain (`pretrain.reuse_workdir`).

  A method found in two workdirs, or workdirs whose dataset, setup, seeds or
  Retrain differ, are refused: their rows would not be comparable.
  """
  first = results_list[0]
  merged = {**first, "models": dict(first["models"]), "diverged": dict(first.get("diverged", {})),
            "stopping": dict(first.get("stopping", {}))}
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


def check_comparable(first, results):
  """Raises unless `results` has `first`'s dataset, setup, seeds, f_D and Retrain."""
  for key in ("dataset", "setup", "seeds"):
    if results[key] != first[key]:
      raise ValueError(f"Workdirs differ in {key}: {first[key]} and {results[key]}.")
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
          f"{seconds:.0f}", f"{seconds / results['models']['retrain']['seconds']['mean']:.2f}"]


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
          "Time: the stage's wall time without compilation; f_D's is pretraining.")
  return note + "\n\n" + "\n".join(lines) + "\n"
