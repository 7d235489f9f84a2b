"""Makes the repository root importable for pytest, gives tests 4 CPU devices and one cache.

These must be set before JAX initialises its backend, so they live here.
PJRT_NPROC sizes the CPU client's thread pool: with more fake devices than
cores, a collective can otherwise block every pool thread while the devices
it waits for still need one (XLA aborts after a 40 s rendezvous timeout).

Compilation dominates the suite's many short jobs, most of all the restarts
of the SIGKILL tests, which compile again what the killed process had
compiled: one persistent compilation cache for the session (this process and
every job it starts) loads those programs instead. A cache hit returns the
same executable, so no result depends on it.
"""

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("PJRT_NPROC", "8")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jax_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

from mixunlearn_jax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import jobs  # pylint: disable=g-import-not-at-top,wrong-import-position

runtime.configure()  # what the entry points do, before JAX starts its backend


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_job(tmp_path_factory):
  """(workdir, stderr) of tests/tiny_config.py run to its end by the CLI on one device.

  Every registered method; the end-to-end tests read it, the SIGKILL test
  compares its killed runs with it.
  """
  workdir = tmp_path_factory.mktemp("tiny_job")
  return workdir, jobs.run(workdir).stderr
