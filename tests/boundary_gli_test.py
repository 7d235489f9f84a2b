"""Boundary Shrink and GLI against NumPy on a linear softmax model: exact input gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.methods import boundary
from mixunlearn_jax.methods import gli

SHAPE, CLASSES, BATCH = (3, 3, 1), 4, 8
PREPROCESS = data.Preprocess(mean=(0.4,), std=(0.3,))  # not the identity: pixel space matters


class Linear(nn.Module):
  """z = flatten(x) W + b, with the classifiers' (logits, features) interface."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(CLASSES)(x.reshape(x.shape[0], -1)), {}


def linear_variables(seed, scale):
  rng = np.random.default_rng(seed)
  params = {"Dense_0": {"kernel": scale * rng.normal(size=(np.prod(SHAPE), CLASSES)),
                        "bias": rng.normal(size=CLASSES)}}
  return {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params),
          "batch_stats": {}}


def numpy_params(variables):
  dense = variables["params"]["Dense_0"]
  return np.asarray(dense["kernel"], np.float64), np.asarray(dense["bias"], np.float64)


def normalise(pixels):
  return (pixels - PREPROCESS.mean[0]) / PREPROCESS.std[0]


def logits_np(variables, pixels):
  kernel, bias = numpy_params(variables)
  return normalise(pixels).reshape(len(pixels), -1) @ kernel + bias


def softmax_np(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def ce_grad_logits(z, labels):
  """∂ sum_b CE(z_b, y_b) / ∂z."""
  return softmax_np(z) - np.eye(CLASSES)[labels]


def to_pixel_grad(variables, grad_logits):
  """Chain rule through z = ((p - mean) / std) W + b, back to the pixels' shape."""
  kernel, _ = numpy_params(variables)
  return (grad_logits @ kernel.T / PREPROCESS.std[0]).reshape(-1, *SHAPE)


def weights_grad(variables, pixels, labels):
  """∇_(W, b) of the batch-mean CE of the linear model on `pixels`."""
  g = ce_grad_logits(logits_np(variables, pixels), labels) / len(labels)
  return normalise(pixels).reshape(len(pixels), -1).T @ g, g.sum(0)


def pixels_of(rng, size):
  pixels = rng.uniform(size=(size, *SHAPE))
  pixels[:, 0, 0, 0], pixels[:, 2, 2, 0] = 0.004, 0.996  # the clip must act on these
  return pixels


def program(name, variables, **overrides):
  hp = methods.get(name).hyperparameters(config_lib.base_config())
  hp.update(overrides)
  ctx = methods.UnlearnContext(
      model=Linear(), initial=variables, image_shape=SHAPE, num_classes=CLASSES, num_forget=20,
      num_remain=50, batch_size=BATCH, config=hp, seed=0, mesh=parallel.make_mesh(),
      preprocess=PREPROCESS)
  return methods.get(name).build(ctx), ctx


def run_step(program_, ctx, batch, frozen):
  step = parallel.jit_step(program_.phases[0].step, ctx.mesh, num_frozen=1)
  state, metrics = step(program_.state, jax.device_put(batch, parallel.data_sharded(ctx.mesh)),
                        frozen)
  return numpy_params(state.variables), metrics


# -- Boundary Shrink ------------------------------------------------------------------------


def fgsm_np(variables, pixels, labels, epsilon):
  """(x_adv pixels, y_nbi), in float64."""
  grad = to_pixel_grad(variables, ce_grad_logits(logits_np(variables, pixels), labels))
  moved = np.clip(pixels + epsilon * np.sign(grad), 0.0, 1.0) * 255.0
  assert np.abs(moved - np.floor(moved) - 0.5).min() > 1e-3  # no rounding ties
  adversarial = np.round(moved) / 255.0
  return adversarial, logits_np(variables, adversarial).argmax(-1)


def test_boundary_neighbours_are_numpys_fgsm_on_the_pixel_grid_and_f_d_labels():
  initial = linear_variables(0, scale=3.0)
  rng = np.random.default_rng(1)
  pixels, labels = pixels_of(rng, BATCH), rng.integers(0, CLASSES, BATCH)
  expected, y_nbi = fgsm_np(initial, pixels, labels, epsilon=0.1)
  assert (y_nbi != labels).any() and (y_nbi == labels).any()  # both kinds stay in
  x_adv, labels_out = jax.jit(lambda x, y: boundary.neighbours(
      initial, x, y, model=Linear(), epsilon=0.1, preprocess=PREPROCESS))(
          normalise(pixels).astype(np.float32), labels)
  adversarial = np.asarray(x_adv, np.float64) * PREPROCESS.std[0] + PREPROCESS.mean[0]
  np.testing.assert_allclose(adversarial, expected, atol=1e-6)
  assert adversarial.min() >= -1e-6 and adversarial.max() <= 1 + 1e-6
  np.testing.assert_allclose(adversarial * 255.0, np.round(adversarial * 255.0), atol=1e-4)
  assert (expected == 0.0).any() and (expected == 1.0).any()  # the clip acted
  np.testing.assert_array_equal(labels_out, y_nbi)


def test_boundary_step_attacks_f_d_and_trains_the_unlearner_on_clean_images():
  initial, unlearner = linear_variables(0, scale=3.0), linear_variables(2, scale=3.0)
  rng = np.random.default_rng(1)
  pixels, labels = pixels_of(rng, BATCH), rng.integers(0, CLASSES, BATCH)
  _, y_nbi = fgsm_np(initial, pixels, labels, epsilon=0.1)  # f_D's, not the unlearner's
  assert (fgsm_np(unlearner, pixels, labels, epsilon=0.1)[1] != y_nbi).any()
  program_, ctx = program("boundary_shrink", unlearner, lr=0.1)
  assert [(k, s.source, s.labels, s.batch_size) for k, s in program_.phases[0].stream.items()] == [
      ("forget", "forget", True, BATCH)]  # forget_batch_size 0: the job's
  assert program_.phases[0].num_steps == 10 * -(-20 // BATCH)
  batch = {"forget": {"image": normalise(pixels).astype(np.float32),
                      "label": labels.astype(np.int32)}}
  (kernel, bias), metrics = run_step(program_, ctx, batch, {"initial": initial})
  grad_kernel, grad_bias = weights_grad(unlearner, pixels, y_nbi)
  kernel0, bias0 = numpy_params(unlearner)
  # Momentum's first step is the gradient itself.
  np.testing.assert_allclose(kernel, kernel0 - 0.1 * grad_kernel, atol=1e-5)
  np.testing.assert_allclose(bias, bias0 - 0.1 * grad_bias, atol=1e-5)
  assert float(metrics["relabelled"]) == pytest.approx(np.mean(y_nbi != labels))


# -- GLI ------------------------------------------------------------------------------------


def gli_delta_np(variables, pixels, labels, forget_pixels, weight, iterations, step_size):
  """δ after K sign-ascent steps on J = mean_b[-w CE_b + mean_c (z_bc - z_f,bc)²]."""
  forget_logits = logits_np(variables, forget_pixels)
  delta = np.zeros_like(pixels)
  for _ in range(iterations):
    moved = pixels + delta
    z = logits_np(variables, np.clip(moved, 0.0, 1.0))
    grad_z = (-weight * ce_grad_logits(z, labels) + 2.0 / CLASSES * (z - forget_logits))
    grad = to_pixel_grad(variables, grad_z / len(labels)) * ((moved > 0) & (moved < 1))
    assert np.abs(grad[grad != 0]).min() > 1e-6 * np.abs(grad).max()  # signs are not noise
    delta = delta + step_size * np.sign(grad)
  return delta


def gli_batch(rng):
  pixels, forget = pixels_of(rng, BATCH), pixels_of(rng, BATCH)
  labels = rng.integers(0, CLASSES, BATCH)
  batch = {"remain": {"image": normalise(pixels).astype(np.float32),
                      "label": labels.astype(np.int32)},
           "forget": {"image": normalise(forget).astype(np.float32)}}
  return pixels, labels, forget, batch


def test_gli_perturbation_is_numpys_two_sign_ascent_steps():
  variables = linear_variables(3, scale=1.0)
  pixels, labels, forget, batch = gli_batch(np.random.default_rng(4))
  hp = config_lib.base_config().gli
  assert hp.iterations == 2
  delta = jax.jit(lambda b: gli.perturbation(
      variables, b["remain"]["image"], b["remain"]["label"], b["forget"]["image"], 200.0,
      model=Linear(), hp=hp, preprocess=PREPROCESS))(batch)
  expected = gli_delta_np(variables, pixels, labels, forget, 200.0, 2, 0.01)
  np.testing.assert_allclose(np.asarray(delta), expected, atol=1e-7)
  assert set(np.round(np.unique(expected) * 100).astype(int)) <= {-2, -1, 0, 1, 2}
  assert (np.abs(expected) == 0.02).any() and (np.abs(expected) == 0.01).any()  # clipped


def test_gli_step_trains_on_the_perturbed_images_and_applies_nothing_of_the_search():
  variables = linear_variables(3, scale=1.0)
  pixels, labels, forget, batch = gli_batch(np.random.default_rng(4))
  kernel0, bias0 = numpy_params(variables)
  program_, ctx = program("gli", variables, lr=0.5, batch_size=BATCH)
  stream = program_.phases[0].stream
  assert (stream["remain"].labels, stream["forget"].labels) == (True, False)
  (kernel, bias), metrics = run_step(program_, ctx, batch, {"initial": variables})
  assert float(metrics["task_weight"]) == 200.0  # w_start at step 0
  delta = gli_delta_np(variables, pixels, labels, forget, 200.0, 2, 0.01)
  perturbed = np.clip(pixels + delta, 0.0, 1.0)
  grad_kernel, grad_bias = weights_grad(variables, perturbed, labels)
  np.testing.assert_allclose(kernel, kernel0 - 0.5 * grad_kernel, atol=1e-5)
  np.testing.assert_allclose(bias, bias0 - 0.5 * grad_bias, atol=1e-5)
  clean_kernel, _ = weights_grad(variables, pixels, labels)
  assert np.abs(grad_kernel - clean_kernel).max() > 1e-2  # the images made a difference
  (kernel, bias), _ = run_step(*program("gli", variables, lr=0.0, batch_size=BATCH), batch,
                               {"initial": variables})
  np.testing.assert_array_equal(kernel, kernel0)  # the search's gradients never reach θ
  np.testing.assert_array_equal(bias, bias0)


def test_gli_task_weight_ramps_over_the_run_or_restarts_each_epoch():
  hp = config_lib.base_config().gli
  weight = lambda t, n: float(gli.task_weight(jnp.asarray(t), hp=hp, ramp_steps=n))  # noqa: E731
  assert [weight(t, 5) for t in (0, 2, 4)] == pytest.approx([200.0, 600.0, 1000.0])
  assert weight(5, 5) == pytest.approx(200.0)  # 'epoch': the next epoch starts again
  for ramp, steps in (("epoch", 7), ("run", 21)):  # 50 remain samples, batches of 8
    program_, _ = program("gli", linear_variables(3, 1.0), epochs=3, weight_ramp=ramp,
                          batch_size=BATCH)
    assert program_.phases[0].step.keywords["ramp_steps"] == steps
    assert program_.phases[0].num_steps == 21
