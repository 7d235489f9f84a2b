"""tf.data input pipelines: supervised, paired forget/remain, and evaluation.

Every batch is a pure function of (seed, step): the sample order comes from
per-pass permutations seeded by (seed, stream, pass) and augmentation from
stateless TF ops seeded by (seed, stream, step). A resumed run therefore sees
exactly the batches an uninterrupted run would, starting at any step.
"""

import dataclasses
import math
from typing import Mapping
import zlib

import jax
import numpy as np
import tensorflow as tf

# Streams keep the randomness of different pipelines independent.
TRAIN_STREAM, FORGET_STREAM, REMAIN_STREAM, MIXED_STREAM, ALL_STREAM = 1, 2, 3, 4, 5
NO_LABEL = -1  # the label a batch carries for a sample whose label is hidden (semi setup)


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


SOURCES = ("forget", "remain", "mixed", "all")
# Each source's randomness stream; the forget and remain sides keep the
# streams of the paired pipeline they replace, so runs since then are unchanged.
_SOURCE_STREAM = {"forget": FORGET_STREAM, "remain": REMAIN_STREAM, "mixed": MIXED_STREAM,
                  "all": ALL_STREAM}


def source_stream(source):
  """A source's randomness stream; a named set's comes from its name alone (crc32), so
  adding a set changes no other source's batches."""
  return _SOURCE_STREAM.get(source) or 16 + zlib.crc32(source.encode())


@dataclasses.dataclass(frozen=True)
class Side:
  """One side of a stream: which samples, how many per step, what a batch carries.

  A batch of the side is {'image'} plus 'label' with `labels`, 'index' (the
  sample's index into the training set) with `index`, 'tag' (1 for a D_f
  sample, 0 for D_r) for 'mixed', 'all' and named-set sources, and 'mask'
  with `one_pass`.

  Attributes:
    source: 'forget' (D_f), 'remain' (D_r), 'mixed' (all of D_f plus a
      fresh `remain_share` of D_r on every pass, shuffled together), 'all'
      (D, e.g. for an auxiliary model of all the training data), or the
      name of one of the phase's `sets` (training-set indices a method
      defines, e.g. SISA's shards).
    batch_size: global batch size of the side.
    labels: whether batches carry training labels; the method's `labels`
      must allow it.
    index: whether batches carry the samples' dataset indices.
    augment: whether the training augmentation applies.
    one_pass: every pass over the source is its own batches, the last one
      padded and masked (mask 0), so each sample counts exactly once per
      pass; otherwise a pass's last partial batch is filled from the next.
    remain_share: the share of D_r in each pass of a 'mixed' source.
  """
  source: str
  batch_size: int
  labels: bool = False
  index: bool = False
  augment: bool = True
  one_pass: bool = False
  remain_share: float = 1.0

  def __post_init__(self):
    if not isinstance(self.source, str) or not self.source:
      raise ValueError(f"Side source {self.source!r}; use one of {SOURCES} or a set's name.")
    if self.batch_size < 1:
      raise ValueError(f"Side batch_size must be positive, got {self.batch_size}.")
    if not 0.0 < self.remain_share <= 1.0:
      raise ValueError(f"remain_share must lie in (0, 1], got {self.remain_share}.")


Stream = Mapping[str, Side]  # batch key -> side, e.g. {'forget': ..., 'remain': ...}


def paired_stream(batch_size, labels):
  """MixUnlearn's stream: B forget and B remain samples per step."""
  return {"forget": Side("forget", batch_size, labels=labels),
          "remain": Side("remain", batch_size, labels=labels)}


def steps_per_pass(side, num_forget, num_remain):
  """Steps of one pass over a side's source (the usual epoch of a method)."""
  return steps_per_epoch(_pass_length(side, num_forget, num_remain), side.batch_size)


def _pass_length(side, num_forget, num_remain):
  return {"forget": num_forget, "remain": num_remain, "all": num_forget + num_remain,
          "mixed": num_forget + int(round(side.remain_share * num_remain))}[side.source]


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
  order = lambda p: indices[_rng(seed, stream, p).permutation(len(indices))]  # noqa: E731
  return _rows(order, len(indices), batch_size, start_step, num_steps, one_pass=False)[0]


def side_rows(side, forget, remain, *, seed, start_step, num_steps, sets=None):
  """(rows, mask) of `side` for steps [start_step, num_steps): dataset indices per batch.

  `mask` is 0 on the padding of a one-pass side's last batch, else 1. `sets`
  ({name: training-set indices}) holds the named sets a side may read.
  """
  sets = sets or {}
  if side.source not in SOURCES and side.source not in sets:
    raise ValueError(f"Side source {side.source!r} is neither one of {SOURCES} nor a set of "
                     f"the phase ({', '.join(sets) or 'none'}).")
  stream = source_stream(side.source)
  if side.source != "mixed":
    indices = np.asarray(sets[side.source]) if side.source in sets else {
        "forget": forget, "remain": remain, "all": np.union1d(forget, remain)}[side.source]
    if not len(indices):
      raise ValueError(f"Cannot build a batch stream over an empty {side.source} set.")
    order = lambda p: indices[_rng(seed, stream, p).permutation(len(indices))]  # noqa: E731
  else:
    share = int(round(side.remain_share * len(remain)))

    def order(p):  # all of D_f and a fresh share of D_r, shuffled together
      rng = _rng(seed, stream, p)
      pool = np.concatenate([forget, rng.choice(remain, size=share, replace=False)])
      return pool[rng.permutation(len(pool))]

  length = len(indices) if side.source in sets else _pass_length(side, len(forget), len(remain))
  return _rows(order, length, side.batch_size, start_step, num_steps, side.one_pass)


def _rng(seed, stream, p):
  return np.random.default_rng([seed, stream, int(p)])


def _rows(order, length, batch_size, start_step, num_steps, one_pass):
  """Gathers batches from the passes `order(p)` (each `length` long) of an endless stream."""
  steps = np.arange(start_step, num_steps, dtype=np.int64)
  within = np.arange(batch_size, dtype=np.int64)
  if one_pass:  # each pass is its own batches; the last is padded with the pass's first sample
    per_pass = steps_per_epoch(length, batch_size)
    passes = np.repeat(steps // per_pass, batch_size)
    offsets = ((steps % per_pass)[:, None] * batch_size + within).reshape(-1)
  else:
    positions = (steps[:, None] * batch_size + within).reshape(-1)
    passes, offsets = positions // length, positions % length
  valid = offsets < length
  rows = np.empty(len(offsets), np.int64)
  for p in np.unique(passes):
    selected = passes == p
    rows[selected] = order(p)[np.where(valid[selected], offsets[selected], 0)]
  return rows.reshape(-1, batch_size), valid.astype(np.float32).reshape(-1, batch_size)


def train_pipeline(images, labels, indices, *, batch_size, num_steps, seed, preprocess,
                   start_step=0, labelled=None):
  """Yields {'image', 'label'} numpy batches for supervised steps start_step..

  `labelled`, a boolean mask over the training set (the semi setup's), adds
  each sample's flag as 'labelled' and puts NO_LABEL in place of a hidden
  label, so that no hidden label reaches a step.
  """
  rows = stream_rows(indices, batch_size, seed=seed, stream=TRAIN_STREAM,
                     start_step=start_step, num_steps=num_steps)
  if labelled is not None:
    labelled = np.asarray(labelled, bool)
    labels = np.where(labelled, labels, NO_LABEL)
    flags = tf.constant(labelled)
  batcher = _Batcher(images, labels, preprocess, seed)

  def make(idx, step):
    batch = batcher(idx, step, TRAIN_STREAM, augment=True)
    if labelled is not None:
      batch["labelled"] = tf.gather(flags, idx)
    return batch

  ds = tf.data.Dataset.from_tensor_slices((_local(rows), _steps(start_step, num_steps)))
  ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE)
  return _numpy_batches(ds)


def stream_pipeline(images, labels, forget, remain, stream: Stream, *, num_steps, seed,
                    preprocess, start_step=0, sets=None):
  """Yields {key: batch} for each side of `stream`, steps start_step..num_steps-1.

  A side's batch is {'image'} and, as the side asks, 'label', 'index', 'tag'
  (1 for D_f samples; 'mixed', 'all' and named-set sources) and 'mask'
  (one-pass sides). No other label enters the batch, so a method cannot read
  a label its stream does not ask for. `sets` are the named sets of the
  phase (see `side_rows`).
  """
  forget, remain = np.asarray(forget), np.asarray(remain)
  columns = {}
  for key, side in stream.items():
    rows, mask = side_rows(side, forget, remain, seed=seed, start_step=start_step,
                           num_steps=num_steps, sets=sets)
    columns[key] = {"rows": _local(rows), "mask": _local(mask),
                    "tag": _local(np.isin(rows, forget).astype(np.int32))}
  batcher = _Batcher(images, labels, preprocess, seed)

  def make(columns, step):
    batches = {}
    for key, side in stream.items():
      c = columns[key]
      batch = batcher(c["rows"], step, source_stream(side.source), augment=side.augment,
                      with_labels=side.labels)
      if side.index:
        batch["index"] = tf.cast(c["rows"], tf.int32)
      if side.source not in ("forget", "remain"):
        batch["tag"] = c["tag"]
      if side.one_pass:
        batch["mask"] = c["mask"]
      batches[key] = batch
    return batches

  ds = tf.data.Dataset.from_tensor_slices((columns, _steps(start_step, num_steps)))
  ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE)
  return _numpy_batches(ds)


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
  return _numpy_batches(ds)


def _numpy_batches(ds):
  """`ds` prefetched, as numpy, without tf.data's autotuning thread.

  That thread sleeps up to a minute between its runs, and deleting an
  iterator waits for it to wake (TF 2.21): 30-60 s at the end of every long
  stage. Without it, AUTOTUNE parallelism is the cores this process may use.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


class _Batcher:
  """Gathers, augments and normalises one batch of indices inside tf.data."""

  def __init__(self, images, labels, preprocess, seed):
    self.images = tf.constant(images)
    # uint8 pixels (the datasets), or float pixels in [0, 1] (arrays given to the library API).
    self.scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
    self.labels = tf.constant(np.asarray(labels, np.int32))
    self.preprocess = preprocess
    self.seed = seed

  def __call__(self, idx, step, stream, *, augment, with_labels=True):
    p = self.preprocess
    x = tf.cast(tf.gather(self.images, idx), tf.float32) * self.scale
    if augment and (p.crop_padding or p.random_flip):
      seed = tf.stack([tf.constant(self.seed, tf.int64) * 16 + stream, tf.cast(step, tf.int64)])
      x = _augment(x, seed, p.crop_padding, p.random_flip)
    x = (x - tf.constant(p.mean, tf.float32)) / tf.constant(p.std, tf.float32)
    batch = {"image": x}
    if with_labels:
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
