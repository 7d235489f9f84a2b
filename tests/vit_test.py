"""ViT: output contract, checkpoint-compatible names, and npz loading."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

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
