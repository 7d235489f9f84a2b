"""oneDNN's direct convolutions as XLA custom calls, for the CPU.

XLA:CPU runs a convolution as a GEMM over image patches that Eigen packs
block by block; on ResNet-18's CPU step that packing alone was 12% of the
CPU time (docs/performance.md, item 13), and the kernel gradient of a 3x3
convolution on 32x32 maps took twice its forward's time. oneDNN's direct
convolutions need no patches: the three passes of that convolution take
43 / 43 / 49 ms on one core against XLA's 54 / 55 / 96 (item 14).

The kernels live in `onednn_conv.cc`, compiled on first use against the
oneDNN of the `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels
(requirements.txt, x86-64 Linux) and XLA's FFI headers from jaxlib, and
cached under `$XDG_CACHE_HOME/mixunlearn_jax` (`~/.cache` by default).
Without a compiler or the library, `available()` is False and says why, and
the models keep XLA's convolutions.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import site
import subprocess
import sys
import tempfile

from absl import logging
import jax
import jaxlib
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
_TARGETS = {"forward": "OnednnConvForward", "input_grad": "OnednnConvInputGrad",
            "kernel_grad": "OnednnConvKernelGrad"}


def available():
  """Whether the custom calls are registered (building them if need be)."""
  return _load() is None


def unavailable_reason():
  """None if `available()`, else why not, in words."""
  return _load()


def forward(x, w, strides, padding):
  """NHWC x, HWIO w -> NHWC y; `padding` is ((lo, hi), (lo, hi))."""
  size = output_size(x.shape, w.shape, strides, padding)
  out = jax.ShapeDtypeStruct((x.shape[0], *size, w.shape[3]), x.dtype)
  return _call("forward", out, x, w, strides, padding)


def output_size(x_shape, w_shape, strides, padding):
  """(height, width) of a convolution's NHWC output."""
  return [(n + lo + hi - k) // s + 1
          for n, k, s, (lo, hi) in zip(x_shape[1:3], w_shape[:2], strides, padding)]


def input_grad(dy, w, x_shape, strides, padding):
  return _call("input_grad", jax.ShapeDtypeStruct(x_shape, dy.dtype), dy, w, strides, padding)


def kernel_grad(x, dy, w_shape, strides, padding):
  return _call("kernel_grad", jax.ShapeDtypeStruct(w_shape, x.dtype), x, dy, strides, padding)


def _call(target, out, a, b, strides, padding):
  (sh, sw), ((ph_lo, ph_hi), (pw_lo, pw_hi)) = strides, padding
  attrs = dict(sh=sh, sw=sw, ph_lo=ph_lo, ph_hi=ph_hi, pw_lo=pw_lo, pw_hi=pw_hi)
  # Under jax.vmap (SISA's stacked shard models) every operand gets the batch
  # axes, and the kernels run one convolution per batch element.
  return jax.ffi.ffi_call(_TARGETS[target], out, vmap_method="broadcast_all")(
      a, b, **{k: np.int64(v) for k, v in attrs.items()})


@functools.cache
def _load():
  """Builds and registers the custom calls once; returns None or the reason it could not."""
  if sys.platform != "linux":
    return f"the oneDNN wheels are for Linux, not {sys.platform}"
  root = next((p for p in (sys.prefix, site.USER_BASE)
               if p and (pathlib.Path(p) / "include" / "dnnl.hpp").exists()
               and (pathlib.Path(p) / "lib" / "libdnnl.so").exists()), None)
  if root is None:
    return "oneDNN is not installed (pip install onednn-devel-cpu-gomp==2023.2.0)"
  compiler = shutil.which(os.environ.get("CXX", "g++"))
  if compiler is None:
    return "no C++ compiler found (set CXX)"
  try:
    library = ctypes.cdll.LoadLibrary(str(_build(compiler, pathlib.Path(root))))
  except (OSError, subprocess.CalledProcessError) as e:
    return f"building {_SOURCE.name} failed: {getattr(e, 'stderr', '') or e}"
  for name in _TARGETS.values():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
  logging.info("oneDNN convolutions enabled (%s)", root)
  return None


def _build(compiler, root):
  """Compiles the kernels into the cache, unless a build of the same inputs is there.

  The name hashes the source, jaxlib's version and oneDNN's location; the
  library is written under a temporary name and renamed, so processes
  building at once (one per seed) never load a half-written file.
  """
  key = hashlib.sha256(f"{_SOURCE.read_text()}{jaxlib.__version__}{root}".encode()).hexdigest()
  cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
  target = cache / "mixunlearn_jax" / f"onednn_conv-{key[:16]}.so"
  if not target.exists():
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
      partial = pathlib.Path(tmp) / target.name
      subprocess.run(
          [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", str(_SOURCE),
           f"-I{jax.ffi.include_dir()}", f"-I{root / 'include'}", f"-L{root / 'lib'}",
           "-ldnnl", f"-Wl,-rpath,{root / 'lib'}", "-o", str(partial)],
          check=True, capture_output=True, text=True)
      partial.rename(target)
  return target
