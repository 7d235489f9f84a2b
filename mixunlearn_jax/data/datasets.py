"""Datasets by config name, loaded once into host memory as uint8 arrays.

The paper's datasets are small (at most 60k images), so each split is decoded
once and the input pipelines gather from memory: splits are index sets, and a
batch is a function of (seed, step), which makes resume exact.
"""

import contextlib
import dataclasses
import fcntl
import gzip
import os
import socket
import urllib.parse

from absl import logging
import numpy as np
from sklearn import datasets as sk_datasets
import tensorflow as tf
import tensorflow_datasets as tfds

# TensorFlow only feeds data: keep it off the accelerators JAX uses.
tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification dataset held in memory (images uint8 [N,H,W,C], or float in [0, 1])."""
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]  # per-channel, on the [0, 1] scale
  std: tuple[float, ...]

  @property
  def image_shape(self):
    return self.train_images.shape[1:]


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
  builder: str
  train_split: str
  test_split: str
  mean: tuple[float, ...]
  std: tuple[float, ...]


_TFDS = {
    "mnist": _TfdsSource("mnist", "train", "test", (0.1307,), (0.3081,)),
    "fashion_mnist": _TfdsSource("fashion_mnist", "train", "test", (0.2860,), (0.3530,)),
    "cifar10": _TfdsSource("cifar10", "train", "test",
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn_cropped": _TfdsSource("svhn_cropped", "train", "test",
                                (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    # Appendix A.11: the ImageNet-1k validation set, split 40,000 / 10,000. Pixels go to
    # [-1, 1], the input the public ViT checkpoints (in21k included) were trained on.
    "imagenet_val": _TfdsSource("imagenet2012", "validation[:40000]", "validation[40000:]",
                                (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
DIGITS_TEST_SIZE = 360
# The raw test images (idx format) of the datasets whose raw order can be restored.
_RAW_TEST_IMAGES = {"mnist": "t10k-images-idx3-ubyte.gz",
                    "fashion_mnist": "t10k-images-idx3-ubyte.gz"}


def names():
  return sorted([*_TFDS, "digits"])


def load(name, *, data_dir=None, manual_dir=None, image_size=None, download=True):
  """Loads dataset `name` into memory, preparing it with tfds if needed.

  Args:
    name: one of `names()`.
    data_dir: tfds data dir (None: tfds' default).
    manual_dir: a folder holding the dataset's raw files, for offline
      preparation (e.g. the four MNIST .gz files).
    image_size: resize side for datasets with images of varying size
      (imagenet_val); ignored otherwise.
    download: whether tfds may download missing raw files.
  """
  if name == "digits":
    return _load_digits()
  if name not in _TFDS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(names())}.")
  source = _TFDS[name]
  builder = _prepared_builder(source.builder, data_dir=data_dir, manual_dir=manual_dir,
                              download=download)
  train = _read_split(builder, source.train_split, image_size)
  test = _read_split(builder, source.test_split, image_size)
  return Dataset(name, *train, *test,
                 num_classes=builder.info.features["label"].num_classes,
                 mean=source.mean, std=source.std)


def _prepared_builder(name, *, data_dir, manual_dir, download):
  """The tfds builder of `name`, prepared once even when processes load it at once.

  Two launchers (or test workers) starting on a fresh data dir would both
  prepare, and the second rename of tfds' incomplete folder fails; a lock file
  beside the dataset lets one prepare while the other waits, then reads.
  """
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  with _locked(os.path.join(builder.data_dir_root, f".{name}.lock")):
    builder = tfds.builder(name, data_dir=data_dir)  # another process may have prepared it
    if not builder.is_prepared():
      prepare(builder, manual_dir=manual_dir, download=download)
  return builder


@contextlib.contextmanager
def _locked(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or the process dies
    yield


def prepare(builder, *, manual_dir, download):
  """Prepares a tfds builder from raw files in `manual_dir`, or downloads them.

  Raises a ValueError that lists the raw files needed, instead of letting
  tfds retry a download on a machine without network.
  """
  needed = sorted(info.filename for info in builder.url_infos.values()) if builder.url_infos else []
  missing = [f for f in needed if not (manual_dir and os.path.exists(os.path.join(manual_dir, f)))]
  if missing and not (download and _reachable(builder.url_infos)):
    where = manual_dir or "<a folder of your choice>"
    raise ValueError(
        f"Dataset {builder.name!r} is not prepared in {builder.data_dir!r} and cannot be "
        f"downloaded from here. Put its raw files {', '.join(needed) or '(see tfds docs)'} "
        f"into {where} and pass --config.data.manual_dir={where} (missing: "
        f"{', '.join(missing) or 'none'}); the files are checked against tfds' sha256 sums.")
  logging.info("Preparing %s in %s (manual dir %s).", builder.name, builder.data_dir, manual_dir)
  # tfds extracts raw files to <download_dir>/extracted/GZIP.<file name>, and
  # MNIST and Fashion-MNIST share file names: with one shared download dir,
  # the second dataset would be built from the first one's extracted files.
  builder.download_and_prepare(
      download_dir=os.path.join(builder.data_dir_root, "downloads", builder.name),
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                   try_download_gcs=False))


def _reachable(url_infos, timeout=3.0):
  """True if the first download host accepts a TCP connection within `timeout`."""
  if not url_infos:
    return True
  url = urllib.parse.urlparse(next(iter(url_infos)))
  try:
    socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def _read_split(builder, split, image_size):
  ds = builder.as_dataset(split=split)
  if image_size:
    resize = lambda ex: {"image": tf.cast(tf.image.resize(  # noqa: E731
        ex["image"], (image_size, image_size), antialias=True), tf.uint8), "label": ex["label"]}
    ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
  # batch_size=-1 is not supported under tfds' mock data, so read in chunks.
  images, labels = [], []
  for ex in tfds.as_numpy(ds.batch(4096)):
    images.append(ex["image"])
    labels.append(ex["label"])
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def raw_test_order(dataset, manual_dir):
  """Indices into `dataset.test_images` in the raw files' order: raw image i is order[i].

  tfds shuffles a split when it prepares it, while LAF's attack protocol
  takes the first test images of the raw files (spec §6), so the order is
  restored by matching the raw images (an exact duplicate takes the first
  free match: the same pixels, the same outputs). digits: its test set's own
  order, drawn once (_load_digits).
  """
  if dataset.name == "digits":
    return np.arange(len(dataset.test_labels))
  if dataset.name not in _RAW_TEST_IMAGES:
    raise ValueError(f"The raw test order of {dataset.name!r} is unknown (known: digits, "
                     f"{', '.join(sorted(_RAW_TEST_IMAGES))}).")
  path = os.path.join(manual_dir or "", _RAW_TEST_IMAGES[dataset.name])
  if not manual_dir or not os.path.exists(path):
    raise ValueError(f"The raw test order of {dataset.name!r} is read from its raw file "
                     f"{_RAW_TEST_IMAGES[dataset.name]}: pass the folder that holds it as "
                     f"--config.data.manual_dir (given: {manual_dir!r}).")
  with gzip.open(path, "rb") as f:
    raw = f.read()
  count = int.from_bytes(raw[4:8], "big")
  raw = np.frombuffer(raw, np.uint8, offset=16).reshape(count, -1)
  ours = {}
  for index, image in enumerate(dataset.test_images.reshape(len(dataset.test_images), -1)):
    ours.setdefault(image.tobytes(), []).append(index)
  order = []
  for position, image in enumerate(raw):
    matches = ours.get(image.tobytes())
    if not matches:
      raise ValueError(f"Raw test image {position} of {path} is not in the prepared test set: "
                       f"the raw files are not the ones {dataset.name!r} was prepared from.")
    order.append(matches.pop(0))
  return np.array(order)


def _load_digits():
  """scikit-learn's bundled 8x8 digits (1,797 images), split with a fixed seed."""
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))
  test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
  scaled = images[train] / 255.0
  return Dataset("digits", images[train], labels[train], images[test], labels[test],
                 num_classes=10, mean=(float(scaled.mean()),), std=(float(scaled.std()),))
