"""Datasets, unlearning splits and input pipelines (mock tfds data and real MNIST)."""

import os
import threading
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mixunlearn_jax.data import datasets
from mixunlearn_jax.data import pipeline
from mixunlearn_jax.data import splits
from mixunlearn_jax.engine import parallel
from tests import real_data

# Training-set class counts of MNIST (a known property of the dataset).
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MOCK_SHAPES = {"cifar10": (32, 32, 3), "svhn_cropped": (32, 32, 3), "mnist": (28, 28, 1)}
MOCK_EXAMPLES = 100


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
  """The three datasets loaded under tfds' mock data (the patches end before return)."""
  loaded = {}
  with pytest.MonkeyPatch.context() as mp:
    # Under mock data the builder never counts as prepared; the mock supplies examples.
    mp.setattr(datasets, "prepare", lambda *args, **kwargs: None)
    for name in MOCK_SHAPES:
      data_dir = str(tmp_path_factory.mktemp(f"mock_{name}"))
      with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES, data_dir=data_dir):
        loaded[name] = datasets.load(name, data_dir=data_dir)
  return loaded


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def mnist(tfds_dir):
  """Real MNIST, prepared offline from the raw .gz files (about 20 s)."""
  real_data.require_raw_files(real_data.MNIST_DIR)
  return datasets.load("mnist", data_dir=tfds_dir, manual_dir=real_data.MNIST_DIR, download=False)


# ----------------------------------------------------------------------------- helpers


def _plain(ds):
  return pipeline.Preprocess(mean=ds.mean, std=ds.std)


def _normalise(raw_uint8, mean, std):
  """Independent reference: (x/255 - mean) / std in float64."""
  return (raw_uint8.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)


def _paired(ds, split, *, labels=None, with_labels=True, batch_size, **kwargs):
  labels = ds.train_labels if labels is None else labels
  stream = pipeline.paired_stream(batch_size, labels=with_labels)
  return list(pipeline.stream_pipeline(ds.train_images, labels, split.forget, split.remain,
                                       stream, **kwargs))


def _index_split(n, forget):
  forget = np.asarray(sorted(forget), np.int64)
  return splits.Split(forget, np.setdiff1d(np.arange(n), forget), np.zeros(n, np.int32))


def _crop_candidates(raw, padding, mean, std):
  """All (2p+1)^2 crops of the zero-padded image, unflipped and flipped, normalised."""
  h, w = raw.shape[:2]
  padded = np.pad(raw.astype(np.float64) / 255.0, [(padding, padding), (padding, padding), (0, 0)])
  crops = np.stack([padded[i:i + h, j:j + w] for i in range(2 * padding + 1)
                    for j in range(2 * padding + 1)])
  crops = np.concatenate([crops, crops[:, :, ::-1]])
  return (crops - np.asarray(mean)) / np.asarray(std)


# ----------------------------------------------------------------------------- 1. mock data


@pytest.mark.parametrize("name", sorted(MOCK_SHAPES))
def test_mock_load_dtypes_and_shapes(mock, name):
  ds = mock[name]
  assert ds.name == name
  assert ds.train_images.dtype == np.uint8 and ds.test_images.dtype == np.uint8
  assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
  assert ds.train_images.shape == (MOCK_EXAMPLES, *MOCK_SHAPES[name])
  assert ds.test_images.shape == (MOCK_EXAMPLES, *MOCK_SHAPES[name])
  assert ds.image_shape == MOCK_SHAPES[name]
  assert ds.train_labels.shape == (MOCK_EXAMPLES,) and ds.test_labels.shape == (MOCK_EXAMPLES,)
  assert ds.num_classes == 10
  assert ds.train_labels.min() >= 0 and ds.train_labels.max() <= 9
  assert len(ds.mean) == len(ds.std) == MOCK_SHAPES[name][-1]


@pytest.mark.parametrize("name", sorted(MOCK_SHAPES))
def test_train_pipeline_normalises_the_right_rows(mock, name):
  ds = mock[name]
  indices = np.arange(3, MOCK_EXAMPLES, 2)
  batch_size, num_steps, seed = 16, 5, 7
  batches = list(pipeline.train_pipeline(ds.train_images, ds.train_labels, indices,
                                         batch_size=batch_size, num_steps=num_steps, seed=seed,
                                         preprocess=_plain(ds)))
  rows = pipeline.stream_rows(indices, batch_size, seed=seed, stream=pipeline.TRAIN_STREAM,
                              start_step=0, num_steps=num_steps)
  assert len(batches) == num_steps == len(rows)
  for batch, idx in zip(batches, rows):
    assert set(batch) == {"image", "label"}
    assert batch["image"].dtype == np.float32
    assert batch["image"].shape == (batch_size, *MOCK_SHAPES[name])
    assert set(idx) <= set(indices)
    np.testing.assert_allclose(batch["image"], _normalise(ds.train_images[idx], ds.mean, ds.std),
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(batch["label"], ds.train_labels[idx])


@pytest.mark.parametrize("name,setup", [("cifar10", "data"), ("svhn_cropped", "class"),
                                        ("mnist", "data")])
def test_paired_pipeline_sides_hold_their_sets(mock, name, setup):
  ds = mock[name]
  split = splits.make_split(setup, ds.train_labels, num_classes=10, seed=3)
  assert len(split.forget) and len(split.remain)
  assert not set(split.forget) & set(split.remain)
  batch_size, num_steps, seed = 8, 7, 11
  # Labels = row number, so each batch says which rows it gathered.
  batches = _paired(ds, split, labels=np.arange(MOCK_EXAMPLES), batch_size=batch_size,
                    num_steps=num_steps, seed=seed, preprocess=_plain(ds))
  assert len(batches) == num_steps
  forget_set, remain_set = set(split.forget.tolist()), set(split.remain.tolist())
  for side, indices, stream, allowed in [
      ("forget", split.forget, pipeline.FORGET_STREAM, forget_set),
      ("remain", split.remain, pipeline.REMAIN_STREAM, remain_set)]:
    rows = pipeline.stream_rows(indices, batch_size, seed=seed, stream=stream, start_step=0,
                                num_steps=num_steps)
    assert set(rows.ravel().tolist()) <= allowed
    for batch, idx in zip(batches, rows):
      got = batch[side]
      assert got["image"].dtype == np.float32
      assert got["image"].shape == (batch_size, *MOCK_SHAPES[name])
      np.testing.assert_array_equal(got["label"], idx)
      assert set(got["label"].tolist()) <= allowed
      np.testing.assert_allclose(got["image"], _normalise(ds.train_images[idx], ds.mean, ds.std),
                                 rtol=0, atol=1e-5)


def test_paired_pipeline_every_forget_sample_once_per_epoch(mock):
  ds = mock["cifar10"]
  split = splits.make_split("data", ds.train_labels, num_classes=10, seed=0)
  n_f, batch_size = len(split.forget), 8
  assert n_f % batch_size, "pick sizes where epochs straddle batches"
  epochs = 3
  num_steps = -(-epochs * n_f // batch_size) + 1
  batches = _paired(ds, split, labels=np.arange(MOCK_EXAMPLES), batch_size=batch_size,
                    num_steps=num_steps, seed=5, preprocess=_plain(ds))
  seen_forget = np.concatenate([b["forget"]["label"] for b in batches])
  seen_remain = np.concatenate([b["remain"]["label"] for b in batches])
  rows = pipeline.stream_rows(split.forget, batch_size, seed=5, stream=pipeline.FORGET_STREAM,
                              start_step=0, num_steps=num_steps).ravel()
  np.testing.assert_array_equal(seen_forget, rows)
  windows = [seen_forget[e * n_f:(e + 1) * n_f] for e in range(epochs)]
  for window in windows:
    np.testing.assert_array_equal(np.sort(window), split.forget)
  # Each pass is reshuffled, not a repeat of the previous one.
  assert any(not np.array_equal(windows[0], w) for w in windows[1:])
  # The remain side: every full window of |D_r| positions is a permutation of D_r.
  n_r = len(split.remain)
  for e in range(len(seen_remain) // n_r):
    np.testing.assert_array_equal(np.sort(seen_remain[e * n_r:(e + 1) * n_r]), split.remain)


def test_paired_pipeline_labels_switch(mock):
  ds = mock["mnist"]
  split = splits.make_split("class", ds.train_labels, num_classes=10, seed=0, forget_class=3)
  kwargs = dict(batch_size=4, num_steps=3, seed=2, preprocess=_plain(ds))
  for batch in _paired(ds, split, with_labels=False, **kwargs):
    assert set(batch) == {"forget", "remain"}
    assert set(batch["forget"]) == {"image"} and set(batch["remain"]) == {"image"}
  for step, batch in enumerate(_paired(ds, split, with_labels=True, **kwargs)):
    for side, indices, stream in [("forget", split.forget, pipeline.FORGET_STREAM),
                                  ("remain", split.remain, pipeline.REMAIN_STREAM)]:
      idx = pipeline.stream_rows(indices, 4, seed=2, stream=stream, start_step=step,
                                 num_steps=step + 1)[0]
      assert batch[side]["label"].dtype == np.int32
      np.testing.assert_array_equal(batch[side]["label"], ds.train_labels[idx])
    assert (batch["forget"]["label"] == 3).all()
    assert (batch["remain"]["label"] != 3).all()


def test_augmentation_is_a_padded_crop_and_flip(mock):
  ds = mock["cifar10"]
  assert ds.train_images.std() > 10, "mock images must vary for this check to mean anything"
  aug = pipeline.Preprocess(mean=ds.mean, std=ds.std, crop_padding=4, random_flip=True)
  indices = np.arange(MOCK_EXAMPLES)
  batch_size, num_steps, seed = 50, 4, 4
  batches = list(pipeline.train_pipeline(ds.train_images, ds.train_labels, indices,
                                         batch_size=batch_size, num_steps=num_steps, seed=seed,
                                         preprocess=aug))
  rows = pipeline.stream_rows(indices, batch_size, seed=seed, stream=pipeline.TRAIN_STREAM,
                              start_step=0, num_steps=num_steps)
  candidates = {i: _crop_candidates(ds.train_images[i], 4, ds.mean, ds.std).reshape(162, -1)
                for i in indices}
  found = []  # (row offset, column offset, flipped) of each output image
  for batch, idx in zip(batches, rows):
    assert batch["image"].shape == (batch_size, 32, 32, 3)
    assert batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["label"], ds.train_labels[idx])
    for image, i in zip(batch["image"], idx):
      err = np.abs(candidates[i] - image.reshape(1, -1)).max(axis=1)
      assert err.min() < 1e-5, f"sample {i}: no crop/flip of the padded original matches"
      m = int(err.argmin())
      found.append((m % 81 // 9, m % 9, m >= 81))
  # 200 draws: every offset 0..8 on each axis, both flip states, independent axes.
  assert {r for r, _, _ in found} == set(range(9))
  assert {c for _, c, _ in found} == set(range(9))
  assert {f for _, _, f in found} == {False, True}
  assert sum(r != c for r, c, _ in found) > len(found) // 2
  assert sum(f for _, _, f in found) > len(found) // 4


def test_augmentation_deterministic_per_seed_and_step(mock):
  ds = mock["cifar10"]
  aug = pipeline.Preprocess(mean=ds.mean, std=ds.std, crop_padding=4, random_flip=True)
  # A single sample: every row of every step is the same image, so only augmentation differs.
  one = np.array([17])

  def run(seed):
    return [b["image"] for b in pipeline.train_pipeline(
        ds.train_images, ds.train_labels, one, batch_size=8, num_steps=3, seed=seed,
        preprocess=aug)]

  first, again, other_seed = run(1), run(1), run(2)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert first[0].shape == (8, 32, 32, 3)
  assert not np.array_equal(first[0], first[1])
  assert not np.array_equal(first[1], first[2])
  assert not all(np.array_equal(first[0][0], x) for x in first[0][1:]), "per-image randomness"
  assert not np.array_equal(first[0], other_seed[0])

  # The paired pipeline augments too, and is likewise reproducible.
  split = _index_split(MOCK_EXAMPLES, [17])
  p1 = _paired(ds, split, batch_size=8, num_steps=2, seed=1, preprocess=aug)
  p2 = _paired(ds, split, batch_size=8, num_steps=2, seed=1, preprocess=aug)
  for a, b in zip(p1, p2):
    np.testing.assert_array_equal(a["forget"]["image"], b["forget"]["image"])
    np.testing.assert_array_equal(a["remain"]["image"], b["remain"]["image"])
  assert not np.array_equal(p1[0]["forget"]["image"], p1[1]["forget"]["image"])
  plain = _normalise(ds.train_images[17], ds.mean, ds.std)
  assert not all(np.allclose(x, plain, atol=1e-5) for x in p1[0]["forget"]["image"])


# ----------------------------------------------------------------------------- 2. real MNIST


def test_mnist_sizes_and_statistics(mnist):
  assert mnist.train_images.shape == (60000, 28, 28, 1)
  assert mnist.test_images.shape == (10000, 28, 28, 1)
  assert mnist.train_images.dtype == np.uint8 and mnist.train_labels.dtype == np.int32
  assert mnist.test_labels.shape == (10000,)
  np.testing.assert_array_equal(np.bincount(mnist.train_labels, minlength=10), MNIST_TRAIN_COUNTS)
  # The normalisation constants are the training set's own statistics.
  scaled = mnist.train_images / 255.0
  assert abs(scaled.mean() - mnist.mean[0]) < 1e-3
  assert abs(scaled.std() - mnist.std[0]) < 1e-3


def test_fashion_mnist_prepared_beside_mnist_is_fashion_mnist(mnist, tfds_dir):
  # Same raw file names as MNIST, same tfds data dir: it must not reuse MNIST's files.
  real_data.require_raw_files(real_data.FASHION_MNIST_DIR)
  fashion = datasets.load("fashion_mnist", data_dir=tfds_dir,
                          manual_dir=real_data.FASHION_MNIST_DIR,
                          download=False)
  raw = real_data.read_idx(real_data.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")
  assert fashion.train_images.mean() == pytest.approx(raw.mean())
  assert fashion.train_images.mean() != pytest.approx(mnist.train_images.mean())
  # A known property of Fashion-MNIST: exactly 6,000 training images per class.
  np.testing.assert_array_equal(np.bincount(fashion.train_labels), [6000] * 10)


def test_mnist_class_split(mnist):
  split = splits.make_split("class", mnist.train_labels, num_classes=10, seed=0)
  assert len(split.forget) == 5923
  assert len(split.remain) == 54077
  assert (mnist.train_labels[split.forget] == 0).all()
  assert (mnist.train_labels[split.remain] != 0).all()
  np.testing.assert_array_equal(split.train_labels, mnist.train_labels)


def test_mnist_data_split(mnist):
  labels = mnist.train_labels
  split = splits.make_split("data", labels, num_classes=10, seed=0)
  counts = np.bincount(labels, minlength=10)
  expected = int(sum(np.round(0.4 * counts[c]) for c in range(5, 10)))
  assert len(split.forget) == expected
  assert len(split.remain) == 60000 - expected
  assert np.isin(labels[split.forget], [5, 6, 7, 8, 9]).all()
  forget_counts = np.bincount(labels[split.forget], minlength=10)
  for c in range(5, 10):
    assert forget_counts[c] == np.round(0.4 * counts[c])
  np.testing.assert_array_equal(np.union1d(split.forget, split.remain), np.arange(60000))
  assert len(np.unique(split.forget)) == len(split.forget)


# ----------------------------------------------------------------------------- 6. noisy setup


def test_mnist_noisy_split(mnist):
  labels = mnist.train_labels
  split = splits.make_split("noisy", labels, num_classes=10, seed=0)
  f, r = split.forget, split.remain
  assert (split.train_labels[f] != labels[f]).all()
  np.testing.assert_array_equal(split.train_labels[r], labels[r])
  assert ((split.train_labels >= 0) & (split.train_labels < 10)).all()
  assert np.isin(labels[f], [0, 1, 2, 3, 4]).all()
  in_classes = np.isin(labels, [0, 1, 2, 3, 4]).sum()
  assert abs(len(f) / in_classes - 0.6) < 1e-3
  # Wrong labels are spread over all other classes, not a fixed shift.
  for c in range(5):
    new = split.train_labels[f][labels[f] == c]
    assert set(new.tolist()) == set(range(10)) - {c}
  # The dataset's own labels are untouched.
  assert split.train_labels is not labels and np.bincount(labels)[0] == 5923


# ----------------------------------------------------------------------------- 3. determinism


def test_split_determinism():
  labels = np.random.default_rng(0).integers(0, 10, size=2000).astype(np.int32)
  for setup in ("class", "data", "noisy", "semi"):
    a = splits.make_split(setup, labels, num_classes=10, seed=1)
    b = splits.make_split(setup, labels, num_classes=10, seed=1)
    np.testing.assert_array_equal(a.forget, b.forget)
    np.testing.assert_array_equal(a.remain, b.remain)
    np.testing.assert_array_equal(a.train_labels, b.train_labels)
  a = splits.make_split("data", labels, num_classes=10, seed=1)
  c = splits.make_split("data", labels, num_classes=10, seed=2)
  assert len(a.forget) == len(c.forget)
  assert not np.array_equal(a.forget, c.forget)


def test_split_save_load_roundtrip(tmp_path):
  labels = np.random.default_rng(1).integers(0, 10, size=500).astype(np.int32)
  for setup in ("noisy", "semi"):
    split = splits.make_split(setup, labels, num_classes=10, seed=4)
    path = str(tmp_path / f"{setup}.npz")
    split.save(path)
    back = splits.Split.load(path)
    np.testing.assert_array_equal(back.forget, split.forget)
    np.testing.assert_array_equal(back.remain, split.remain)
    np.testing.assert_array_equal(back.train_labels, split.train_labels)
    if split.labelled is None:
      assert back.labelled is None
    else:
      np.testing.assert_array_equal(back.labelled, split.labelled)


def test_paired_order_determinism(mock):
  ds = mock["svhn_cropped"]
  split = splits.make_split("data", ds.train_labels, num_classes=10, seed=0)
  ids = np.arange(MOCK_EXAMPLES)
  kwargs = dict(labels=ids, batch_size=4, num_steps=4, preprocess=_plain(ds))

  def order(seed):
    out = _paired(ds, split, seed=seed, **kwargs)
    return out, [(b["forget"]["label"].tolist(), b["remain"]["label"].tolist()) for b in out]

  (a, order_a), (b, order_b), (_, order_c) = order(9), order(9), order(10)
  assert order_a == order_b
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["forget"]["image"], y["forget"]["image"])
    np.testing.assert_array_equal(x["remain"]["image"], y["remain"]["image"])
  assert [f for f, _ in order_a] != [f for f, _ in order_c]
  assert [r for _, r in order_a] != [r for _, r in order_c]


def test_resume_from_start_step(mock):
  ds = mock["cifar10"]
  aug = pipeline.Preprocess(mean=ds.mean, std=ds.std, crop_padding=4, random_flip=True)
  split = splits.make_split("data", ds.train_labels, num_classes=10, seed=0)
  ids = np.arange(MOCK_EXAMPLES)
  num_steps, k = 9, 5  # k crosses a forget epoch boundary (|D_f| = 20, B = 6)
  full = _paired(ds, split, labels=ids, batch_size=6, num_steps=num_steps, seed=3,
                 preprocess=aug)
  resumed = _paired(ds, split, labels=ids, batch_size=6, num_steps=num_steps, seed=3,
                    preprocess=aug, start_step=k)
  assert len(full) == num_steps and len(resumed) == num_steps - k
  for x, y in zip(full[k:], resumed):
    for side in ("forget", "remain"):
      np.testing.assert_array_equal(x[side]["label"], y[side]["label"])
      np.testing.assert_array_equal(x[side]["image"], y[side]["image"])
  # Same for the supervised pipeline.
  full_t = list(pipeline.train_pipeline(ds.train_images, ids, ids, batch_size=32,
                                        num_steps=num_steps, seed=3, preprocess=aug))
  resumed_t = list(pipeline.train_pipeline(ds.train_images, ids, ids, batch_size=32,
                                           num_steps=num_steps, seed=3, preprocess=aug,
                                           start_step=k))
  assert len(resumed_t) == num_steps - k
  for x, y in zip(full_t[k:], resumed_t):
    np.testing.assert_array_equal(x["label"], y["label"])
    np.testing.assert_array_equal(x["image"], y["image"])


# ----------------------------------------------------------------------------- 4. evaluation


@pytest.mark.parametrize("batch_size", [5, 8, 37, 64])
def test_eval_pipeline_each_example_once(batch_size):
  n = 37
  images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None],
                           (n, 4, 4, 1)).copy()
  labels = np.arange(n, dtype=np.int32)
  batches = list(pipeline.eval_pipeline(images, labels, np.arange(n), batch_size=batch_size,
                                        preprocess=pipeline.Preprocess(mean=(0.0,), std=(1.0,))))
  assert len(batches) == -(-n // batch_size)
  seen = []
  for batch in batches:
    assert set(batch) == {"image", "label", "mask"}
    assert batch["image"].shape == (batch_size, 4, 4, 1)
    assert batch["mask"].shape == (batch_size,)
    assert set(np.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    keep = batch["mask"] == 1
    # Pixel values encode the index too: the image matches its label.
    np.testing.assert_allclose(batch["image"][:, 0, 0, 0] * 255.0, batch["label"] % 256,
                               atol=1e-3)
    seen.extend(batch["label"][keep].tolist())
  assert seen == list(range(n))  # each exactly once, in order
  assert sum(float(b["mask"].sum()) for b in batches) == n


# ----------------------------------------------------------------------------- 5. errors


def test_unknown_dataset_lists_known_ones():
  with pytest.raises(ValueError) as err:
    datasets.load("cifar11")
  msg = str(err.value)
  assert "cifar11" in msg
  for known in ("mnist", "fashion_mnist", "cifar10", "svhn_cropped", "digits"):
    assert known in msg


def test_split_argument_errors():
  labels = np.repeat(np.arange(10, dtype=np.int32), 5)
  with pytest.raises(ValueError, match=r"forget_class.*10.*out of range"):
    splits.make_split("class", labels, num_classes=10, seed=0, forget_class=10)
  for bad in (0, 0.0, 1.5):
    with pytest.raises(ValueError, match=r"forget_fraction.*\(0, 1\)"):
      splits.make_split("data", labels, num_classes=10, seed=0, forget_fraction=bad)
  absent = labels[labels != 4]
  with pytest.raises(ValueError, match="empty forget set"):
    splits.make_split("class", absent, num_classes=10, seed=0, forget_class=4)
  with pytest.raises(ValueError, match="Unknown setup"):
    splits.make_split("bogus", labels, num_classes=10, seed=0)


def test_check_batch_size_names_valid_sizes():
  assert jax.device_count() == 4
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError) as err:
    parallel.check_batch_size(30, mesh)
  msg = str(err.value)
  assert "30" in msg and "28" in msg and "32" in msg
  parallel.check_batch_size(32, mesh)  # a multiple of 4 passes


def test_processes_loading_at_once_prepare_once(tmp_path, monkeypatch):
  """Two loaders on a fresh data dir: one prepares, the other waits and reads.

  Threads stand in for processes: a flock belongs to an open file, so two opens exclude
  each other within one process too.
  """
  calls, inside = [], threading.Semaphore(1)

  def slow_prepare(builder, **kwargs):
    assert inside.acquire(blocking=False), "two preparations at once"
    calls.append(builder.name)
    time.sleep(0.5)  # the window in which the second loader would start its own
    os.makedirs(builder.data_path)
    builder.info.write_to_directory(builder.data_path)  # what `is_prepared` looks for
    inside.release()

  monkeypatch.setattr(datasets, "prepare", slow_prepare)
  errors = []

  def load():
    try:
      datasets._prepared_builder("mnist", data_dir=str(tmp_path), manual_dir=None, download=False)
    except Exception as e:  # noqa: BLE001 -- reported by the assertion below
      errors.append(e)

  loaders = [threading.Thread(target=load) for _ in range(2)]
  for t in loaders:
    t.start()
  for t in loaders:
    t.join()
  assert not errors
  assert calls == ["mnist"]


def test_load_without_raw_files_fails_fast(tmp_path):
  empty = tmp_path / "manual"
  empty.mkdir()
  start = time.monotonic()
  with pytest.raises(ValueError) as err:
    datasets.load("mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(empty),
                  download=False)
  assert time.monotonic() - start < 15
  msg = str(err.value)
  assert "train-images-idx3-ubyte.gz" in msg
  assert "manual_dir" in msg
  assert str(empty) in msg
