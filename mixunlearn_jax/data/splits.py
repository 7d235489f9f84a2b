"""The four unlearning setups (spec §5): which training samples form D_f.

A split depends only on the labels and the seed, and is saved with the run so
that evaluation and a resumed run read the same indices.
"""

import dataclasses

import numpy as np

SETUPS = ("class", "data", "noisy", "semi")
_SPLIT_STREAM = 0  # separates split randomness from other uses of the seed
_HELDOUT_STREAM = 1  # the stopping rule's held-out pool draws from its own stream


@dataclasses.dataclass(frozen=True)
class Split:
  """Index sets into the training set, plus the labels training should use.

  `train_labels` differ from the dataset's labels in the noisy setup (D_f is
  relabelled before pretraining). `labelled` marks the samples whose label a
  semi-supervised trainer may read; None means all. `heldout` is the
  stopping rule's pool (engine/stopping.py), carved out before pretraining:
  in neither D_f nor D_r, so no model trains on it and no metric scores it;
  None without the rule.
  """
  forget: np.ndarray
  remain: np.ndarray
  train_labels: np.ndarray
  labelled: np.ndarray | None = None
  heldout: np.ndarray | None = None

  @property
  def train(self):
    """D: the indices f_D trains on (all of the training set but the held-out pool)."""
    return np.union1d(self.forget, self.remain)

  def save(self, path):
    arrays = dict(forget=self.forget, remain=self.remain, train_labels=self.train_labels)
    for name in ("labelled", "heldout"):
      if getattr(self, name) is not None:
        arrays[name] = getattr(self, name)
    np.savez(path, **arrays)

  @classmethod
  def load(cls, path):
    with np.load(path) as f:
      return cls(f["forget"], f["remain"], f["train_labels"],
                 *[f[name] if name in f else None for name in ("labelled", "heldout")])


def make_split(setup, labels, *, num_classes, seed, forget_class=0, forget_classes=(5, 6, 7, 8, 9),
               forget_fraction=0.4, noisy_classes=(0, 1, 2, 3, 4), noisy_fraction=0.6,
               unlabelled_fraction=0.6, heldout_per_class=0):
  """Builds the split of `setup` ('class', 'data', 'noisy' or 'semi').

  `heldout_per_class` > 0 first carves that many samples of every class into
  the held-out pool (`Split.heldout`); the setup then chooses D_f among the rest.
  """
  labels = np.asarray(labels, np.int32)
  rng = np.random.default_rng([seed, _SPLIT_STREAM])
  used = {"class": [("forget_class", [forget_class])], "noisy": [("noisy_classes", noisy_classes)]}
  for field, classes in used.get(setup, [("forget_classes", forget_classes)]):
    _check_classes(classes, num_classes, field)
  for field, value in [("forget_fraction", forget_fraction), ("noisy_fraction", noisy_fraction),
                       ("unlabelled_fraction", unlabelled_fraction)]:
    if not 0.0 < value < 1.0:
      raise ValueError(f"{field} must lie in (0, 1), got {value}.")
  heldout = _heldout(labels, num_classes, heldout_per_class, seed)
  available = ~np.isin(np.arange(len(labels)), heldout)

  train_labels, labelled = labels, None
  if setup == "class":
    forget = np.flatnonzero((labels == forget_class) & available)
  elif setup == "data":
    forget = _fraction_of_classes(rng, labels, forget_classes, forget_fraction, available)
  elif setup == "noisy":
    forget = _fraction_of_classes(rng, labels, noisy_classes, noisy_fraction, available)
    train_labels = labels.copy()
    # A uniformly drawn wrong label: shift by 1..K-1 classes.
    shift = rng.integers(1, num_classes, size=len(forget))
    train_labels[forget] = (labels[forget] + shift) % num_classes
  elif setup == "semi":
    labelled = rng.random(len(labels)) >= unlabelled_fraction
    forget = _fraction_of_classes(rng, labels, forget_classes, forget_fraction, available)
  else:
    raise ValueError(f"Unknown setup {setup!r}; known setups: {', '.join(SETUPS)}.")
  remain = np.setdiff1d(np.flatnonzero(available), forget)
  if not len(forget):
    raise ValueError(f"The {setup!r} setup gives an empty forget set: no training sample matches.")
  if not len(remain):
    raise ValueError(f"The {setup!r} setup leaves no remaining data.")
  return Split(forget.astype(np.int64), remain.astype(np.int64), train_labels, labelled,
               heldout if len(heldout) else None)


def _heldout(labels, num_classes, per_class, seed):
  """`per_class` samples of every class, drawn with the seed, sorted (none for 0)."""
  if not per_class:
    return np.zeros(0, np.int64)
  rng = np.random.default_rng([seed, _HELDOUT_STREAM])
  chosen = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    if len(members) <= per_class:
      raise ValueError(f"stop.heldout_per_class={per_class} would hold out all {len(members)} "
                       f"training samples of class {c}; use fewer.")
    chosen.append(rng.permutation(members)[:per_class])
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def _fraction_of_classes(rng, labels, classes, fraction, available):
  chosen = []
  for c in classes:
    members = np.flatnonzero((labels == c) & available)
    chosen.append(rng.permutation(members)[:int(round(fraction * len(members)))])
  return np.sort(np.concatenate(chosen))


def _check_classes(classes, num_classes, field):
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad:
    raise ValueError(f"{field} {bad} out of range: classes are 0..{num_classes - 1}.")
