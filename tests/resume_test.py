"""Resume: a run killed with SIGKILL during unlearning ends with exactly the same metrics."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir):
  return [sys.executable, "-m", "mixunlearn_jax.main", "--config=tests/tiny_config.py",
          f"--workdir={workdir}"]


def env(devices):
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def metrics_of(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    models = json.load(f)["models"]
  return {name: {k: v["per_seed"] for k, v in entry.items()
                 if k not in ("seconds", "examples_per_sec", "gap", "distance_to_retrain")}
          for name, entry in models.items()}


# One device runs the convolutions on oneDNN (models/onednn.py), two on XLA's.
@pytest.mark.parametrize("devices", [1, 2])
def test_sigkill_during_unlearning_then_rerun_gives_identical_metrics(tmp_path, devices):
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  first = subprocess.run(command(reference), cwd=REPO, env=env(devices), check=True,
                         capture_output=True, text=True, timeout=600)
  assert ("oneDNN convolutions enabled" in first.stderr) == (devices == 1)

  process = subprocess.Popen(command(killed), cwd=REPO, env=env(devices), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  pattern = str(killed / "seed_0" / "unlearn_mixunlearn_aware" / "checkpoints" / "1[05]")
  deadline = time.time() + 600
  while not glob.glob(pattern) and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert glob.glob(pattern), "the run ended before unlearning wrote a checkpoint"
  assert not os.path.exists(killed / "results.json")

  subprocess.run(command(killed), cwd=REPO, env=env(devices), check=True, capture_output=True,
                 timeout=600)
  assert metrics_of(killed) == metrics_of(reference)
