"""The raw MNIST and Fashion-MNIST files that the real-data tests read, and their idx format."""

import gzip
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get("MIXUNLEARN_MNIST_DIR",
                           os.path.join(REPO, "..", "shared", "datasets", "mnist"))
FASHION_MNIST_DIR = os.path.join(os.path.dirname(MNIST_DIR), "fashion_mnist")
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def require_raw_files(folder):
  """Real-data tests need the raw files: CI has them (missing is a failure there); a clone
  without ../shared skips these tests, saying which variable to set."""
  missing = [f for f in MNIST_FILES if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    message = (f"Raw files {missing} are missing from {folder!r}. Put the four .gz files "
               "there or point MIXUNLEARN_MNIST_DIR at the MNIST folder beside a "
               "fashion_mnist one.")
    if os.environ.get("CI") == "true":
      pytest.fail(message)
    pytest.skip(message)


def read_idx(folder, name):
  """A raw idx file as a uint8 array of its shape (header: magic, then one int32 per dim)."""
  with gzip.open(os.path.join(folder, name)) as f:
    raw = f.read()
  ndim = raw[3]
  shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)
