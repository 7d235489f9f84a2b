"""Evaluation: accuracies against NumPy, ASR on constructed cases, determinism, plots."""

import glob
import gzip
import json
import math
import os
import shutil

import jax
import matplotlib.image
import numpy as np
import pytest

from mixunlearn_jax import confidence
from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax import models
from mixunlearn_jax import runtime
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.evaluation import metrics
from sklearn import ensemble
from tests import tiny_config


def test_predict_probs_counts_every_example_once_and_matches_numpy():
  dataset = data.load("digits")
  model, mesh = models.create("cnn"), parallel.make_mesh()
  variables = supervised.init_variables(model, jax.random.key(3), (8, 8, 1))
  preprocess = data.Preprocess(dataset.mean, dataset.std)
  indices = np.arange(37)  # 4 full batches of 8 and a padded one
  predict = metrics.make_predict(metrics.classifier_probs(model), mesh)
  probs = metrics.predict_probs(predict, variables, dataset.test_images, dataset.test_labels,
                                indices, batch_size=8, preprocess=preprocess, mesh=mesh)
  x = (dataset.test_images[indices] / 255.0 - dataset.mean[0]) / dataset.std[0]
  logits, _ = model.apply(variables, x.astype(np.float32))
  logits = np.asarray(logits, np.float64)
  expected = np.exp(logits - logits.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
  labels = dataset.test_labels[indices]
  assert metrics.accuracy(probs, labels) == pytest.approx(
      100.0 * np.mean(expected.argmax(-1) == labels))


def test_accuracy_on_fixed_logits():
  probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
  assert metrics.accuracy(probs, np.array([1, 0, 0, 1])) == 50.0
  assert metrics.accuracy(probs, np.array([1, 0, 1, 0])) == 100.0


def sorted_rows(n, confident, rng):
  """Softmax-like rows: confident ones put ~all mass on one class."""
  top = rng.uniform(0.97, 1.0, n) if confident else rng.uniform(0.4, 0.8, n)
  rest = rng.dirichlet(np.ones(9), n) * (1 - top)[:, None]
  return np.concatenate([top[:, None], rest], axis=1)


def test_membership_attack_separates_members_from_nonmembers():
  rng = np.random.default_rng(0)
  # Training outputs are confident, test outputs are not; D_f = training rows 0..99.
  train_probs, test_probs = sorted_rows(600, True, rng), sorted_rows(400, False, rng)
  sets = metrics.AttackSets.make(np.arange(100), np.arange(100, 600), 400, seed=0)
  memorised = metrics.membership_attack(train_probs, test_probs, sets, seed=0)
  forgotten_train = train_probs.copy()
  forgotten_train[:100] = sorted_rows(100, False, rng)  # D_f now looks unseen
  forgotten = metrics.membership_attack(forgotten_train, test_probs, sets, seed=0)
  assert memorised["ASR"] > 90 and forgotten["ASR"] < 60
  # Only the D_f side changed, and ASR is the mean of the two sides.
  assert memorised["forget_as_member"] > 90 and forgotten["forget_as_member"] < 20
  assert forgotten["heldout_as_nonmember"] == memorised["heldout_as_nonmember"]
  for attack in (memorised, forgotten):
    assert attack["ASR"] == pytest.approx(
        (attack["forget_as_member"] + attack["heldout_as_nonmember"]) / 2)
  assert memorised == metrics.membership_attack(train_probs, test_probs, sets, seed=0)


def write_idx_images(path, images):
  """The idx format of MNIST's raw files: magic 2051, count, rows, cols, then the pixels."""
  header = b"".join(int(v).to_bytes(4, "big") for v in (2051, *images.shape[:3]))
  with gzip.open(path, "wb") as f:
    f.write(header + images.astype(np.uint8).tobytes())


def test_raw_test_order_restores_the_raw_files_order(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
  images[7] = images[3]  # an exact duplicate takes the first free match
  dataset = data.Dataset("mnist", images[:1], np.zeros(1, np.int32), images,
                         np.zeros(40, np.int32), 10, (0.5,), (0.5,))
  raw_order = rng.permutation(40)  # raw image i is our test image raw_order[i]
  write_idx_images(tmp_path / "t10k-images-idx3-ubyte.gz", images[raw_order])
  order = data.raw_test_order(dataset, str(tmp_path))
  np.testing.assert_array_equal(images[order], images[raw_order])
  assert sorted(order.tolist()) == list(range(40))
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: pass the folder"):
    data.raw_test_order(dataset, None)
  write_idx_images(tmp_path / "t10k-images-idx3-ubyte.gz", 255 - images)
  with pytest.raises(ValueError, match="not the ones 'mnist' was prepared from"):
    data.raw_test_order(dataset, str(tmp_path))


def test_laf_attack_sets_are_those_of_lafs_code():
  forget, remain = np.arange(6000), np.arange(6000, 56000)
  raw_order = np.random.default_rng(1).permutation(10000)
  sets = metrics.AttackSets.laf(forget, remain, raw_order, seed=0)
  fitted = 5024 + 5024  # both capped at 5,024; 1% (rounded up) left out of the fit
  assert len(sets.members) + len(sets.nonmembers) == fitted - math.ceil(0.01 * fitted)
  assert 4900 < len(sets.members) < 5024 and 4900 < len(sets.nonmembers) < 5024
  assert set(sets.members) <= set(remain.tolist())
  assert set(sets.nonmembers) <= set(raw_order[:5024].tolist())
  np.testing.assert_array_equal(sets.heldout, np.sort(raw_order[5024:]))
  np.testing.assert_array_equal(sets.forget, forget)  # all of D_f is scored
  assert sets.protocol == "laf"


def test_laf_attack_is_the_pooled_accuracy_of_xgboost_like_trees():
  rng = np.random.default_rng(2)
  train_probs, test_probs = sorted_rows(900, True, rng), sorted_rows(700, False, rng)
  train_probs[:100] = sorted_rows(100, False, rng)  # half of D_f looks unseen
  sets = metrics.AttackSets(members=np.arange(300, 800), nonmembers=np.arange(400),
                            heldout=np.arange(400, 700), forget=np.arange(200), protocol="laf")
  attack = metrics.membership_attack(train_probs, test_probs, sets, seed=0)
  features = lambda p: -np.sort(-p, axis=-1)  # noqa: E731
  trees = ensemble.HistGradientBoostingClassifier(
      max_iter=100, learning_rate=0.3, max_depth=6, max_leaf_nodes=None, l2_regularization=1.0,
      early_stopping=False, random_state=0).fit(
          features(np.concatenate([train_probs[300:800], test_probs[:400]])),
          np.r_[np.ones(500), np.zeros(400)])
  called_member = trees.predict(features(np.concatenate([train_probs[:200], test_probs[400:]])))
  correct = called_member == np.r_[np.ones(200), np.zeros(300)]
  assert attack["ASR"] == pytest.approx(100 * correct.mean())  # 500 scored: pooled, not 50/50
  assert attack["ASR"] != pytest.approx((attack["forget_as_member"]
                                         + attack["heldout_as_nonmember"]) / 2)


def test_unknown_or_repeated_attack_protocols_are_refused():
  config = tiny_config.get_config()
  for protocols in [(), ("spec", "spec"), ("lira",)]:
    config.asr.protocols = protocols
    with pytest.raises(ValueError, match="asr.protocols"):
      experiment.validate(config)


@pytest.fixture(scope="module")
def memorisation_run(tmp_path_factory):
  """Data setup on digits: f_D memorises D_f (many epochs), Retrain never sees it."""
  config = tiny_config.get_config()
  config.setup = "data"
  config.methods = ()
  config.pretrain.epochs = 40
  config.retrain.epochs = 40
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 2000
  config.asr.protocols = ("spec", "laf")  # LAF's attack as a column of its own
  config.plots = True
  workdir = str(tmp_path_factory.mktemp("memorise"))
  return workdir, experiment.run(config, workdir)


def test_asr_is_higher_for_a_model_that_memorised_the_forget_set(memorisation_run):
  _, results = memorisation_run
  memorised, unseen = results["models"]["initial"], results["models"]["retrain"]
  assert memorised["Train_f"]["mean"] == 100.0
  assert memorised["ASR"]["mean"] > unseen["ASR"]["mean"] + 5
  # digits has 360 test images, all LAF's non-members: its ASR scores D_f alone here.
  assert memorised["ASR_laf"]["mean"] > unseen["ASR_laf"]["mean"] + 5


def test_a_second_protocol_is_a_column_outside_the_distance(memorisation_run):
  workdir, results = memorisation_run
  assert results["metrics"] == ["Train_r", "Train_f", "Test", "ASR", "ASR_laf"]
  initial = results["models"]["initial"]
  assert initial["distance_to_retrain"] == pytest.approx(
      np.mean([initial["gap"][m] for m in ("Train_r", "Train_f", "Test", "ASR")]))
  assert "ASR_laf" in open(os.path.join(workdir, "results.md")).read()


def test_each_evaluation_names_the_machine_that_ran_it(memorisation_run):
  workdir, results = memorisation_run
  with open(os.path.join(workdir, "seed_0", "eval", "retrain.json")) as f:
    machine = json.load(f)["machine"]
  assert machine == runtime.machine()
  assert results["machines"] == {0: [machine]}
  assert machine.endswith(f", {os.cpu_count()} cores")  # the suite runs on the CPU
  with open("/proc/cpuinfo") as f:
    flags = f.read().split()
  widest = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else None
  if widest:  # the extension that decides XLA's and oneDNN's kernels
    assert f"({widest})" in machine


def test_evaluating_the_same_run_twice_gives_identical_numbers(memorisation_run):
  workdir, results = memorisation_run
  for path in glob.glob(os.path.join(workdir, "seed_0", "eval", "*")):
    os.remove(path)  # forces evaluation again from the finished checkpoints
  again = experiment.run(experiment_config(workdir), workdir)
  for name in ("initial", "retrain"):
    for metric in results["metrics"]:
      assert again["models"][name][metric] == results["models"][name][metric]


def experiment_config(workdir):
  import ml_collections  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


def test_plots_are_written_and_not_empty(memorisation_run, tmp_path):
  workdir, _ = memorisation_run
  images = glob.glob(os.path.join(workdir, "plots", "*.png"))
  assert images
  for path in images:
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert np.std(pixels[..., :3]) > 0.01  # not a blank canvas
  shutil.copy(images[0], tmp_path)


def test_confidence_study_at_scale_one_is_the_job_s_attack_and_scaling_keeps_predictions(
    memorisation_run):
  workdir, results = memorisation_run
  studied = confidence.study(workdir, [1.0, 3.0], ["spec", "laf"])[0]
  assert set(studied) == {"initial", "retrain"}
  for name, by_scale in studied.items():
    assert by_scale[1.0]["spec"]["ASR"] == results["models"][name]["ASR"]["mean"]
    assert by_scale[1.0]["laf"]["ASR"] == results["models"][name]["ASR_laf"]["mean"]
  model = models.create("cnn")
  variables = supervised.init_variables(model, jax.random.key(0), (8, 8, 1))
  images = np.random.default_rng(0).normal(size=(50, 8, 8, 1)).astype(np.float32)
  plain, sharp = (np.asarray(metrics.classifier_probs(model, k)(variables, images))
                  for k in (1.0, 3.0))
  assert (sharp.argmax(-1) == plain.argmax(-1)).all()  # the same predictions: accuracies stay
  assert (sharp.max(-1) > plain.max(-1)).all()  # each one surer
