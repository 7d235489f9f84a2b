"""The four unlearning setups (spec §5): which training samples form D_f.

A split depends only on the labels and the seed, and is saved with the run so
that evaluation and a resumed run read the same indices.
"""

import dataclasses

import numpy as np

SETUPS = ("class", "data", "noisy", "semi")
_SPLIT_STREAM = 0  # separates split randomness from other uses of the seed


@dataclasses.dataclass(frozen=True)
class Split:
  """Index sets into the training set, plus the labels training should use.

  `train_labels` differ from the dataset's labels in the noisy setup (D_f is
  relabelled before pretraining). `labelled` marks the samples whose label a
  semi-supervised trainer may read; None means all.
  """
  forget: np.ndarray
  remain: np.ndarray
  train_labels: np.ndarray
  labelled: np.ndarray | None = None

  def save(self, path):
    arrays = dict(forget=self.forget, remain=self.remain, train_labels=self.train_labels)
    if self.labelled is not None:
      arrays["labelled"] = self.labelled
    np.savez(path, **arrays)

  @classmethod
  def load(cls, path):
    with np.load(path) as f:
      return cls(f["forget"], f["remain"], f["train_labels"],
                 f["labelled"] if "labelled" in f else None)


def make_split(setup, labels, *, num_classes, seed, forget_class=0, forget_classes=(5, 6, 7, 8, 9),
               forget_fraction=0.4, noisy_classes=(0, 1, 2, 3, 4), noisy_fraction=0.6,
               unlabelled_fraction=0.6):
  """Builds the split of `setup` ('class', 'data', 'noisy' or 'semi')."""
  labels = np.asarray(labels, np.int32)
  rng = np.random.default_rng([seed, _SPLIT_STREAM])
  used = {"class": [("forget_class", [forget_class])], "noisy": [("noisy_classes", noisy_classes)]}
  for field, classes in used.get(setup, [("forget_classes", forget_classes)]):
    _check_classes(classes, num_classes, field)
  for field, value in [("forget_fraction", forget_fraction), ("noisy_fraction", noisy_fraction),
                       ("unlabelled_fraction", unlabelled_fraction)]:
    if not 0.0 < value < 1.0:
      raise ValueError(f"{field} must lie in (0, 1), got {value}.")

  train_labels, labelled = labels, None
  if setup == "class":
    forget = np.flatnonzero(labels == forget_class)
  elif setup == "data":
    forget = _fraction_of_classes(rng, labels, forget_classes, forget_fraction)
  elif setup == "noisy":
    forget = _fraction_of_classes(rng, labels, noisy_classes, noisy_fraction)
    train_labels = labels.copy()
    # A uniformly drawn wrong label: shift by 1..K-1 classes.
    shift = rng.integers(1, num_classes, size=len(forget))
    train_labels[forget] = (labels[forget] + shift) % num_classes
  elif setup == "semi":
    labelled = rng.random(len(labels)) >= unlabelled_fraction
    forget = _fraction_of_classes(rng, labels, forget_classes, forget_fraction)
  else:
    raise ValueError(f"Unknown setup {setup!r}; known setups: {', '.join(SETUPS)}.")
  remain = np.setdiff1d(np.arange(len(labels)), forget)
  if not len(forget):
    raise ValueError(f"The {setup!r} setup gives an empty forget set: no training sample matches.")
  if not len(remain):
    raise ValueError(f"The {setup!r} setup leaves no remaining data.")
  return Split(forget.astype(np.int64), remain.astype(np.int64), train_labels, labelled)


def _fraction_of_classes(rng, labels, classes, fraction):
  chosen = []
  for c in classes:
    members = np.flatnonzero(labels == c)
    chosen.append(rng.permutation(members)[:int(round(fraction * len(members)))])
  return np.sort(np.concatenate(chosen))


def _check_classes(classes, num_classes, field):
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad:
    raise ValueError(f"{field} {bad} out of range: classes are 0..{num_classes - 1}.")
