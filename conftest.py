"""Makes the repository root importable for pytest, gives tests 4 CPU devices and one cache.

These must be set before JAX initialises its backend, so they live here.
PJRT_NPROC sizes the CPU client's thread pool: with more fake devices than
cores, a collective can otherwise block every pool thread while the devices
it waits for still need one (XLA aborts after a 40 s rendezvous timeout).

Compilation dominates the suite's many short jobs, most of all the restarts
of the SIGKILL tests, which compile again what the killed process had
compiled: one persistent compilation cache per test process (it and every
job it starts) loads those programs instead. A cache hit returns the same
executable, so no result depends on it. Each pytest-xdist worker makes its
own: JAX writes an entry in place, so two workers compiling one program at
once could read each other's half-written file.

The suite runs on two workers (pytest.ini): a CLI job keeps about 1.2 of
the CI machine's 2 cores busy. Each test file is one unit of work, so a
module's fixtures run once; the files that read the session's `tiny_job`
are one unit, so it runs once too; the longest units start first.
"""

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("PJRT_NPROC", "8")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_OWNER = "MIXUNLEARN_TEST_CACHE_OWNER"  # the test process that made the cache
_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ or _OWNER in os.environ:  # not the user's
  _CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jax_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ[_OWNER] = str(os.getpid())

from mixunlearn_jax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import jobs  # pylint: disable=g-import-not-at-top,wrong-import-position

runtime.configure()  # what the entry points do, before JAX starts its backend


# Units of work (xdist groups) other than "one test file", and the units that start first.
_UNITS = {"engine_test": "tiny_job", "resume_test": "tiny_job", "tsne_test": "tiny_job"}
_LONGEST = ("tiny_job", "multihost_test", "sweep_test", "semi_test", "vit_test")


def _unit(item):
  module = item.module.__name__.rsplit(".", 1)[-1]
  return _UNITS.get(module, module)


def pytest_itemcollected(item):
  item.add_marker(pytest.mark.xdist_group(_unit(item)))  # read by xdist after collection


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST)}
  items.sort(key=lambda item: rank.get(_unit(item), len(rank)))  # stable: units keep their order


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_job(tmp_path_factory):
  """(workdir, stderr) of tests/tiny_config.py run to its end by the CLI on one device.

  Every registered method, with its figures; the end-to-end tests read it,
  the SIGKILL test compares its killed runs with it.
  """
  workdir = tmp_path_factory.mktemp("tiny_job")
  return workdir, jobs.run(workdir, "--config.plots=True").stderr
