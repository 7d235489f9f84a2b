"""The job's CLI in subprocesses, run to their end or SIGKILLed, as the tests that need fresh
processes start it."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 1200  # a busy 2-core machine ran the 14-method job in 430 s
# Checkpoints every 2 steps, so that each kill lands inside a stage; the interval is
# operational, so the rerun of the same workdir accepts it (and a reference saved fewer).
FREQUENT = "--config.checkpoint_every_steps=2"


def command(workdir, *extra, config="tests/tiny_config.py"):
  return [sys.executable, "-m", "mixunlearn_jax.main", f"--config={config}",
          f"--workdir={workdir}", *extra]


def env(devices, **variables):
  """This process's environment with `devices` CPU devices (and the suite's compilation cache)."""
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              **variables)


def run(workdir, *extra, devices=1, check=True, timeout=TIMEOUT):
  """Runs the CLI to its end; returns the CompletedProcess (text output)."""
  return subprocess.run(command(workdir, *extra), cwd=REPO, env=env(devices), check=check,
                        capture_output=True, text=True, timeout=timeout)


def start_and_kill(cmd, devices, pattern):
  """Starts `cmd`, SIGKILLs it once a path matches `pattern`; False if it ended first."""
  process = subprocess.Popen(cmd, cwd=REPO, env=env(devices), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  return kill_when([process], pattern, timeout=600)


def kill_when(processes, pattern, timeout=TIMEOUT):
  """SIGKILLs `processes` once a path matches the glob `pattern` (or one ended, or `timeout`
  passed); True if it matched."""
  deadline = time.time() + timeout
  while (not glob.glob(pattern, recursive=True) and all(p.poll() is None for p in processes)
         and time.time() < deadline):
    time.sleep(0.02)
  kill(processes)
  return bool(glob.glob(pattern, recursive=True))


def kill(processes):
  for process in processes:
    if process.poll() is None:
      process.send_signal(signal.SIGKILL)
    process.wait()


def metrics_of(workdir):
  """{model: {metric: per-seed values}} of a finished workdir, timings left out."""
  with open(os.path.join(workdir, "results.json")) as f:
    models = json.load(f)["models"]
  timing = ("seconds", "compile_seconds", "examples_per_sec", "gap", "distance_to_retrain")
  return {name: {k: v["per_seed"] for k, v in entry.items() if k not in timing}
          for name, entry in models.items()}
