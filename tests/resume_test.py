"""Resume: a run killed with SIGKILL inside any kind of stage ends with exactly the same metrics."""

import os

from mixunlearn_jax.models import onednn
from tests import tiny_config
from tests.jobs import FREQUENT, command, metrics_of, run, start_and_kill


# Where to kill: step 2 of each kind of (sub-)stage the methods run ("" is the method's own
# folder). The other methods run the same loop on the same kind of state (one phase of
# parameters and optimizer states: NegGrad+, RandLabel, Boundary Shrink, GLI, Unrolling, the
# other MixUnlearn mode), or the same sub-stages (DSMixup: SISA's; LAF, L-Mix: LAF+R's), so the
# killed job runs these methods only: each of the others would cost training, evaluation and
# no kill.
KILLS = {"mixunlearn_aware": ("",),  # a generator's and an unlearner's state, lax.cond
         "scrub": ("epoch2_min",),  # phases with their own optimizer, `enter`, after others
         "teacher_student": ("teacher",),  # a trained sub-stage: a second model (LAF's VAEs too)
         "sisa": ("train_slice1", ""),  # the vmapped shard ensemble, then its retraining
         "laf_r": ("unlearn", "repair")}  # two optimizers in one phase, then the next phase


def kill_points(workdir):
  """Step 2 of each (sub-)stage in KILLS, in the order the job runs them."""
  return [os.path.join(workdir, "seed_0", f"unlearn_{name}", phase, "checkpoints", "2")
          for name, phases in KILLS.items() for phase in phases]


def test_sigkill_in_each_kind_of_stage_then_rerun_gives_identical_metrics(tiny_job, tmp_path):
  reference, log = tiny_job
  assert set(KILLS) <= set(tiny_config.get_config().methods)
  killed = tmp_path / "killed"
  # One device: oneDNN's path where it builds (models_test checks the fallback elsewhere).
  assert ("oneDNN convolutions enabled" in log) == onednn.available()
  # f_D and Retrain from the reference (multihost_test kills two processes in pretraining).
  args = (f"--config.pretrain.reuse_workdir={reference}",
          f"--config.retrain.reuse_workdir={reference}", f"--config.methods={tuple(KILLS)}")
  for pattern in kill_points(killed):
    assert start_and_kill(command(killed, FREQUENT, *args), 1, pattern), f"ran past {pattern}"
    assert not os.path.exists(killed / "results.json")
  run(killed, *args)
  # A method's stages do not depend on which others the job runs: the reference's rows.
  expected = {name: row for name, row in metrics_of(reference).items()
              if name in ("initial", "retrain", *KILLS)}
  assert metrics_of(killed) == expected

