"""Evaluation: accuracies against NumPy, ASR on constructed cases, determinism, plots."""

import glob
import json
import os
import shutil

import jax
import matplotlib.image
import numpy as np
import pytest

from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax import models
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.evaluation import metrics
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
  workdir = str(tmp_path_factory.mktemp("memorise"))
  return workdir, experiment.run(config, workdir)


def test_asr_is_higher_for_a_model_that_memorised_the_forget_set(memorisation_run):
  _, results = memorisation_run
  memorised, unseen = results["models"]["initial"], results["models"]["retrain"]
  assert memorised["Train_f"]["mean"] == 100.0
  assert memorised["ASR"]["mean"] > unseen["ASR"]["mean"] + 5


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
