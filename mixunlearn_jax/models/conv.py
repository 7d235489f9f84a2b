"""A convolution whose gradients are plain NHWC/HWIO convolutions.

XLA:CPU rewrites the transposed convolutions of a backward pass into the
canonical NHWC/HWIO form its fast (Eigen) kernels take, but not inside a
`lax.cond` branch: there they run on a generic path 5-10x slower. The
MixUnlearn generator update is such a branch (it backpropagates through the
unlearner to the mixed image). Writing the vjp ourselves as canonical
convolutions keeps the branch fast; the numbers match `lax.conv_general_dilated`
(see tests/models_test.py and docs/performance.md).

The kernel gradient needs x and dy transposed. Left alone, XLA:CPU fuses x's
producers (BatchNorm, the residual add, ReLU: up to 15 inputs in ResNet-18)
into that transpose and recomputes them in transposed, strided order, several
times slower than transposing the stored tensor; `_materialized` stops it.

Strided convolutions take the same path: lax's input gradient dilates dy,
another case XLA:CPU runs on its generic path, so ours is one stride-1
convolution per phase of the stride (`_input_grad`).

With `onednn=True`, float32 convolutions whose output is at least
`ONEDNN_MIN_SIDE` pixels on a side run all three passes as oneDNN's direct
convolutions instead (models/onednn.py), which skip Eigen's patch packing.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from mixunlearn_jax.models import onednn as onednn_lib

_NHWC = ("NHWC", "HWIO", "NHWC")
# On smaller maps Eigen's GEMM wins: ResNet-18's 3x3 512-channel convolution
# at 4x4 takes 45-48 ms per pass in XLA and 63-64 ms in oneDNN (one core,
# batch 96); at 8x8 and above oneDNN is faster (docs/performance.md, item 14).
ONEDNN_MIN_SIDE = 8


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, *,
                         onednn=False):
  """Drop-in for flax.linen.Conv's `conv_general_dilated` (2-D, NHWC/HWIO).

  Undilated, ungrouped convolutions, strided or not, get gradients made of
  canonical convolutions (or, with `onednn`, oneDNN's where it is faster);
  every other case goes to `lax.conv_general_dilated` unchanged.
  """
  plain = (not _dilated(lhs_dilation) and not _dilated(rhs_dilation) and feature_group_count == 1
           and lhs.ndim == 4)
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision)
  strides = tuple(window_strides)
  if isinstance(padding, str):  # 'SAME' / 'VALID', as Flax passes them
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  padding = tuple(tuple(p) for p in padding)
  # A strided 1x1 convolution (ResNet's downsampling shortcut) reads every
  # s-th pixel: slicing first makes it a stride-1 one, whose gradients are
  # half the cost of the strided path's (11-13 vs 24-25 ms for both at
  # [96, 32, 32, 64] -> 128, stride 2, 2 cores; lax's: 16 and 20 ms each).
  pointwise = rhs.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0))
  if pointwise:
    lhs, strides = lhs[:, ::strides[0], ::strides[1]], (1, 1)
  if onednn and not onednn_lib.available():
    raise RuntimeError(f"oneDNN convolutions are unavailable: {onednn_lib.unavailable_reason()}.")
  onednn = onednn and lhs.dtype == rhs.dtype == jnp.float32 and min(
      onednn_lib.output_size(lhs.shape, rhs.shape, strides, padding)) >= ONEDNN_MIN_SIDE
  return _conv(lhs, rhs, strides, padding, precision, onednn)


def _dilated(dilation):
  return dilation is not None and any(d != 1 for d in dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, padding, precision, onednn):
  if onednn:
    return onednn_lib.forward(x, w, strides, padding)
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC,
                                  precision=precision)


def _conv_fwd(x, w, strides, padding, precision, onednn):
  return _conv(x, w, strides, padding, precision, onednn), (x, w)


def _conv_bwd(strides, padding, precision, onednn, residuals, dy):
  x, w = residuals
  if onednn:
    return (onednn_lib.input_grad(dy, w, x.shape, strides, padding),
            onednn_lib.kernel_grad(x, dy, w.shape, strides, padding))
  dx = _input_grad(dy, w, x.shape, strides, padding, precision)
  dw = _kernel_grad(x, dy, w, strides, padding, precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _kernel_grad(x, dy, w, strides, padding, precision):
  """dw as one canonical convolution: x's channels are its batch, x's batch its
  features, and dy (dilated by the stride) its kernel:
  [Cin, H, W, B] * [Ho, Wo, B, Cout] -> [Cin, kh, kw, Cout].
  """
  dw_padding = [(lo, k - 1 + (n_out - 1) * s + 1 - n_in - lo)
                for k, s, (lo, _), n_in, n_out in zip(w.shape[:2], strides, padding,
                                                      x.shape[1:3], dy.shape[1:3])]
  x_t, dy_t = _materialized(
      lambda x, dy: (x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3)), w, x, dy)
  dw = lax.conv_general_dilated(x_t, dy_t, (1, 1), dw_padding, rhs_dilation=strides,
                                dimension_numbers=_NHWC, precision=precision)
  return dw.transpose(1, 2, 0, 3)


def _materialized(fn, replicated, *operands):
  """fn(*operands), with the operands stored before fn reads them.

  A conditional's operands are always materialised buffers, so no producer
  can be fused into fn; `lax.optimization_barrier`, the obvious tool, does
  not survive XLA:CPU's pipeline. Both branches are fn: the predicate (false
  only for a NaN) cannot change the result, and XLA cannot fold it away. It
  reads `replicated` (the kernel), which every device holds whole, so data
  parallelism adds no communication.
  """
  first = replicated.reshape(-1)[0]
  return lax.cond(first == first, fn, fn, *operands)


def _input_grad(dy, w, x_shape, strides, padding, precision):
  """dx as one stride-1 convolution per phase of the stride, interleaved.

  lax's input gradient of a strided convolution dilates dy, which XLA:CPU
  runs on its generic path (50 ms vs 14 ms forward for ResNet-18's first
  3x3 stride-2 convolution at batch 96; slower still inside `lax.cond`).
  Input pixels whose index is r modulo the stride (a phase) only meet the
  kernel taps t = r + pad_lo modulo the stride, so each phase's gradient is
  a stride-1 convolution of dy with those taps. Stride 1 has one phase: the
  correlation of dy with the whole flipped kernel.
  """
  (sh, sw), (h, wd) = strides, x_shape[1:3]
  rows, cols = -(-h // sh), -(-wd // sw)  # pixels per phase, rounded up
  phases = [[_phase_input_grad(dy, w, (rh, rw), strides, padding, (rows, cols), precision)
             for rw in range(sw)] for rh in range(sh)]
  # [B, rows, sh, cols, sw, C]: pixel (m * sh + rh, n * sw + rw) is phase (rh, rw)'s (m, n).
  dx = jnp.stack([jnp.stack(p, axis=3) for p in phases], axis=2)
  return dx.reshape(x_shape[0], rows * sh, cols * sw, x_shape[3])[:, :h, :wd]


def _phase_input_grad(dy, w, phase, strides, padding, size, precision):
  """dx at input pixels (m * s + r) for r = phase, m < size, along both axes.

  Along one axis, forward y[o] = sum_t x[s*o + t - lo] w[t], so
  dx[s*m + r] = sum_j dy[m + c - j] w[t0 + s*j] with t0 = (r + lo) mod s and
  c = (r + lo - t0) / s: a correlation of dy with the flipped taps.
  """
  starts, pads = [], []
  for r, s, (lo, _), k, n_out, m in zip(phase, strides, padding, w.shape[:2], dy.shape[1:3], size):
    t0 = (r + lo) % s
    c, j = (r + lo - t0) // s, len(range(t0, k, s))
    starts.append(t0)
    pads.append((j - 1 - c, m - n_out + c))  # negative entries crop
  taps = w[starts[0]::strides[0], starts[1]::strides[1]]
  if 0 in taps.shape[:2]:  # a stride above the kernel size: pixels no tap reads
    return jnp.zeros((dy.shape[0], *size, w.shape[2]), dy.dtype)
  dy = lax.pad(dy, jnp.zeros((), dy.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  return lax.conv_general_dilated(dy, jnp.flip(taps, (0, 1)).transpose(0, 1, 3, 2), (1, 1),
                                  "VALID", dimension_numbers=_NHWC, precision=precision)
