"""Makes the repository root importable for pytest and gives tests 4 CPU devices.

The device count must be set before JAX initialises its backend, so it lives
here rather than in a test module.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
