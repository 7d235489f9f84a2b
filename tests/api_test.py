"""The library API: a user's own model through `unlearn`/`evaluate`, and the job's equal."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import mixunlearn_jax as mu
from examples import own_model
from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from tests import tiny_config


def test_the_example_forgets_with_its_own_model():
  before, after = own_model.main()
  assert after["Test_f"] <= 0.5 * before["Test_f"]
  assert abs(after["Test_r"] - before["Test_r"]) <= 3.0


@pytest.fixture(scope="module")
def small_model():
  (x, y), test = own_model.digits()
  model = own_model.SmallCNN()
  return model, model.init(jax.random.key(0), x[:1]), (x, y), test


def test_a_missing_feature_is_an_error_naming_what_to_return_or_pass(small_model):
  model, variables, (x, y), _ = small_model
  with pytest.raises(ValueError, match=r"features\['mix'\].*features=\{'mix'.*Conv_1"):
    mu.unlearn(model, variables, (x[y == 0], y[y == 0]), (x[y != 0], y[y != 0]))
  with pytest.raises(ValueError, match="no submodule 'Conv_7'; submodules: Conv_0, Conv_1, Dense_0"):
    mu.unlearn(model, variables, (x[y == 0], y[y == 0]), (x[y != 0], y[y != 0]),
               features={"mix": "Conv_7"})
  # Vanilla mixup reads no feature map: the bare model takes it as it is.
  vanilla = mu.unlearn(model, variables, (x[y == 0], y[y == 0]), (x[y != 0], y[y != 0]),
                       method="mixunlearn_aware_vanilla_mixup", epochs=1)
  assert set(vanilla.losses) == {"l_unlearn", "l_mix", "l_real"}
  with pytest.raises(ValueError, match="reads remain labels"):
    mu.unlearn(model, variables, x[y == 0], x[y != 0], method="scrub")
  with pytest.raises(ValueError, match="'epochz' is not a field of 'neggrad'"):
    mu.unlearn(model, variables, (x[y == 0], y[y == 0]), (x[y != 0], y[y != 0]),
               method="neggrad", epochz=1)


class WithBatchNorm(nn.Module):
  """A model with BatchNorm and a `train` flag, returning (logits, features) itself."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3))(x)))
    return nn.Dense(10)(x.mean(axis=(1, 2))), {"embed": x.mean(axis=(1, 2))}


def test_variables_come_back_in_the_model_s_own_form(small_model):
  model, variables, (x, y), _ = small_model
  forget, remain = x[y == 0], x[y != 0]
  with pytest.raises(ValueError, match=r"features\['embed'\] has shape \(2, 4, 4, 32\)"):
    mu.unlearn(model, variables, forget, remain, method="laf", features={"embed": "Conv_1"})
  unlearned = mu.unlearn(model, variables, forget, remain, method="randlabel", epochs=1)
  assert set(unlearned.variables) == {"params"}  # no BatchNorm: no batch_stats added
  assert jax.tree.structure(unlearned.variables) == jax.tree.structure(variables)
  assert unlearned.seconds > 0 and unlearned.losses
  batchnorm = WithBatchNorm()
  bn_variables = batchnorm.init(jax.random.key(0), x[:1])
  trained = mu.unlearn(batchnorm, bn_variables, (x[y == 0], y[y == 0]), (x[y != 0], y[y != 0]),
                       method="neggrad", epochs=1, batchnorm_train=True)
  assert set(trained.variables) == {"params", "batch_stats"}
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                       trained.variables["batch_stats"], bn_variables["batch_stats"])
  assert any(jax.tree.leaves(moved))  # BatchNorm's statistics trained in train mode


def test_the_api_gives_the_job_s_metrics_for_the_same_config_data_and_seed(tmp_path):
  config = tiny_config.get_config()
  config.methods = ("mixunlearn_aware",)
  config.pretrain.epochs = config.retrain.epochs = 1
  config.mixunlearn.epochs = 2
  workdir = str(tmp_path)
  experiment.run(config, workdir)
  dataset = data.load("digits")
  model = experiment.create_model(config, dataset)
  state = supervised.create_train_state(model, optax.adam(config.pretrain.lr), jax.random.key(0),
                                        dataset.image_shape, parallel.make_mesh())
  f_d = loop.restore_finished(os.path.join(workdir, "seed_0", "pretrain"), state).state.variables
  split = data.Split.load(os.path.join(workdir, "seed_0", "split.npz"))
  images, labels = dataset.train_images, split.train_labels
  forget = (images[split.forget], labels[split.forget])
  remain = (images[split.remain], labels[split.remain])
  test = (dataset.test_images, dataset.test_labels)
  normalize = (dataset.mean, dataset.std)
  unlearned = mu.unlearn(model, f_d, forget, remain, method="mixunlearn_aware", config=config,
                         seed=0, normalize=normalize)
  scores = mu.evaluate(model, unlearned, forget, remain, test, normalize=normalize,
                       batch_size=config.eval_batch_size)["metrics"]
  with open(os.path.join(workdir, "seed_0", "eval", "mixunlearn_aware.json")) as f:
    assert scores == json.load(f)["metrics"]
