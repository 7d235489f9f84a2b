"""Vision Transformer whose parameter names match the public ViT checkpoints.

Module and parameter names mirror google-research/vision_transformer (the
`.npz` files such as `ViT-B_16.npz`, e.g.
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`), so
`load_pretrained_npz` is a direct name mapping rather than a conversion table.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

VIT_VARIANTS = {
    "vit_ti16": dict(patch_size=16, hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "vit_s16": dict(patch_size=16, hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "vit_b16": dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
}

_POS_EMBED = "Transformer/posembed_input/pos_embedding"


class AddPositionEmbs(nn.Module):
  """Learned position embeddings, one row per token (class token first)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
    return x + pos.astype(self.dtype)


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda features: nn.Dense(features, dtype=self.dtype,
                                      kernel_init=nn.initializers.xavier_uniform(),
                                      bias_init=nn.initializers.normal(stddev=1e-6))
    # Two statements so the expansion is created first and named Dense_0.
    y = nn.gelu(dense(self.mlp_dim)(x))
    return dense(x.shape[-1])(y)


class Encoder1DBlock(nn.Module):
  """Pre-LayerNorm self-attention + MLP block.

  The explicit names carry the pre-Linen numbering of the public checkpoints
  (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3).
  """
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm(dtype=self.dtype, name="LayerNorm_0")(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        name="MultiHeadDotProductAttention_1")(y)
    x = x + y
    y = nn.LayerNorm(dtype=self.dtype, name="LayerNorm_2")(x)
    return x + MlpBlock(self.mlp_dim, dtype=self.dtype, name="MlpBlock_3")(y)


class Encoder(nn.Module):
  """Returns the normalised tokens and the raw output of block `mix_layer`."""
  num_layers: int
  num_heads: int
  mlp_dim: int
  mix_layer: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = AddPositionEmbs(dtype=self.dtype, name="posembed_input")(x)
    mix = None
    for i in range(self.num_layers):
      x = Encoder1DBlock(self.num_heads, self.mlp_dim, dtype=self.dtype,
                         name=f"encoderblock_{i}")(x)
      if i == self.mix_layer:
        mix = x
    return nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x), mix


class ViT(nn.Module):
  """ViT classifier; `features['embed']` is the pre-logits class token.

  `features['mix']` holds the patch tokens (class token dropped) after block
  `mix_layer` (default: the middle block), laid out as a [B, H/p, W/p, hidden]
  map so the MixBlock treats it like a conv feature map. There is no
  `pre_logits` layer (the in21k checkpoints' one is dropped on loading), and
  the head is zero-initialised as in the reference fine-tuning code.
  """
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  num_classes: int = 10
  patch_size: int = 16
  mix_layer: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No dropout: train and eval are the same function.
    mix_layer = self.num_layers // 2 if self.mix_layer is None else self.mix_layer
    if not 0 <= mix_layer < self.num_layers:
      raise ValueError(f"mix_layer={mix_layer} is not a block index in [0, {self.num_layers}).")
    b, h, w, _ = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"Image size {h}x{w} is not a multiple of the patch size {p}.")
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                name="embedding")(x.astype(self.dtype))
    x = x.reshape(b, (h // p) * (w // p), self.hidden_size)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden_size))
    cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, self.hidden_size))
    x, mix = Encoder(self.num_layers, self.num_heads, self.mlp_dim, mix_layer, dtype=self.dtype,
                     name="Transformer")(jnp.concatenate([cls, x], axis=1))
    embed = x[:, 0]
    logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                      name="head")(embed)
    mix = mix[:, 1:].reshape(b, h // p, w // p, self.hidden_size)
    return logits, {"embed": embed, "mix": mix}


def flatten(params):
  """Params pytree -> {'a/b/kernel': np.ndarray}, the public checkpoint layout."""
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def save_npz(path, params):
  """Writes `params` as an `.npz` that `load_pretrained_npz` can read."""
  np.savez(path, **flatten(params))


def _resize_pos_embedding(pos, shape):
  """Keeps the class-token row and bilinearly resizes the square patch grid."""
  n_old, n_new = pos.shape[1] - 1, shape[1] - 1
  gs_old, gs_new = math.isqrt(n_old), math.isqrt(n_new)
  if (pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != shape[2]
      or gs_old**2 != n_old or gs_new**2 != n_new):
    raise ValueError(f"Checkpoint {_POS_EMBED!r} has shape {pos.shape}, which cannot be resized "
                     f"to the model's {tuple(shape)} (needs square patch grids and equal width).")
  grid = jnp.asarray(pos[0, 1:], jnp.float32).reshape(gs_old, gs_old, -1)
  grid = jax.image.resize(grid, (gs_new, gs_new, grid.shape[-1]), "bilinear")
  return np.concatenate([pos[0, :1], np.asarray(grid).reshape(n_new, -1)])[None]


def load_pretrained_npz(path, params):
  """Returns `params` with every weight taken from the checkpoint at `path`.

  `params` is the target model's freshly initialised `variables['params']`.
  Its `head` is kept (the class count differs), the checkpoint's `pre_logits`
  is ignored, and position embeddings are resized to the model's patch grid
  (jax.image.resize, which antialiases when shrinking). Any other missing,
  unexpected or mis-shaped entry raises a ValueError naming its key, so a
  checkpoint of another depth or width cannot load silently.
  """
  with np.load(path) as f:
    ckpt = dict(f)
  target = traverse_util.flatten_dict(params, sep="/")
  unexpected = sorted(k for k in ckpt if k not in target
                      and not k.startswith(("head/", "pre_logits/")))
  if unexpected:
    raise ValueError(f"Checkpoint {path} has parameters the model lacks: {', '.join(unexpected)}.")
  loaded = {}
  for key, init in target.items():
    if key.startswith("head/"):
      loaded[key] = init
      continue
    if key not in ckpt:
      raise ValueError(f"Parameter {key!r} of the model is missing from checkpoint {path}.")
    value = ckpt[key]
    if key == _POS_EMBED and value.shape != init.shape:
      value = _resize_pos_embedding(value, init.shape)
    if value.shape != init.shape:
      raise ValueError(f"Checkpoint {key!r} has shape {value.shape}; the model needs "
                       f"{tuple(init.shape)}.")
    loaded[key] = jnp.asarray(value, dtype=init.dtype)
  return traverse_util.unflatten_dict(loaded, sep="/")
