"""Two processes on one machine (127.0.0.1, one CPU device each) run the job as one.

Their results equal one process's on two devices, only process 0 writes
files, both resume after SIGKILL in pretraining and in unlearning (on XLA's
convolutions: oneDNN's run on one device only), and an incomplete
description of the job fails at once. To tell the writers apart in the shared workdir, each process
records the files Python opens for writing (an audit hook), and process 1
runs under umask 077, so the files it creates natively (TensorBoard) are private.
"""

import glob
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mixunlearn_jax.engine import parallel
from tests.jobs import REPO, kill, kill_when, metrics_of

# Tiny budgets (one epoch of f_D and Retrain, two of each method), a checkpoint every 2 steps.
TINY = ("--config.pretrain.epochs=1", "--config.retrain.epochs=1", "--config.mixunlearn.epochs=2",
        "--config.checkpoint_every_steps=2")
BOTH = "--config.methods=('mixunlearn_aware','mixunlearn_agnostic')"
TIMEOUT = 600

# The CLI, with the arguments after -c, appending each path it opens for writing to $WRITES.
RECORDING_CLI = """
import os, runpy, sys
log = open(os.environ["WRITES"], "a", buffering=1)
writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT
def record(event, args):
  if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and args[2] & writing:
    log.write(os.path.abspath(os.fsdecode(args[0])) + "\\n")
sys.addaudithook(record)
sys.argv[0] = "mixunlearn_jax.main"
runpy.run_module("mixunlearn_jax.main", run_name="__main__", alter_sys=True)
"""


def arguments(workdir, *extra):
  return ["--config=tests/tiny_config.py", f"--workdir={workdir}", *TINY, *extra]


def cli(workdir, *extra):
  return [sys.executable, "-m", "mixunlearn_jax.main", *arguments(workdir, *extra)]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(devices, cache, **variables):
  """The test's environment without any job description, with `devices` CPU devices.

  Compilation dominates these runs: a persistent cache lets reruns load the
  programs (process 0's: only it writes the cache).
  """
  inherited = {k: v for k, v in os.environ.items()
               if k not in parallel.EXPLICIT + parallel.AUTO_DETECTED}
  return dict(inherited, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_COMPILATION_CACHE_DIR=str(cache), **variables)


def start_pair(workdir, logs, *extra):
  """Starts processes 0 and 1 of a job on a free port.

  Their output goes to logs/<id>.log, the files they open for writing to logs/<id>.writes.
  """
  os.makedirs(logs, exist_ok=True)
  address = f"127.0.0.1:{free_port()}"
  processes = []
  for process_id in range(2):
    env = environment(1, workdir.parent / "pair_cache",
                      JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                      JAX_PROCESS_ID=str(process_id),
                      WRITES=os.path.join(logs, f"{process_id}.writes"))
    with open(os.path.join(logs, f"{process_id}.log"), "w") as log:
      processes.append(subprocess.Popen(
          [sys.executable, "-c", RECORDING_CLI, *arguments(workdir, *extra)], cwd=REPO, env=env,
          stdout=log, stderr=subprocess.STDOUT, umask=0o077 if process_id else 0o022))
  return processes


def finish_pair(processes, logs):
  """Waits for both processes (killing both past TIMEOUT); returns their output."""
  deadline = time.time() + TIMEOUT
  try:
    for process in processes:
      process.wait(timeout=max(deadline - time.time(), 1))
  finally:
    kill(processes)
  outputs = [open(os.path.join(logs, f"{i}.log")).read() for i in range(2)]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  return outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(root, one process on two devices' workdir, two processes' workdir, their outputs)."""
  root = tmp_path_factory.mktemp("multihost")
  single, pair = root / "single", root / "pair"
  processes = start_pair(pair, root / "pair_logs", BOTH)
  try:  # meanwhile, one process: compilation leaves a core idle
    subprocess.run(cli(single, BOTH), cwd=REPO, env=environment(2, root / "cache"), check=True,
                   capture_output=True, timeout=TIMEOUT)
  except BaseException:
    kill(processes)
    raise
  return root, single, pair, finish_pair(processes, root / "pair_logs")


def test_two_processes_give_the_results_of_one_process_on_two_devices(runs):
  _, single, pair, outputs = runs
  assert not any("oneDNN convolutions enabled" in output for output in outputs)  # 2 devices
  for name in ("forget", "remain"):
    assert (np.load(pair / "seed_0" / "split.npz")[name].tolist()
            == np.load(single / "seed_0" / "split.npz")[name].tolist())
  expected, actual = metrics_of(single), metrics_of(pair)
  assert actual.keys() == expected.keys() == {"initial", "retrain", "mixunlearn_aware",
                                              "mixunlearn_agnostic"}
  for model, entry in expected.items():
    for metric, values in entry.items():  # accuracies and ASR, in points
      np.testing.assert_allclose(actual[model][metric], values, atol=0.5,
                                 err_msg=f"{model} {metric}")
    # The per-sample losses show every example's probabilities, gathered in order.
    for side in ("forget", "test"):
      np.testing.assert_allclose(np.load(pair / "seed_0" / "eval" / f"{model}_losses.npz")[side],
                                 np.load(single / "seed_0" / "eval" / f"{model}_losses.npz")[side],
                                 rtol=1e-3, atol=1e-4, err_msg=f"{model} {side} losses")
  for method in ("mixunlearn_aware", "mixunlearn_agnostic"):
    with np.load(pair / "seed_0" / "eval" / f"{method}_samples.npz") as samples, \
        np.load(single / "seed_0" / "eval" / f"{method}_samples.npz") as reference:
      for key in reference:
        np.testing.assert_allclose(samples[key], reference[key], rtol=1e-3, atol=1e-4)


def test_only_process_zero_writes_files(runs):
  root, _, pair, outputs = runs
  assert ["Results:" in output for output in outputs] == [True, False]
  # Orbax writes checkpoints from every process by design; anything else is process 0's.
  outside_checkpoints = lambda path: "checkpoints" not in path.split(os.sep)  # noqa: E731
  logs = root / "pair_logs"
  writes = [set(filter(outside_checkpoints, (logs / f"{i}.writes").read_text().split()))
            for i in range(2)]
  writes = [{path for path in paths if path.startswith(str(pair) + os.sep)} for paths in writes]
  assert str(pair / "results.json") in writes[0]
  assert not writes[1], f"process 1 wrote {sorted(writes[1])}"
  files = [path for path in glob.glob(str(pair / "**"), recursive=True)
           if os.path.isfile(path) and outside_checkpoints(path)]
  private = [path for path in files if not os.stat(path).st_mode & 0o044]
  assert any(path.endswith(".v2") for path in files) and not private, f"process 1 made {private}"


def test_sigkill_of_both_processes_in_pretraining_and_unlearning_gives_the_same_metrics(runs):
  root, _, pair, _ = runs
  killed, logs = root / "killed", root / "killed_logs"
  # Retrain resumes in pretraining's loop: it comes from the uninterrupted run. One method.
  reuse = (f"--config.retrain.reuse_workdir={pair}", "--config.methods=('mixunlearn_aware',)")
  for stage in ("pretrain", "unlearn_mixunlearn_aware"):
    checkpoint = killed / "seed_0" / stage / "checkpoints" / "2"
    assert kill_when(start_pair(killed, logs, *reuse), str(checkpoint), timeout=TIMEOUT), \
        open(logs / "0.log").read()[-3000:]
    if stage != "pretrain":  # the second start resumed pretraining
      assert all("pretrain: resumed at step" in (logs / f"{i}.log").read_text() for i in range(2))
  assert not (killed / "seed_0" / "eval" / "mixunlearn_aware.json").exists()
  outputs = finish_pair(start_pair(killed, logs, *reuse), logs)
  assert all("unlearn_mixunlearn_aware: resumed at step" in output for output in outputs)
  resumed, uninterrupted = metrics_of(killed), metrics_of(pair)
  assert resumed.keys() == {"initial", "retrain", "mixunlearn_aware"}
  assert resumed == {model: uninterrupted[model] for model in resumed}


ADDRESS = "127.0.0.1:1"


@pytest.mark.parametrize("given, missing", [
    ({"JAX_NUM_PROCESSES": "2"}, "JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID missing"),
    ({"JAX_COORDINATOR_ADDRESS": ADDRESS, "JAX_PROCESS_ID": "1"}, "JAX_NUM_PROCESSES missing"),
    ({"JAX_COORDINATOR_ADDRESS": ADDRESS}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID missing"),
    ({"JAX_COORDINATOR_ADDRESS": ADDRESS, "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_an_incomplete_description_is_an_error_naming_what_is_missing(given, missing):
  with pytest.raises(ValueError, match=missing):
    parallel.maybe_initialize_distributed(given)


def test_a_process_without_its_id_fails_at_once_instead_of_waiting_for_the_coordinator(tmp_path):
  env = environment(1, tmp_path / "cache", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
                    JAX_NUM_PROCESSES="2")
  result = subprocess.run(cli(tmp_path / "w", BOTH), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # a process waiting for the coordinator: 300 s
  assert result.returncode != 0
  assert "JAX_PROCESS_ID missing" in result.stderr
  assert not (tmp_path / "w").exists()
