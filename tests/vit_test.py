"""ViT: output contract, checkpoint-compatible names, npz loading, and the ImageNet job."""

import json
import math
import os

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage
import tensorflow_datasets as tfds

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import experiment
from mixunlearn_jax import models
from mixunlearn_jax.data import datasets
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.models import vit

TINY = dict(patch_size=4, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)


def _init(image_size, num_classes, seed=0, **kwargs):
  model = vit.ViT(num_classes=num_classes, **TINY, **kwargs)
  x = jax.random.normal(jax.random.key(seed + 100), (2, image_size, image_size, 3))
  return model, model.init(jax.random.key(seed), x)["params"], x


def test_output_shapes_and_dtypes():
  model, params, x = _init(16, 5)
  logits, features = model.apply({"params": params}, x, train=True)
  assert logits.shape == (2, 5)
  assert features["embed"].shape == (2, 16)
  assert features["mix"].shape == (2, 4, 4, 16)
  assert logits.dtype == jnp.float32

  bf16 = vit.ViT(num_classes=5, dtype=jnp.bfloat16, **TINY)
  bf16_params = bf16.init(jax.random.key(0), x)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16_params))
  logits, features = bf16.apply({"params": bf16_params}, x)
  assert logits.dtype == jnp.bfloat16
  assert features["mix"].dtype == jnp.bfloat16


def test_mix_is_the_chosen_block_output():
  _, params, x = _init(16, 5)
  # The head is zero-initialised; give it weights so logits depend on embed.
  params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
  mix = {i: vit.ViT(num_classes=5, mix_layer=i, **TINY).apply({"params": params}, x)[1]["mix"]
         for i in (0, 1)}
  default = vit.ViT(num_classes=5, **TINY).apply({"params": params}, x)[1]["mix"]
  np.testing.assert_array_equal(default, mix[1])  # num_layers // 2
  assert not np.allclose(mix[0], mix[1])
  with pytest.raises(ValueError, match="mix_layer"):
    vit.ViT(num_classes=5, mix_layer=2, **TINY).apply({"params": params}, x)


def test_parameter_names_follow_public_checkpoints():
  _, params, _ = _init(16, 10)
  block = {
      "LayerNorm_0/scale": (16,), "LayerNorm_0/bias": (16,),
      "MultiHeadDotProductAttention_1/query/kernel": (16, 2, 8),
      "MultiHeadDotProductAttention_1/query/bias": (2, 8),
      "MultiHeadDotProductAttention_1/key/kernel": (16, 2, 8),
      "MultiHeadDotProductAttention_1/key/bias": (2, 8),
      "MultiHeadDotProductAttention_1/value/kernel": (16, 2, 8),
      "MultiHeadDotProductAttention_1/value/bias": (2, 8),
      "MultiHeadDotProductAttention_1/out/kernel": (2, 8, 16),
      "MultiHeadDotProductAttention_1/out/bias": (16,),
      "LayerNorm_2/scale": (16,), "LayerNorm_2/bias": (16,),
      "MlpBlock_3/Dense_0/kernel": (16, 32), "MlpBlock_3/Dense_0/bias": (32,),
      "MlpBlock_3/Dense_1/kernel": (32, 16), "MlpBlock_3/Dense_1/bias": (16,),
  }
  expected = {
      "embedding/kernel": (4, 4, 3, 16), "embedding/bias": (16,), "cls": (1, 1, 16),
      "Transformer/posembed_input/pos_embedding": (1, 17, 16),
      "Transformer/encoder_norm/scale": (16,), "Transformer/encoder_norm/bias": (16,),
      "head/kernel": (16, 10), "head/bias": (10,),
      **{f"Transformer/encoderblock_{i}/{k}": v for i in range(2) for k, v in block.items()},
  }
  assert {k: v.shape for k, v in vit.flatten(params).items()} == expected


def test_vit_b16_parameter_count():
  model = vit.ViT(num_classes=1000, **vit.VIT_VARIANTS["vit_b16"])
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes)) == 86_567_656


@pytest.mark.parametrize("target_size", [32, 24])
def test_load_pretrained_npz_transfers_weights_and_resizes_pos_embedding(tmp_path, target_size):
  _, source, _ = _init(16, 10, seed=0)
  # Fresh inits share zeros and ones (cls, biases, LayerNorm); perturb every
  # weight so that a copied value cannot be mistaken for the target's init.
  rng = np.random.default_rng(0)
  source = jax.tree.map(lambda p: p + rng.normal(size=p.shape).astype(np.float32), source)
  path = tmp_path / "source.npz"
  vit.save_npz(path, source)
  saved = dict(np.load(path))
  saved["pre_logits/kernel"] = np.ones((16, 16), np.float32)  # As in the in21k files.
  saved["pre_logits/bias"] = np.ones((16,), np.float32)
  np.savez(path, **saved)

  model, target, x = _init(target_size, 3, seed=1)
  loaded = vit.load_pretrained_npz(path, target)
  flat_loaded, flat_target = vit.flatten(loaded), vit.flatten(target)
  assert flat_loaded.keys() == flat_target.keys()
  pos_key = "Transformer/posembed_input/pos_embedding"
  for key, value in flat_loaded.items():
    assert value.dtype == np.float32, key
    if key.startswith("head/"):
      np.testing.assert_array_equal(value, flat_target[key])
    elif key != pos_key:
      assert not np.allclose(saved[key], flat_target[key]), key
      np.testing.assert_array_equal(value, saved[key], err_msg=key)

  gs = target_size // 4
  pos = flat_loaded[pos_key]
  assert pos.shape == (1, 1 + gs * gs, 16)
  np.testing.assert_array_equal(pos[0, 0], saved[pos_key][0, 0])
  # Half-pixel-centre bilinear resize with edge clamping, computed by scipy.
  old_grid = saved[pos_key][0, 1:].reshape(4, 4, 16)
  expected = scipy.ndimage.zoom(old_grid, (gs / 4, gs / 4, 1), order=1, grid_mode=True,
                                mode="nearest")
  np.testing.assert_allclose(pos[0, 1:].reshape(gs, gs, 16), expected, atol=1e-6)

  logits, _ = model.apply({"params": loaded}, x)
  assert logits.shape == (2, 3)


def test_load_pretrained_npz_rejects_mismatches(tmp_path):
  _, source, _ = _init(16, 10)
  flat = vit.flatten(source)
  _, target, _ = _init(16, 10, seed=1)

  key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"
  bad = dict(flat, **{key: np.zeros((16, 64), np.float32)})
  np.savez(tmp_path / "shape.npz", **bad)
  with pytest.raises(ValueError, match=key):
    vit.load_pretrained_npz(tmp_path / "shape.npz", target)

  missing = {k: v for k, v in flat.items() if k != "cls"}
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(ValueError, match="'cls'"):
    vit.load_pretrained_npz(tmp_path / "missing.npz", target)

  deeper = dict(flat, **{"Transformer/encoderblock_2/LayerNorm_0/scale": np.ones(16)})
  np.savez(tmp_path / "deeper.npz", **deeper)
  with pytest.raises(ValueError, match="encoderblock_2"):
    vit.load_pretrained_npz(tmp_path / "deeper.npz", target)


# -- the paper's ImageNet path (appendix A.11) end to end, on tfds' mock data --------------

MOCK_EXAMPLES = 200  # mock data ignores the split's slice: train and test get these
IMAGE_SIZE = 16
RETRAIN_LR = 1e-3
JOB_VIT = dict(TINY, num_layers=1)  # one block: the job compiles five programs of it


def test_a_pretrained_npz_is_checked_before_the_run_writes_anything(tmp_path):
  c = config_lib.base_config()
  c.model.pretrained_npz = str(tmp_path / "missing.npz")
  with pytest.raises(ValueError, match="loads ViT checkpoints, but model.name is 'cnn'"):
    experiment.validate(c)
  c.model.name = "vit_ti16"
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    experiment.validate(c)


@pytest.fixture(scope="module")
def vit_job(tmp_path_factory):
  """(workdir, the written checkpoint's flat params, the mock dataset, the config).

  f_D is trained for 0 steps, so it is whatever pretraining starts from;
  Retrain fine-tunes the same checkpoint for one epoch.
  """
  root = tmp_path_factory.mktemp("vit_job")
  source = vit.ViT(num_classes=10, **JOB_VIT).init(
      jax.random.key(7), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))["params"]
  # Perturbed away from any fresh initialisation (zeros, ones, small normals).
  rng = np.random.default_rng(0)
  source = jax.tree.map(lambda p: np.asarray(p) + rng.normal(size=p.shape).astype(np.float32),
                        source)
  npz = str(root / "vit_tiny.npz")
  vit.save_npz(npz, source)
  data_dir = str(root / "tfds")
  with pytest.MonkeyPatch.context() as mp, tfds.testing.mock_data(num_examples=MOCK_EXAMPLES,
                                                                  data_dir=data_dir):
    # Under mock data the builder never counts as prepared; the mock supplies examples.
    mp.setattr(datasets, "prepare", lambda *args, **kwargs: None)
    dataset = datasets.load("imagenet_val", data_dir=data_dir, image_size=IMAGE_SIZE)
    c = config_lib.base_config()
    c.data.update(name="imagenet_val", data_dir=data_dir, image_size=IMAGE_SIZE)
    c.model.update(name="vit_ti16", pretrained_npz=npz)
    c.model.kwargs.update(JOB_VIT)
    c.update(seeds=(0,), setup="class", batch_size=32, eval_batch_size=100,
             forget_class=int(np.bincount(dataset.train_labels).argmax()),
             checkpoint_every_steps=10_000, log_every_steps=10_000)
    c.pretrain.epochs = 0
    c.retrain.update(epochs=1, lr=RETRAIN_LR)
    c.mixunlearn.epochs = 1
    c.asr.trees = 10
    c.tsne.samples = 50
    workdir = str(root / "workdir")
    experiment.run(c, workdir)
  return workdir, vit.flatten(source), dataset, c


def test_vit_job_writes_a_table_with_both_mixunlearn_modes(vit_job):
  workdir, _, _, _ = vit_job
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert list(results["models"]) == ["initial", "retrain", "mixunlearn_aware",
                                     "mixunlearn_agnostic"]
  for entry in results["models"].values():
    assert all(np.isfinite(entry[m]["mean"]) for m in ("Test_r", "Test_f", "ASR"))
  with open(os.path.join(workdir, "results.md")) as f:
    rows = [line.split("|")[1].strip() for line in f if line.startswith("| ")]
  assert rows[1:] == list(results["models"])
  assert os.path.getsize(os.path.join(workdir, "plots", "tsne_seed0.png")) > 0


def test_f_d_is_the_written_npz_and_retrain_fine_tunes_it(vit_job):
  workdir, source, dataset, config = vit_job
  model = vit.ViT(num_classes=dataset.num_classes, **JOB_VIT)
  # f_D after 0 steps: every weight but the head from the file; the embedding (the class
  # token before the head) is then the file's, computed here on numpy-normalised images.
  with np.load(os.path.join(workdir, "seed_0", "eval", "initial_embed.npz")) as f:
    saved = dict(f)
  images = np.where((saved["set"] == "test")[:, None, None, None],
                    dataset.test_images[saved["index"]], dataset.train_images[saved["index"]])
  images = (images / 255.0 - np.asarray(dataset.mean)) / np.asarray(dataset.std)
  params = {k: v for k, v in source.items() if not k.startswith("head/")}
  params["head/kernel"] = np.zeros((TINY["hidden_size"], dataset.num_classes), np.float32)
  params["head/bias"] = np.zeros((dataset.num_classes,), np.float32)
  _, features = model.apply({"params": traverse_util.unflatten_dict(params, sep="/")},
                            images.astype(np.float32))
  np.testing.assert_allclose(saved["embed"], features["embed"], atol=1e-4, rtol=1e-4)

  # Retrain: one epoch of Adam from the same file, so no weight but the head's is further
  # from it than Adam's step bound (Kingma & Ba 2015, §2.1: lr (1 - β1) / sqrt(1 - β2) when
  # 1 - β1 > sqrt(1 - β2)) times the steps; a fresh initialisation is about 1 away.
  created = models.create("vit_ti16", num_classes=dataset.num_classes, **JOB_VIT)
  state = supervised.create_train_state(created, optax.adam(RETRAIN_LR), jax.random.key(0),
                                        dataset.image_shape, parallel.make_mesh())
  retrained = vit.flatten(jax.device_get(
      loop.restore_finished(os.path.join(workdir, "seed_0", "retrain"), state).state.params))
  remain = np.sum(dataset.train_labels != config.forget_class)
  bound = math.ceil(remain / config.batch_size) * RETRAIN_LR * 0.1 / math.sqrt(0.001)
  fresh = vit.flatten(jax.device_get(state.params))
  moved = []
  for key, value in retrained.items():
    if key.startswith("head/"):
      continue
    assert np.max(np.abs(value - source[key])) <= bound, key
    assert np.max(np.abs(fresh[key] - source[key])) > 10 * bound, key
    moved.append(np.max(np.abs(value - source[key])))
  assert max(moved) > 0
