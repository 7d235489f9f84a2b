"""Mean Teacher learns from the samples whose labels are hidden (real MNIST images).

On digits it does not: 575 labels already give 97-98% (docs/results.md), so
this test trains on 2,000 MNIST images, about a minute per seed on 2 cores.
"""

import functools

import jax
import numpy as np
import optax
import pytest

from mixunlearn_jax import models
from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import mean_teacher
from mixunlearn_jax.engine import supervised
from tests import real_data

NUM_IMAGES, LABELLED, BATCH, STEPS = 2000, 0.4, 32, 1260  # 20 epochs of the 2,000
IMAGE_SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def mnist():
  """The first 2,000 training images, normalised as the job does, and their labels."""
  real_data.require_raw_files(real_data.MNIST_DIR)
  images = real_data.read_idx(real_data.MNIST_DIR, "train-images-idx3-ubyte.gz")[:NUM_IMAGES]
  labels = real_data.read_idx(real_data.MNIST_DIR, "train-labels-idx1-ubyte.gz")[:NUM_IMAGES]
  images = (images[..., None] / 255.0 - 0.1307) / 0.3081
  return images.astype(np.float32), labels.astype(np.int32)


def hidden_label_accuracy(images, labels, seed):
  """(Mean Teacher's, cross-entropy's) accuracy on the images whose labels were hidden.

  Both start from the same θ_0 and take STEPS Adam steps of batch 32: Mean
  Teacher's batches are drawn from all images (60% without a label),
  cross-entropy's from the labelled 40% alone, so it sees 2.5 times as many
  labels. Mean Teacher's defaults, but the EMA decay 0.99 throughout: at
  0.999 the teacher averages over most of these 1,260 steps.
  """
  rng = np.random.default_rng(seed)
  labelled = rng.permutation(NUM_IMAGES) < LABELLED * NUM_IMAGES
  model, tx = models.create("cnn"), optax.adam(1e-3)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))  # one device: faster here
  section = mean_teacher.default_config()
  section.ema_decay = section.ema_decay_rampup = 0.99
  schedule = mean_teacher.Schedule.make(section, steps_per_epoch=NUM_IMAGES / BATCH)
  teacher = mean_teacher.create_state(model, tx, jax.random.key(seed), jax.random.key(seed + 1),
                                      IMAGE_SHAPE, mesh)
  plain = supervised.create_train_state(model, tx, jax.random.key(seed), IMAGE_SHAPE, mesh)
  teacher_step = jax.jit(functools.partial(mean_teacher.train_step, model=model, tx=tx,
                                           schedule=schedule), donate_argnums=0)
  plain_step = jax.jit(functools.partial(supervised.train_step, model=model, tx=tx),
                       donate_argnums=0)
  known = np.flatnonzero(labelled)
  for _ in range(STEPS):
    b = rng.integers(0, NUM_IMAGES, BATCH)
    teacher, _ = teacher_step(teacher, {"image": images[b], "label": np.where(
        labelled[b], labels[b], pipeline.NO_LABEL).astype(np.int32), "labelled": labelled[b]})
    b = known[rng.integers(0, len(known), BATCH)]
    plain, _ = plain_step(plain, {"image": images[b], "label": labels[b]})

  def accuracy(variables):
    logits, _ = model.apply(variables, images[~labelled], train=False)
    return float(np.mean(np.argmax(logits, -1) == labels[~labelled]))

  return accuracy(teacher.variables), accuracy({"params": plain.params,
                                                "batch_stats": plain.batch_stats})


def test_mean_teacher_beats_cross_entropy_on_the_labelled_40_percent(mnist):
  # This test's numbers (2026-12-01, under the suite's XLA flags: conftest.py's 4 fake CPU
  # devices and runtime.configure()'s YNNPACK flag, which changes them): Mean Teacher
  # 96.75 / 95.33 against 94.92 / 95.17 (seeds 0, 1), means 96.04 against 95.04. The mean
  # over both seeds is compared, as one seed's margin (0.2-2 points on 1,200 images) is
  # near its noise.
  teacher, plain = np.mean([hidden_label_accuracy(*mnist, seed) for seed in (0, 1)], axis=0)
  assert teacher > plain + 0.005, (teacher, plain)
