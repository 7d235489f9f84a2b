"""Unrolling SGD: θ_T plus the scaled sum of per-sample gradients at θ_ref, each sample once."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import methods
from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised

SHAPE, CLASSES = (2, 3, 1), 4
MEAN, STD = 0.5, 0.25


class Linear(nn.Module):
  """Softmax regression on the flattened image: gradients NumPy can write down."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(CLASSES)(x), x


def numpy_gradient_sum(variables, x, labels):
  """Σ_i ∇_(W, b) CE(x_i W + b, y_i), sample by sample, in float64."""
  w = np.asarray(variables["params"]["Dense_0"]["kernel"], np.float64)
  b = np.asarray(variables["params"]["Dense_0"]["bias"], np.float64)
  grad_w, grad_b = np.zeros_like(w), np.zeros_like(b)
  for x_i, y_i in zip(x, labels):
    z = x_i @ w + b
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    delta = p - np.eye(CLASSES)[y_i]
    grad_w += np.outer(x_i, delta)
    grad_b += delta
  return grad_w, grad_b


def relative_error(actual, expected):
  return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("reference", ["theta0", "final"])
def test_update_is_the_numpy_sum_of_per_sample_gradients_each_forget_sample_once(reference):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (60, *SHAPE)).astype(np.uint8)
  labels = rng.integers(0, CLASSES, 60).astype(np.int32)
  forget = np.sort(rng.choice(60, 37, replace=False))  # 37 = 4 batches of 8 and 5 more
  remain = np.setdiff1d(np.arange(60), forget)
  model, mesh = Linear(), parallel.make_mesh()
  theta_0 = supervised.init_variables(model, jax.random.key(1), SHAPE)
  theta_t = supervised.init_variables(model, jax.random.key(2), SHAPE)
  method = methods.get("unrolling")
  hp = method.hyperparameters(config_lib.base_config())
  hp.update(reference=reference, scale_factor=2.5, batch_size=8)
  ctx = methods.UnlearnContext(
      model=model, initial=theta_t, image_shape=SHAPE, num_classes=CLASSES,
      num_forget=len(forget), num_remain=len(remain), batch_size=8, config=hp, seed=0,
      mesh=mesh, theta0=lambda: theta_0, recipe={"epochs": 3, "lr": 0.1, "batch_size": 16})
  program = method.build(ctx)
  (phase,) = program.phases
  assert phase.num_steps == 5  # one pass over D_f, the last batch 3 real + 5 padding
  frozen = {"initial": theta_t, **program.frozen}
  step = parallel.jit_step(phase.step, mesh, num_frozen=1)
  state = program.state
  for batch in pipeline.stream_pipeline(images, labels, forget, remain, phase.stream,
                                        num_steps=phase.num_steps, seed=4,
                                        preprocess=pipeline.Preprocess((MEAN,), (STD,))):
    state, metrics = step(state, jax.device_put(batch, parallel.data_sharded(mesh)), frozen)
  assert float(metrics["count"]) == 37
  result = program.result(state)

  x = ((images[forget] / 255.0 - MEAN) / STD).reshape(len(forget), -1)
  grad_w, grad_b = numpy_gradient_sum(theta_0 if reference == "theta0" else theta_t, x,
                                      labels[forget])
  scale = 2.5 * 0.1 * 3 / 16
  for name, grad in [("kernel", grad_w), ("bias", grad_b)]:
    start = np.asarray(theta_t["params"]["Dense_0"][name], np.float64)
    update = (np.asarray(result["params"]["Dense_0"][name], np.float64) - start) / scale
    assert relative_error(update, grad) < 1e-5, name
