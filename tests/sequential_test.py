"""Sequential deletion requests: the requests' sets, each Retrain's data, resume after SIGKILL."""

import json

import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import sequential
from tests.jobs import FREQUENT, command, run, start_and_kill

LABELS = np.repeat(np.arange(10), 30)


def config_of(setup, requests=3):
  config = config_lib.base_config()
  config.setup, config.requests, config.forget_fraction = setup, requests, 0.3
  return config


def test_class_requests_are_the_next_classes_and_data_requests_cut_d_f_in_parts():
  split = data.make_split("class", LABELS, num_classes=10, seed=0)
  requests = sequential.request_sets(config_of("class"), split, 10, seed=0)
  assert [np.unique(LABELS[r]).tolist() for r in requests] == [[0], [1], [2]]
  assert [len(r) for r in requests] == [30, 30, 30]
  with pytest.raises(ValueError, match="needs classes"):
    sequential.request_sets(config_of("class", requests=11), split, 10, seed=0)
  split = data.make_split("data", LABELS, num_classes=10, seed=0, forget_fraction=0.3)
  requests = sequential.request_sets(config_of("data"), split, 10, seed=0)
  assert np.concatenate(requests).tolist() != split.forget.tolist()  # shuffled into parts
  assert sorted(np.concatenate(requests).tolist()) == split.forget.tolist()
  assert [len(r) for r in requests] == [15, 15, 15]  # 10% of each of classes 5-9 per request


def test_each_request_leaves_out_every_request_so_far_and_keeps_the_rest():
  split = data.make_split("data", LABELS, num_classes=10, seed=1, forget_fraction=0.3)
  requests = sequential.request_sets(config_of("data"), split, 10, seed=1)
  for r, after in enumerate(sequential.cumulative_splits(split, requests), 1):
    deleted = np.concatenate(requests[:r])
    assert sorted(after.forget.tolist()) == sorted(deleted.tolist())
    assert not np.isin(after.remain, deleted).any()
    assert sorted(np.concatenate([after.forget, after.remain]).tolist()) == list(range(300))


# NegGrad+ at lr 1e30 diverges in request 1: its lineage ends there.
ARGS = ("--config.requests=3", "--config.methods=('mixunlearn_aware','neggrad')",
        "--config.pretrain.epochs=1", "--config.retrain.epochs=1", "--config.mixunlearn.epochs=2",
        "--config.neggrad.epochs=1", "--config.neggrad.lr=1e30",
        "--config.asr.trees=10")  # the attack's fit costs more than these models here


def per_request_metrics(workdir):
  tables = []
  for r in (1, 2, 3):
    with open(workdir / f"results_request_{r}.json") as f:
      models = json.load(f)["models"]
    tables.append({name: {m: entry[m]["per_seed"] for m in ("Test_r", "Test_f", "ASR")}
                   for name, entry in models.items()})
  return tables


def test_three_requests_resume_after_sigkill_and_retrain_never_sees_a_deleted_class(tmp_path):
  reference, killed = tmp_path / "reference", tmp_path / "killed"
  log = run(reference, *ARGS).stderr
  # Requests 2 and 3 read request 1's record of the divergence: they do not run it again.
  assert log.count("seed_0/request_1/unlearn_neggrad: compiled in") == 1, log[-3000:]
  expected = per_request_metrics(reference)
  for table in expected:  # Retrain after request r never saw classes 0..r-1: Test_f is 0
    assert table["retrain"]["Test_f"] == [0.0]
    assert table["initial"]["Test_f"][0] > 90
  assert "| mixunlearn_aware |" in (reference / "results.md").read_text()
  assert "| neggrad | diverged | diverged | diverged |" in (reference / "results.md").read_text()
  for r in (1, 2, 3):  # each request names the stage where the lineage diverged
    with open(reference / f"results_request_{r}.json") as f:
      assert json.load(f)["diverged"]["neggrad"]["0"]["stage"] == "seed_0/request_1/unlearn_neggrad"
  pattern = str(killed / "seed_0" / "request_2" / "unlearn_mixunlearn_aware" / "checkpoints" / "2")
  reuse = f"--config.pretrain.reuse_workdir={reference}"
  assert start_and_kill(command(killed, *ARGS, FREQUENT, reuse), 1, pattern), f"ran past {pattern}"
  assert (killed / "seed_0" / "request_1" / "eval" / "mixunlearn_aware.json").exists()
  run(killed, *ARGS, reuse)
  assert per_request_metrics(killed) == expected
