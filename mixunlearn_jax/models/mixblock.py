"""MixBlock: the adaptive-mask generator g of MixUnlearn (AdAutoMix's mixer)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

UPSAMPLING = ("bilinear", "nearest")
_LAMBDA_EPS = 1e-6


class MixBlock(nn.Module):
  """Maps frozen feature maps of a forget and a remain batch to a 2-channel mask.

  Inputs: `feat_forget`, `feat_remain` = h_D(x_f), h_D(x_r), both [B,H,W,C];
  `lam` a scalar or [B] mixing ratio; `image_hw` the (height, width) of the
  images the mask will mix. Returns M of shape [B, image_h, image_w, 2] whose
  two channels sum to one at every pixel (M0 weights x_f, M1 weights x_r).

  AdAutoMix's λ options: `lambda_logits` adds log λ and log(1 - λ) to the two
  channels' logits, so that logits near zero (a fresh generator's) give
  M0 = λ and the mask's mean follows λ instead of 1/2; `upsampling` is
  'bilinear' or 'nearest' (AutoMix's), from the feature map to the image.
  """
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's (see models/conv.py)
  lambda_logits: bool = False
  upsampling: str = "bilinear"

  @nn.compact
  def __call__(self, feat_forget, feat_remain, lam, image_hw):
    batch, height, width, channels = feat_forget.shape
    hidden = channels // 2
    lam = jnp.broadcast_to(jnp.reshape(jnp.asarray(lam, jnp.float32), (-1, 1, 1, 1)),
                           (batch, 1, 1, 1))
    lam_map = jnp.broadcast_to(lam, (batch, height, width, 1))
    a = jnp.concatenate([feat_forget.astype(jnp.float32), lam_map], axis=-1)
    b = jnp.concatenate([feat_remain.astype(jnp.float32), 1.0 - lam_map], axis=-1)

    conv = lambda features, name: nn.Conv(  # noqa: E731
        features, (1, 1), dtype=self.dtype, name=name,
        conv_general_dilated=self.conv_general_dilated,
        kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.zeros)
    query, key, value = conv(hidden, "query"), conv(hidden, "key"), conv(1, "value")
    flat = lambda t: t.reshape(batch, height * width, -1).astype(jnp.float32)  # noqa: E731
    q_a, q_b = flat(nn.relu(query(a))), flat(nn.relu(query(b)))
    k_a, k_b = flat(nn.relu(key(a))), flat(nn.relu(key(b)))
    v_a, v_b = flat(value(a)), flat(value(b))

    def attend(q, k, v):
      logits = jnp.einsum("bic,bjc->bij", q, k) / jnp.sqrt(jnp.float32(hidden))
      return jnp.einsum("bij,bjo->bio", jax.nn.softmax(logits, axis=-1), v)

    m = jnp.concatenate([attend(q_a, k_b, v_a), attend(q_b, k_a, v_b)], axis=-1)
    m = m.reshape(batch, height, width, 2)
    # jax.image.resize samples at half-pixel centres (align_corners=False).
    m = jax.image.resize(m, (batch, *image_hw, 2), self.upsampling, antialias=False)
    if self.lambda_logits:
      # Clipped so that a Beta draw of exactly 0 or 1 keeps the logits finite.
      lam = jnp.clip(lam, _LAMBDA_EPS, 1.0 - _LAMBDA_EPS)
      m = m + jnp.log(jnp.concatenate([lam, 1.0 - lam], axis=-1))
    return jax.nn.softmax(m, axis=-1)


def mix_images(x_forget, x_remain, mask):
  """x_mix = x_f * M0 + x_r * M1."""
  mask = mask.astype(x_forget.dtype)
  return x_forget * mask[..., :1] + x_remain * mask[..., 1:]
