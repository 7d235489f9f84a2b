"""Models: parameter counts from the spec, shapes, BatchNorm modes, MixBlock vs NumPy."""

import functools
import os
import re
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from mixunlearn_jax import models
from mixunlearn_jax.models import onednn as onednn_lib


def count(tree):
  return sum(np.prod(x.shape) for x in jax.tree.leaves(tree))


def abstract_init(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def test_cnn_has_spec_parameter_count_and_shapes():
  model = models.create("cnn")
  variables = abstract_init(model, (1, 28, 28, 1))
  assert count(variables["params"]) == 449_098
  (logits, features) = jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                                      jnp.zeros((3, 28, 28, 1)))
  assert logits.shape == (3, 10)
  assert features["embed"].shape == (3, 256)
  assert features["mix"].shape == (3, 7, 7, 32)


def test_cnn_runs_on_8x8_digits():
  model = models.create("cnn")
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  logits, features = model.apply(variables, x)
  assert logits.shape == (2, 10) and features["mix"].shape == (2, 2, 2, 32)


@pytest.mark.parametrize("stem,kernel,size,mix_hw", [("cifar", 3, 32, 8), ("imagenet", 7, 224, 14)])
def test_resnet18_parameter_count_and_shapes(stem, kernel, size, mix_hw):
  model = models.create("resnet18", stem=stem)
  variables = abstract_init(model, (1, size, size, 3))
  # torchvision's ResNet-18 without its 1000-way head has 11,176,512 parameters
  # with its 7x7 stem; the LAF head adds 512*256+256 and 256*10+10.
  stem_difference = (7 * 7 - kernel * kernel) * 3 * 64
  assert count(variables["params"]) == 11_176_512 - stem_difference + 131_328 + 2_570
  logits, features = jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                                    jnp.zeros((2, size, size, 3)))
  assert logits.shape == (2, 10)
  assert features["embed"].shape == (2, 256)
  assert features["mix"].shape == (2, mix_hw, mix_hw, 256)


def test_resnet_batchnorm_statistics_change_only_in_train_mode():
  model = models.ResNet(stage_sizes=(1, 1), widths=(8, 16), mix_stage=1, embed_dim=16)
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3)) * 3 + 1
  variables = model.init(jax.random.key(0), x)
  _, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  _, unchanged = model.apply(variables, x, train=False, mutable=["batch_stats"])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                         updated["batch_stats"])
  assert all(jax.tree.leaves(changed))
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                          variables["batch_stats"], unchanged["batch_stats"])))


def test_bfloat16_computes_in_bf16_with_float32_params():
  model = models.create("cnn", dtype="bfloat16")
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  logits, _ = model.apply(variables, x)
  assert logits.dtype == jnp.bfloat16
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_registry_rejects_unknown_names():
  with pytest.raises(ValueError, match="known models: cnn"):
    models.create("resnet50")
  with pytest.raises(ValueError, match="dtype"):
    models.create("cnn", dtype="float16x")


# -- MixBlock -------------------------------------------------------------------


def mixblock_setup(channels=8, hw=4, batch=3, image=12, seed=0):
  rng = np.random.default_rng(seed)
  feat_f = rng.normal(size=(batch, hw, hw, channels)).astype(np.float32)
  feat_r = rng.normal(size=(batch, hw, hw, channels)).astype(np.float32)
  block = models.MixBlock()
  params = block.init(jax.random.key(seed), feat_f, feat_r, 0.5, (image, image))["params"]
  # Larger weights than the N(0, 0.01) init, so the mask is far from uniform.
  params = jax.tree.map(lambda p: p * 50 + 0.01, params)
  return block, params, feat_f, feat_r


def numpy_mixblock(params, feat_f, feat_r, lam, image_hw):
  """Spec §2, written independently with NumPy."""
  batch, h, w, c = feat_f.shape
  lam = np.broadcast_to(np.reshape(lam, (-1, 1, 1, 1)), (batch, h, w, 1))
  a = np.concatenate([feat_f, lam], -1).reshape(batch, h * w, c + 1)
  b = np.concatenate([feat_r, 1 - lam], -1).reshape(batch, h * w, c + 1)
  conv = lambda x, name: x @ np.asarray(params[name]["kernel"])[0, 0] + np.asarray(  # noqa: E731
      params[name]["bias"])
  relu = lambda x: np.maximum(x, 0)  # noqa: E731

  def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

  scale = np.sqrt(c // 2)
  m_a = softmax(relu(conv(a, "query")) @ relu(conv(b, "key")).transpose(0, 2, 1) / scale, -1) @ conv(a, "value")
  m_b = softmax(relu(conv(b, "query")) @ relu(conv(a, "key")).transpose(0, 2, 1) / scale, -1) @ conv(b, "value")
  m = np.concatenate([m_a, m_b], -1).reshape(batch, h, w, 2)
  zoom = (1, image_hw[0] / h, image_hw[1] / w, 1)
  m = ndimage.zoom(m, zoom, order=1, grid_mode=True, mode="nearest")
  return softmax(m, -1)


def test_mixblock_has_66306_parameters_for_256_channels():
  feat = jnp.zeros((1, 8, 8, 256))
  params = jax.eval_shape(lambda: models.MixBlock().init(jax.random.key(0), feat, feat, 0.5,
                                                          (32, 32)))["params"]
  assert count(params) == 66_306


@pytest.mark.parametrize("lam", [0.3, np.array([0.1, 0.5, 0.9], np.float32)])
def test_mixblock_matches_numpy_reference(lam):
  block, params, feat_f, feat_r = mixblock_setup()
  mask = block.apply({"params": params}, feat_f, feat_r, lam, (12, 12))
  expected = numpy_mixblock(flax.core.unfreeze(params), feat_f, feat_r, lam, (12, 12))
  np.testing.assert_allclose(np.asarray(mask), expected, rtol=1e-4, atol=1e-5)


def test_mixblock_mask_is_a_distribution_that_depends_on_lambda():
  block, params, feat_f, feat_r = mixblock_setup()
  mask = np.asarray(block.apply({"params": params}, feat_f, feat_r, 0.2, (12, 12)))
  assert mask.shape == (3, 12, 12, 2)
  assert mask.min() >= 0 and mask.max() <= 1
  np.testing.assert_allclose(mask.sum(-1), 1.0, rtol=1e-6)
  other = np.asarray(block.apply({"params": params}, feat_f, feat_r, 0.8, (12, 12)))
  assert np.abs(mask - other).max() > 1e-3


def test_gradients_reach_every_mixblock_parameter():
  block, params, feat_f, feat_r = mixblock_setup()
  x_f = jnp.asarray(np.random.default_rng(1).normal(size=(3, 12, 12, 1)), jnp.float32)
  x_r = jnp.asarray(np.random.default_rng(2).normal(size=(3, 12, 12, 1)), jnp.float32)

  def loss(p):
    mask = block.apply({"params": p}, feat_f, feat_r, 0.4, (12, 12))
    return jnp.sum(models.mix_images(x_f, x_r, mask) ** 2)

  grads = jax.grad(loss)(params)
  for path, g in flax.traverse_util.flatten_dict(flax.core.unfreeze(grads), sep="/").items():
    assert np.abs(np.asarray(g)).max() > 0, path


def test_mix_images_is_the_mask_weighted_sum():
  rng = np.random.default_rng(0)
  x_f, x_r = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  m0 = rng.uniform(size=(2, 4, 4, 1))
  mask = np.concatenate([m0, 1 - m0], -1)
  np.testing.assert_allclose(np.asarray(models.mix_images(x_f, x_r, mask)),
                             x_f * m0 + x_r * (1 - m0), rtol=1e-6)


# -- the convolution with canonical gradients -------------------------------------------


@pytest.mark.parametrize("kernel,padding,strides", [
    (5, "SAME", (1, 1)), (3, ((1, 0), (0, 2)), (1, 1)), (1, "VALID", (1, 1)), (3, "SAME", (2, 2)),
    (1, "SAME", (2, 2)), (1, "VALID", (3, 2)), (5, ((2, 1), (0, 3)), (3, 2)), (2, "VALID", (3, 3)),
    (4, "SAME", (2, 2))])
def test_canonical_conv_matches_lax_values_and_gradients_inside_cond(kernel, padding, strides):
  from jax import lax  # pylint: disable=g-import-not-at-top
  from mixunlearn_jax.models import conv  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

  def loss(fn):
    return lambda x, w: jnp.sum(jnp.sin(fn(x, w, strides, padding, None, None, dn)))

  expected = jax.value_and_grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  in_cond = jax.jit(lambda x, w: lax.cond(
      True, lambda: jax.value_and_grad(loss(conv.conv_general_dilated), (0, 1))(x, w),
      lambda: expected))
  for got in (jax.value_and_grad(loss(conv.conv_general_dilated), (0, 1))(x, w), in_cond(x, w)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def onednn_here():
  """True where oneDNN's convolutions build; elsewhere checks the fallback instead.

  On x86-64 Linux the wheels of requirements.txt must work (CI=true makes it
  a failure there); on other machines (ARM, macOS) the job must fall back to
  XLA's convolutions and say why.
  """
  if onednn_lib.available():
    return True
  reason = onednn_lib.unavailable_reason()
  on_wheels_platform = sys.platform == "linux" and os.uname().machine == "x86_64"
  assert not (on_wheels_platform and os.environ.get("CI") == "true"), reason
  assert reason and models.conv_path(True, "float32") != "onednn"
  return False


@pytest.mark.parametrize("kernel,padding,strides", [
    (3, "SAME", (1, 1)), (3, ((1, 0), (0, 2)), (1, 1)), (1, "VALID", (1, 1)), (3, "SAME", (2, 2)),
    (1, "SAME", (2, 2)), (5, ((2, 1), (0, 3)), (3, 2)), (7, "SAME", (2, 2))])
def test_onednn_conv_matches_lax_values_and_gradients_inside_cond(kernel, padding, strides):
  from jax import lax  # pylint: disable=g-import-not-at-top
  from mixunlearn_jax.models import conv  # pylint: disable=g-import-not-at-top
  if not onednn_here():
    return
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 26, 26, 3)), jnp.float32)  # outputs of 8x8 and more
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float32)
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

  def loss(fn, **kwargs):
    return lambda x, w: jnp.sum(jnp.sin(fn(x, w, strides, padding, None, None, dn, **kwargs)))

  ours = jax.value_and_grad(loss(conv.conv_general_dilated, onednn=True), (0, 1))
  hlo = jax.jit(ours).lower(x, w).as_text()
  for target in ("OnednnConvForward", "OnednnConvInputGrad", "OnednnConvKernelGrad"):
    assert target in hlo
  expected = jax.value_and_grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
  in_cond = jax.jit(lambda x, w: lax.cond(True, lambda: ours(x, w), lambda: expected))
  for got in (ours(x, w), in_cond(x, w)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_onednn_is_used_on_one_cpu_device_for_float32_maps_of_8_pixels_and_more():
  from mixunlearn_jax.models import conv  # pylint: disable=g-import-not-at-top
  if not onednn_here():
    return
  w = jnp.ones((3, 3, 4, 4))
  targets = lambda x: jax.jit(functools.partial(  # noqa: E731
      conv.conv_general_dilated, window_strides=(1, 1), padding="SAME", onednn=True)).lower(
          x, w.astype(x.dtype)).as_text().count("OnednnConvForward")
  assert targets(jnp.ones((2, 8, 8, 4))) == 1
  assert targets(jnp.ones((2, 4, 4, 4))) == 0  # small maps: Eigen is faster
  assert targets(jnp.ones((2, 8, 8, 4), jnp.bfloat16)) == 0
  # These tests run on 4 devices, where the custom calls would gather each batch.
  assert jax.device_count() > 1 and models.default_conv() is conv.conv_general_dilated


def test_asking_for_onednn_without_it_is_an_error_that_says_why(monkeypatch):
  from mixunlearn_jax.models import conv, onednn  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(onednn, "_load", lambda: "no C++ compiler found (set CXX)")
  with pytest.raises(RuntimeError, match="unavailable: no C\\+\\+ compiler found"):
    conv.conv_general_dilated(jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 1)), (1, 1), "SAME",
                              onednn=True)


@pytest.mark.parametrize("rhs_dilation,groups", [((2, 2), 1), ((1, 1), 3)])
def test_dilated_or_grouped_conv_falls_back_to_lax_with_its_padding(rhs_dilation, groups):
  from jax import lax  # pylint: disable=g-import-not-at-top
  from mixunlearn_jax.models import conv  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3 // groups, 6)), jnp.float32)
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
  args = ((2, 2), "SAME", None, rhs_dilation, dn, groups)
  np.testing.assert_allclose(conv.conv_general_dilated(x, w, *args),
                             lax.conv_general_dilated(x, w, *args), rtol=1e-6)


@pytest.mark.parametrize("stem,onednn", [("cifar", False), ("imagenet", False),
                                          ("cifar", True), ("imagenet", True)])
def test_resnet_gradients_with_our_convolution_equal_lax(stem, onednn):
  # Every kind of convolution in one network: stride 1, stride 2 (3x3 and the
  # 7x7 stem), the strided 1x1 shortcut; BatchNorm in train mode. With oneDNN,
  # the maps of 8 pixels and more run on it, the smaller ones on XLA.
  from mixunlearn_jax.models import conv  # pylint: disable=g-import-not-at-top
  if onednn and not onednn_here():
    return
  kwargs = dict(stage_sizes=(1, 1, 1), widths=(4, 8, 8), mix_stage=1, embed_dim=8, stem=stem)
  ours = models.ResNet(
      conv_general_dilated=functools.partial(conv.conv_general_dilated, onednn=onednn), **kwargs)
  reference = models.ResNet(conv_general_dilated=None, **kwargs)
  x = jax.random.normal(jax.random.key(1), (2, 17, 17, 3))
  variables = reference.init(jax.random.key(0), x)

  def loss(model):
    def fn(params, x):
      (logits, _), _ = model.apply({**variables, "params": params}, x, train=True,
                                   mutable=["batch_stats"])
      return jnp.sum(jnp.sin(logits))
    return jax.jit(jax.value_and_grad(fn, (0, 1)))

  got, expected = loss(ours)(variables["params"], x), loss(reference)(variables["params"], x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("shape", [(2, 28, 28, 4), (2, 7, 9, 3)])
def test_cnn_max_pool_matches_reduce_window_values_and_gradients(shape):
  from mixunlearn_jax.models import cnn  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)  # no ties
  ours = lambda x: jnp.sum(jnp.sin(cnn.max_pool(x, 2)))  # noqa: E731
  flax_pool = lambda x: jnp.sum(jnp.sin(flax.linen.max_pool(x, (2, 2), (2, 2))))  # noqa: E731
  np.testing.assert_allclose(cnn.max_pool(x, 2), flax.linen.max_pool(x, (2, 2), (2, 2)))
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(flax_pool)(x), rtol=1e-6)


def test_cpu_convolution_gradients_bypass_ynnpack_and_reductions_use_it():
  # The entry points and conftest.py set this XLA flag (mixunlearn_jax/runtime.py).
  # By default XLA:CPU compiles both gradients below to `ynn_fusion`s and the
  # channel sum (BatchNorm's statistics) to a loop.
  x, w = jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 32))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=(
      "NHWC", "HWIO", "NHWC"))
  gradients = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy))
  hlo = gradients.lower(x, w, x).compile().as_text()
  assert "convolution(" in hlo
  assert "ynn_fusion" not in hlo
  channel_sum = jax.jit(lambda x: jnp.sum(x, axis=(0, 1, 2)))
  assert "ynn_fusion" in channel_sum.lower(x).compile().as_text()


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_kernel_gradient_transposes_stored_input_not_its_producers(strides):
  # x comes out of an elementwise chain with 4 inputs, as a ResNet block's
  # output comes out of BatchNorm, the residual add and ReLU. XLA:CPU would
  # fuse that chain into the transpose of x that the kernel gradient needs;
  # the transpose must instead read x alone (see models/conv.py), for strided
  # convolutions (ResNet's downsampling ones) too.
  from mixunlearn_jax.models import conv  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a, scale, shift, residual = (jnp.asarray(rng.normal(size=(4, 8, 8, 6)), jnp.float32)
                               for _ in range(4))
  w = jnp.asarray(rng.normal(size=(3, 3, 6, 5)), jnp.float32)

  def loss(w, a, scale, shift, residual):
    x = jax.nn.relu(a * scale + shift + residual)
    return jnp.sum(jnp.sin(conv.conv_general_dilated(x, w, strides, "SAME")))

  hlo = jax.jit(jax.grad(loss)).lower(w, a, scale, shift, residual).compile().as_text()
  # x is [4, 8, 8, 6]; the kernel gradient reads it as [6, 8, 8, 4].
  producers = re.findall(r"= f32\[6,8,8,4\]\S* (?:fusion|transpose|copy)\(([^)]*)\)", hlo)
  assert producers
  assert all(operands.count("%") <= 1 for operands in producers), producers


def test_xla_flag_is_set_even_after_a_stray_token_in_xla_flags():
  # XLA ignores every flag after a token that is not a flag, as in this
  # (mistaken) setting; the package's own flag must still take effect.
  script = (
      "from mixunlearn_jax import runtime\n"
      "runtime.configure()\n"
      "import jax, jax.numpy as jnp\n"
      "conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
      "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
      "x, w = jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 32))\n"
      "f = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy))\n"
      "print('ynn_fusion' in f.lower(x, w, x).compile().as_text())\n")
  env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false threads=1",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip().splitlines()[-1] == "False", result.stdout


def test_importing_the_package_changes_no_environment_variable():
  # TensorFlow sets variables of its own on import: take them first.
  script = ("import os, json, tensorflow, tensorflow_datasets, jax, flax, orbax.checkpoint\n"
            "before = dict(os.environ)\n"
            "import mixunlearn_jax, mixunlearn_jax.experiment, mixunlearn_jax.benchmark\n"
            "print(json.dumps(dict(os.environ) == before))\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip().splitlines()[-1] == "true", result.stderr[-2000:]
