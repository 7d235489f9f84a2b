r"""Mean Teacher against cross-entropy on the labelled 40% alone, real MNIST images.

  python launch/mean_teacher_check.py --manual_dir=../shared/datasets/mnist

Checks that the semi setup's Mean Teacher (engine/mean_teacher.py) learns
from the images whose labels are hidden: on the first 2,000 MNIST training
images (the prepared train split's order), 40% labelled, both start from the
same θ_0 and take 1,260 Adam steps of batch 32 (20 epochs of the 2,000).
Mean Teacher's batches are drawn from all images (60% without a label),
cross-entropy's from the labelled 40% alone, so it sees 2.5 times as many
labels. Mean Teacher's defaults, but the EMA decay 0.99 throughout: at 0.999
the teacher averages over most of these 1,260 steps. Prints each seed's
accuracy on the images whose labels were hidden and exits 1 unless Mean
Teacher's mean over the seeds beats cross-entropy's by more than half a point
(one seed's margin, 0.2-2 points on 1,200 images, is near its noise).

A reproduction, not a test: 2.4 minutes for both seeds on one device (one
CPU core shared with a training job, 2026-12-02), and 5.2 minutes of the test
suite's CPU time when it was a test there, more than the suite can spend.
The suite checks Mean Teacher's parts against NumPy and runs the semi job
(tests/semi_test.py).
Numbers: docs/results.md ("Semi-supervised data-level unlearning").
"""

import functools
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from mixunlearn_jax import runtime

runtime.configure()

import jax
import numpy as np
import optax

from mixunlearn_jax import models
from mixunlearn_jax.data import datasets
from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import mean_teacher
from mixunlearn_jax.engine import supervised

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder of MNIST's four raw .gz files.",
                                  required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir (None: tfds' default).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds; the check compares the means over them.")
_IMAGES = flags.DEFINE_integer("images", 2000, "The first this many training images.")
_LABELLED = flags.DEFINE_float("labelled", 0.4, "Share of the images whose labels are known.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size of both.")
_STEPS = flags.DEFINE_integer("steps", 1260, "Adam steps of each.")
_MARGIN = flags.DEFINE_float("margin", 0.5, "Points by which Mean Teacher's mean must win.")


def hidden_label_accuracy(images, labels, seed):
  """(Mean Teacher's, cross-entropy's) accuracy on the images whose labels were hidden."""
  count, batch = len(labels), _BATCH.value
  rng = np.random.default_rng(seed)
  labelled = rng.permutation(count) < _LABELLED.value * count
  model, tx = models.create("cnn"), optax.adam(1e-3)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  section = mean_teacher.default_config()
  section.ema_decay = section.ema_decay_rampup = 0.99
  schedule = mean_teacher.Schedule.make(section, steps_per_epoch=count / batch)
  shape = images.shape[1:]
  teacher = mean_teacher.create_state(model, tx, jax.random.key(seed), jax.random.key(seed + 1),
                                      shape, mesh)
  plain = supervised.create_train_state(model, tx, jax.random.key(seed), shape, mesh)
  teacher_step = jax.jit(functools.partial(mean_teacher.train_step, model=model, tx=tx,
                                           schedule=schedule), donate_argnums=0)
  plain_step = jax.jit(functools.partial(supervised.train_step, model=model, tx=tx),
                       donate_argnums=0)
  known = np.flatnonzero(labelled)
  for _ in range(_STEPS.value):
    b = rng.integers(0, count, batch)
    teacher, _ = teacher_step(teacher, {"image": images[b], "label": np.where(
        labelled[b], labels[b], pipeline.NO_LABEL).astype(np.int32), "labelled": labelled[b]})
    b = known[rng.integers(0, len(known), batch)]
    plain, _ = plain_step(plain, {"image": images[b], "label": labels[b]})

  def accuracy(variables):
    logits, _ = model.apply(variables, images[~labelled], train=False)
    return 100 * float(np.mean(np.argmax(logits, -1) == labels[~labelled]))

  return accuracy(teacher.variables), accuracy({"params": plain.params,
                                                "batch_stats": plain.batch_stats})


def main(argv):
  del argv
  mnist = datasets.load("mnist", data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                        download=False)
  images = mnist.train_images[:_IMAGES.value] / 255.0
  images = ((images - np.array(mnist.mean)) / np.array(mnist.std)).astype(np.float32)
  labels = mnist.train_labels[:_IMAGES.value].astype(np.int32)
  results = []
  for seed in map(int, _SEEDS.value):
    results.append(hidden_label_accuracy(images, labels, seed))
    print(f"seed {seed}: Mean Teacher {results[-1][0]:.2f}, cross-entropy {results[-1][1]:.2f}",
          flush=True)
  teacher, plain = np.mean(results, axis=0)
  print(f"mean: Mean Teacher {teacher:.2f}, cross-entropy {plain:.2f}")
  if teacher <= plain + _MARGIN.value:
    sys.exit(f"Mean Teacher does not beat cross-entropy by more than {_MARGIN.value} points.")


if __name__ == "__main__":
  app.run(main)
