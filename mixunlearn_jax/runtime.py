"""Process settings the entry points make (not the import) before JAX or tfds start, and
the machine a process computes on.

`configure()` keeps tfds from probing a cloud metadata server and gives
XLA:CPU one flag. XLA:CPU's YNNPACK library runs convolutions' kernel gradients about 2x slower
than Eigen's here, and reductions (BatchNorm's statistics) 10-35x faster
than XLA's own loops. Hand it dots and reductions, not convolutions:
ResNet-18's unlearning step 3.6 -> 2.3 s, its supervised step 1.05 -> 0.62 s
on 2 cores (docs/performance.md, item 8). XLA reads the flag when JAX starts
its first backend; a jaxlib for an accelerator may not know this
experimental CPU flag, so it is only set where the CPU is the backend.
"""

import importlib.util
import os

import jax

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def cpu_is_the_backend():
  """True when JAX will run on the CPU: JAX_PLATFORMS says so, or no accelerator plugin exists."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0] == "cpu"
  return not any(importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu"))


def configure():
  """NO_GCE_CHECK for tfds; on CPU the YNNPACK flag first in XLA_FLAGS unless the user set it.

  First, because XLA silently ignores every flag after a token that is not
  a flag. Call it before JAX's first computation, as the entry points do.
  """
  os.environ.setdefault("NO_GCE_CHECK", "true")
  flags = os.environ.get("XLA_FLAGS", "")
  if cpu_is_the_backend() and YNN_FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{YNN_FLAG}=individual_dot,reduce {flags}".strip()


def machine():
  """Where this process computes, in words: the accelerators' kind and count, or the CPU's model,
  widest vector extension and cores.

  Results records carry it: the CPU kind decides XLA's and oneDNN's kernels, so both a
  stage's time (2.4x between two kinds of this project's 2-core machines) and the last bits
  of its numbers, which then differ as between seeds.
  """
  device = jax.devices()[0]
  if device.platform != "cpu":
    return f"{jax.device_count()} x {device.device_kind}"
  model, flags = "cpu", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:  # not Linux
    pass
  extension = next((x for x in ("avx512f", "avx2", "avx", "neon", "asimd") if x in flags), "")
  return f"{model}{f' ({extension})' if extension else ''}, {os.cpu_count()} cores"
