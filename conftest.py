"""Makes the repository root importable for pytest and gives tests 4 CPU devices.

These must be set before JAX initialises its backend, so they live here.
PJRT_NPROC sizes the CPU client's thread pool: with more fake devices than
cores, a collective can otherwise block every pool thread while the devices
it waits for still need one (XLA aborts after a 40 s rendezvous timeout).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("PJRT_NPROC", "8")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mixunlearn_jax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

runtime.configure()  # what the entry points do, before JAX starts its backend
