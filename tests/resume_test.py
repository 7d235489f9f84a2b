"""Resume: a run killed with SIGKILL inside any method ends with exactly the same metrics."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mixunlearn_jax.models import onednn
from tests import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, *extra):
  return [sys.executable, "-m", "mixunlearn_jax.main", "--config=tests/tiny_config.py",
          f"--workdir={workdir}", *extra]


def env(devices):
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def metrics_of(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    models = json.load(f)["models"]
  timing = ("seconds", "examples_per_sec", "gap", "distance_to_retrain")
  return {name: {k: v["per_seed"] for k, v in entry.items() if k not in timing}
          for name, entry in models.items()}


def kill_when(cmd, devices, pattern):
  """Starts `cmd`, SIGKILLs it once a path matches `pattern`; False if it ended first."""
  process = subprocess.Popen(cmd, cwd=REPO, env=env(devices), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while (not glob.glob(pattern, recursive=True) and process.poll() is None
         and time.time() < deadline):
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  return bool(glob.glob(pattern, recursive=True))


# The sub-stages to kill inside ("" is the method's own folder) where one kill is not enough.
PHASES = {"scrub": ("epoch1_max", "epoch2_min"),
          # the initial ensemble's stage (setup), then the retraining in the method's folder
          "sisa": ("train_slice1", ""),
          # a VAE's sub-stage, the unlearning phase and the repair phase
          "laf_r": ("forget_vae", "unlearn", "repair")}
# Every other method is killed once, in its first (sub-)stage to save step 2: T-S in its
# teacher's training, LAF and L-Mix in the forget VAE's (each one kill: the suite's time).


def kill_points(workdir):
  """Step 2 of every method's first (sub-)stage, and of each phase listed in PHASES."""
  points = []
  for name in tiny_config.get_config().methods:
    folder = os.path.join(workdir, "seed_0", f"unlearn_{name}")
    phases = PHASES.get(name, ("**",))
    points += [os.path.join(folder, phase, "checkpoints", "2") for phase in phases]
  return points


def test_sigkill_in_every_method_then_rerun_gives_identical_metrics(tmp_path):
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  first = subprocess.run(command(reference), cwd=REPO, env=env(1), check=True,
                         capture_output=True, text=True, timeout=600)
  # One device: oneDNN's path where it builds (models_test checks the fallback elsewhere).
  assert ("oneDNN convolutions enabled" in first.stderr) == onednn.available()
  # Checkpoints every 2 steps, so that each kill lands inside a stage; the
  # interval is operational, so the rerun of the same workdir accepts it.
  frequent = "--config.checkpoint_every_steps=2"
  for pattern in kill_points(killed):
    assert kill_when(command(killed, frequent), 1, pattern), f"ran past {pattern}"
    assert not os.path.exists(killed / "results.json")
  subprocess.run(command(killed), cwd=REPO, env=env(1), check=True, capture_output=True,
                 timeout=600)
  assert metrics_of(killed) == metrics_of(reference)


# Two devices run the convolutions on XLA's path (oneDNN has no partitioning rule).
def test_sigkill_during_unlearning_on_two_devices_gives_identical_metrics(tmp_path):
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  only = "--config.methods=('mixunlearn_aware',)"
  first = subprocess.run(command(reference, only), cwd=REPO, env=env(2), check=True,
                         capture_output=True, text=True, timeout=600)
  assert "oneDNN convolutions enabled" not in first.stderr
  pattern = str(killed / "seed_0" / "unlearn_mixunlearn_aware" / "checkpoints" / "1[05]")
  assert kill_when(command(killed, only), 2, pattern), f"ran past {pattern}"
  subprocess.run(command(killed, only), cwd=REPO, env=env(2), check=True, capture_output=True,
                 timeout=600)
  assert metrics_of(killed) == metrics_of(reference)
