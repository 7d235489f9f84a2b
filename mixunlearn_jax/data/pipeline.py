"""tf.data input pipelines: supervised, paired forget/remain, and evaluation.

Every batch is a pure function of (seed, step): the sample order comes from
per-pass permutations seeded by (seed, stream, pass) and augmentation from
stateless TF ops seeded by (seed, stream, step). A resumed run therefore sees
exactly the batches an uninterrupted run would, starting at any step.
"""

import dataclasses
import math

import jax
import numpy as np
import tensorflow as tf

# Streams keep the randomness of different pipelines independent.
TRAIN_STREAM, FORGET_STREAM, REMAIN_STREAM = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Normalisation and training augmentation (random crop with padding, flip)."""
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int = 0
  random_flip: bool = False


def steps_per_epoch(num_examples, batch_size):
  """An epoch is one pass over the data; a partial last batch counts as a step."""
  return math.ceil(num_examples / batch_size)


def stream_rows(indices, batch_size, *, seed, stream, start_step, num_steps):
  """Rows [start_step, num_steps) of the batch-index matrix of an endless stream.

  The stream concatenates independent permutations of `indices`, one per pass,
  and step s takes elements [s*B, (s+1)*B). An epoch's last partial batch is
  thus filled from the start of the next pass instead of being dropped, and
  every sample appears exactly once in each window of len(indices) elements
  aligned to a pass.
  """
  indices = np.asarray(indices)
  if not len(indices):
    raise ValueError("Cannot build a batch stream over an empty index set.")
  positions = np.arange(start_step * batch_size, num_steps * batch_size, dtype=np.int64)
  passes = positions // len(indices)
  rows = np.empty(len(positions), np.int64)
  for p in np.unique(passes):
    permutation = np.random.default_rng([seed, stream, int(p)]).permutation(len(indices))
    selected = passes == p
    rows[selected] = indices[permutation[positions[selected] % len(indices)]]
  return rows.reshape(-1, batch_size)


def train_pipeline(images, labels, indices, *, batch_size, num_steps, seed, preprocess,
                   start_step=0):
  """Yields {'image', 'label'} numpy batches for supervised steps start_step.."""
  rows = stream_rows(indices, batch_size, seed=seed, stream=TRAIN_STREAM,
                     start_step=start_step, num_steps=num_steps)
  batcher = _Batcher(images, labels, preprocess, seed)
  ds = tf.data.Dataset.from_tensor_slices((_local(rows), _steps(start_step, num_steps)))
  ds = ds.map(lambda idx, step: batcher(idx, step, TRAIN_STREAM, augment=True),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def paired_pipeline(images, labels, forget, remain, *, batch_size, num_steps, seed, preprocess,
                    with_labels, start_step=0):
  """Yields {'forget': {...}, 'remain': {...}} batches of equal size B.

  One epoch is ceil(|D_f| / B) steps, one pass over D_f; the remain side walks
  through D_r reshuffled on every pass. With `with_labels=False` the batches
  carry images only, so a label-agnostic method cannot read labels by accident.
  """
  steps = _steps(start_step, num_steps)
  sides = {}
  for name, indices, stream in [("forget", forget, FORGET_STREAM),
                                ("remain", remain, REMAIN_STREAM)]:
    rows = stream_rows(indices, batch_size, seed=seed, stream=stream,
                       start_step=start_step, num_steps=num_steps)
    sides[name] = (_local(rows), stream)
  batcher = _Batcher(images, labels if with_labels else None, preprocess, seed)

  def pair(forget_idx, remain_idx, step):
    return {"forget": batcher(forget_idx, step, FORGET_STREAM, augment=True),
            "remain": batcher(remain_idx, step, REMAIN_STREAM, augment=True)}

  ds = tf.data.Dataset.from_tensor_slices((sides["forget"][0], sides["remain"][0], steps))
  ds = ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def eval_pipeline(images, labels, indices, *, batch_size, preprocess):
  """Yields {'image', 'label', 'mask'}: every example exactly once, in order.

  The last batch is padded to the full batch size (repeating the first index)
  and the padding gets mask 0, so no example is dropped or counted twice.
  """
  indices = np.asarray(indices)
  num_batches = steps_per_epoch(len(indices), batch_size)
  padded = np.full(num_batches * batch_size, indices[0] if len(indices) else 0, np.int64)
  padded[:len(indices)] = indices
  mask = (np.arange(len(padded)) < len(indices)).astype(np.float32)
  rows, mask = padded.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)
  batcher = _Batcher(images, labels, preprocess, seed=0)
  ds = tf.data.Dataset.from_tensor_slices((_local(rows), _local(mask)))
  ds = ds.map(lambda idx, m: {**batcher(idx, 0, 0, augment=False), "mask": m},
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


class _Batcher:
  """Gathers, augments and normalises one batch of indices inside tf.data."""

  def __init__(self, images, labels, preprocess, seed):
    self.images = tf.constant(images)
    self.labels = None if labels is None else tf.constant(np.asarray(labels, np.int32))
    self.preprocess = preprocess
    self.seed = seed

  def __call__(self, idx, step, stream, *, augment):
    p = self.preprocess
    x = tf.cast(tf.gather(self.images, idx), tf.float32) / 255.0
    if augment and (p.crop_padding or p.random_flip):
      seed = tf.stack([tf.constant(self.seed, tf.int64) * 16 + stream, tf.cast(step, tf.int64)])
      x = _augment(x, seed, p.crop_padding, p.random_flip)
    x = (x - tf.constant(p.mean, tf.float32)) / tf.constant(p.std, tf.float32)
    batch = {"image": x}
    if self.labels is not None:
      batch["label"] = tf.gather(self.labels, idx)
    return batch


def _augment(x, seed, padding, flip):
  """Per-image random crop after zero padding, and random horizontal flip."""
  batch, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
  seeds = tf.random.experimental.stateless_split(seed, 2)
  if padding:
    x = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform([batch, 2], seeds[0], 0, 2 * padding + 1, tf.int32)
    rows = offsets[:, :1] + tf.range(height)[None]
    cols = offsets[:, 1:] + tf.range(width)[None]
    x = tf.gather(tf.gather(x, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
  if flip:
    flips = tf.random.stateless_uniform([batch], seeds[1]) < 0.5
    x = tf.where(flips[:, None, None, None], tf.reverse(x, axis=[2]), x)
  return x


def _steps(start_step, num_steps):
  return np.arange(start_step, num_steps, dtype=np.int64)


def _local(rows):
  """This process's columns of a global batch matrix (multi-host data loading)."""
  per_process = rows.shape[1] // jax.process_count()
  start = jax.process_index() * per_process
  return rows[:, start:start + per_process]
