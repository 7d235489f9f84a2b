"""The stopping rule: its statistics against scikit-learn, its decisions, the held-out pool,
and runs on digits that stop early, repeatably, after SIGKILL, and by the guard."""

import functools
import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from mixunlearn_jax import data
from mixunlearn_jax import experiment
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import identity
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import stopping
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.evaluation import metrics
from tests import tiny_config
from tests.jobs import command, run, start_and_kill

# -- the statistics --------------------------------------------------------------------


def test_attack_auc_equals_scikit_learn_with_ties_and_padding():
  rng = np.random.default_rng(0)
  members = rng.exponential(0.5, 40).round(1)  # rounded: many ties, within and across
  nonmembers = rng.exponential(0.8, 55).round(1)
  padding = np.full(7, -3.0)  # in neither set: must not count
  losses = np.concatenate([members, padding, nonmembers]).astype(np.float32)
  in_members = np.r_[np.ones(40), np.zeros(62)].astype(np.float32)
  in_nonmembers = np.r_[np.zeros(47), np.ones(55)].astype(np.float32)
  auc = float(stopping.attack_auc(losses, in_members, in_nonmembers))
  # The attack calls low loss a member: its score is -loss.
  expected = sk_metrics.roc_auc_score(np.r_[np.ones(40), np.zeros(55)],
                                      -np.r_[members, nonmembers])
  assert auc == pytest.approx(expected, abs=1e-6)
  assert 0.5 < expected < 0.9  # the sets differ, but not completely


def test_statistics_equal_numpy_on_given_outputs():
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.ones(4), 30).astype(np.float32)
  member_probs = rng.dirichlet(np.ones(4), 30).astype(np.float32)
  labels = rng.integers(0, 4, 30)
  masks = {k: (rng.random(30) < 0.4).astype(np.float32) for k in ("probe", "twin", "guard")}
  got = jax.device_get(stopping.statistics(probs, member_probs, labels, masks))
  losses = -np.log(member_probs[np.arange(30), labels])
  probe, twin = masks["probe"] > 0, masks["twin"] > 0
  assert got["auc"] == pytest.approx(sk_metrics.roc_auc_score(
      np.r_[np.ones(probe.sum()), np.zeros(twin.sum())], -np.r_[losses[probe], losses[twin]]),
      abs=1e-6)
  correct = probs.argmax(-1) == labels
  for key, mask in [("forget_acc", "probe"), ("heldout_forget_acc", "twin"),
                    ("remain_acc", "guard")]:
    assert got[key] == pytest.approx(100 * correct[masks[mask] > 0].mean(), abs=1e-4)


def test_decide_needs_patience_in_a_row_with_utility_and_guards_once_armed():
  rule = stopping.Rule(check_every=5, patience=2, auc_tolerance=0.05, guard_tolerance=3.0,
                       forget_accuracy=1.0)
  check = lambda step, auc, held, remain=97.0: {  # noqa: E731
      "step": step, "auc": auc, "heldout_forget_acc": held, "remain_acc": remain}
  # In the band, out (the streak restarts), in, in: the second in a row stops, at step 20.
  checks = [check(5, 0.52, 0.0), check(10, 0.60, 0.0), check(15, 0.47, 0.0),
            check(20, 0.54, 1.0)]
  assert stopping.decide(checks, rule, baseline=98.0) == ("forgotten", 20)
  # The class setup's accuracy condition: 2% held-out accuracy on the class is not forgotten.
  assert stopping.decide([check(5, 0.5, 2.0), check(10, 0.5, 2.0)], rule, 98.0) is None
  data_rule = stopping.Rule(5, 2, 0.05, 3.0, forget_accuracy=None)
  assert stopping.decide([check(5, 0.5, 90.0), check(10, 0.5, 90.0)], data_rule, 98.0) == (
      "forgotten", 10)
  # Remain accuracy 94.9 < 98 - 3: the guard, even where the rule is met.
  assert stopping.decide([check(0, 0.9, 99.0), check(5, 0.5, 0.0, remain=94.9)], rule,
                         98.0) == ("guard", 5)
  # Step 0 (the starting model) arms the guard but counts for no streak.
  assert stopping.decide([check(0, 0.5, 0.0), check(5, 0.5, 0.0)], rule, 98.0) is None
  # A model that starts untrained (retrained from scratch) arms the guard once it has learnt,
  # and without utility is not forgotten.
  learning = [check(0, 0.5, 0.0, remain=10.0), check(5, 0.5, 0.0, remain=60.0),
              check(10, 0.5, 0.0, remain=95.5)]
  assert stopping.decide(learning, rule, 98.0) is None
  assert stopping.decide([*learning, check(15, 0.5, 0.0)], rule, 98.0) == ("forgotten", 15)
  assert stopping.decide([*learning, check(15, 0.5, 0.0, remain=90.0)], rule, 98.0) == (
      "guard", 15)


# -- the held-out pool ------------------------------------------------------------------


def test_the_pool_is_outside_every_set_and_absent_by_default():
  labels = data.load("digits").train_labels
  default = data.make_split("class", labels, num_classes=10, seed=3)
  assert default.heldout is None
  np.testing.assert_array_equal(default.train, np.arange(len(labels)))
  for setup in ("class", "data"):
    split = data.make_split(setup, labels, num_classes=10, seed=3, heldout_per_class=12)
    assert np.bincount(labels[split.heldout], minlength=10).tolist() == [12] * 10
    assert not np.intersect1d(split.heldout, split.train).size
    np.testing.assert_array_equal(np.sort(np.r_[split.heldout, split.train]),
                                  np.arange(len(labels)))
    probe, twin, guard = stopping.pool_indices(split, setup, seed=3)
    assert np.isin(probe, split.forget).all() and np.isin(twin, split.heldout).all()
    # The D_f sample has the held-out comparison's classes, as many of each.
    np.testing.assert_array_equal(np.bincount(labels[probe], minlength=10),
                                  np.bincount(labels[twin], minlength=10))
    guarded = set(labels[guard].tolist())
    assert guarded == (set(range(10)) - {0} if setup == "class" else set(range(10)))
  with pytest.raises(ValueError, match="class 0"):
    data.make_split("class", labels, num_classes=10, seed=3, heldout_per_class=500)


def test_the_check_on_the_devices_equals_numpy_on_the_pool():
  dataset = data.load("digits")
  split = data.make_split("data", dataset.train_labels, num_classes=10, seed=0,
                          heldout_per_class=9, forget_fraction=0.3)
  model, mesh = models.create("cnn"), parallel.make_mesh()
  variables = supervised.init_variables(model, jax.random.key(5), (8, 8, 1))
  preprocess = data.Preprocess(dataset.mean, dataset.std)
  # Chunks of 16: the pool's 90 + 45 rows end in a padded chunk.
  pool = stopping.place_pool(split, "data", 0, images=dataset.train_images,
                             preprocess=preprocess, chunk=16, mesh=mesh)
  classify = metrics.classifier_probs(model)
  watch = stopping.Watch(stopping.Rule(1, 1, 0.05, 5.0, None),
                         stopping.measure(lambda v: v, classify), pool, mesh,
                         baseline={"remain_acc": 0.0})
  watch.compile(variables)
  got = watch.check(3, variables)
  probe, twin, guard = stopping.pool_indices(split, "data", 0)
  labels = dataset.train_labels
  everything = metrics.predict_probs(
      metrics.make_predict(classify, mesh), variables, dataset.train_images, labels,
      np.arange(len(labels)), batch_size=120, preprocess=preprocess, mesh=mesh)
  loss = lambda rows: metrics.per_sample_cross_entropy(everything[rows], labels[rows])  # noqa: E731
  assert got["step"] == 3
  assert got["auc"] == pytest.approx(sk_metrics.roc_auc_score(
      np.r_[np.ones(len(probe)), np.zeros(len(twin))], -np.r_[loss(probe), loss(twin)]),
      abs=1e-5)
  for key, rows in [("forget_acc", probe), ("heldout_forget_acc", twin), ("remain_acc", guard)]:
    assert got[key] == pytest.approx(metrics.accuracy(everything[rows], labels[rows]), abs=1e-3)


def test_stage_identity_holds_the_pool_everywhere_and_the_rule_in_methods_only():
  config = tiny_config.get_config()
  neggrad = methods.get("neggrad")
  assert identity.stage_fields(config, "split")["stop.enabled"] is False
  assert "stop.patience" not in identity.stage_fields(config, "unlearn_neggrad", neggrad)
  config.stop.enabled = True
  for stage in ("split", "pretrain", "retrain"):
    fields = identity.stage_fields(config, stage)
    assert fields["stop.heldout_per_class"] == 100 and "stop.patience" not in fields, stage
  assert identity.stage_fields(config, "unlearn_neggrad", neggrad)["stop.patience"] == 3


# -- the rule in the loop, over phases -------------------------------------------------


def counting_watch(forgotten_from, mesh):
  """A Watch over a counter state: the rule's condition holds from step `forgotten_from` on."""

  def fn(state, pool):
    del pool
    met = state["w"] >= forgotten_from
    return {"auc": jnp.where(met, 0.5, 0.9), "forget_acc": 0.0, "heldout_forget_acc": 0.0,
            "remain_acc": 100.0}

  pool = {"x": jax.device_put(np.zeros(4), parallel.replicated(mesh))}
  rule = stopping.Rule(check_every=4, patience=2, auc_tolerance=0.05, guard_tolerance=5.0,
                       forget_accuracy=1.0)
  return stopping.Watch(rule, fn, pool, mesh, baseline={"remain_acc": 100.0})


def count(state, batch, fail_at=None):
  del batch
  w = state["w"] + 1
  return {"w": w}, {"loss": jnp.where(w == fail_at, jnp.nan, 0.0)}


def run_phases(watch, folder, lengths, mesh, fail_at=None):
  """Phases of `lengths` steps on one counter as the job runs a method's; stops as it does."""
  state = {"w": jax.device_put(jnp.zeros((), jnp.int32), parallel.replicated(mesh))}
  ran = 0
  for i, length in enumerate(lengths):
    result = loop.run_stage(
        name=f"phase {i}", directory=str(folder / str(i)), state=state,
        step_fn=functools.partial(count, fail_at=fail_at), batches=lambda start: iter(
            range(start, 100)), num_steps=length, examples_per_step=1, checkpoint_every=3,
        log_every=1, monitor=watch)
    state, ran = result.state, ran + result.steps
    if watch.advance(length, result):
      break
  assert ran == int(state["w"])  # each stage's steps: all of it, or up to where it stopped
  return watch.summary(sum(lengths)), int(state["w"])


@pytest.mark.parametrize("forgotten_from, stop", [(7, 12), (14, 20)])
def test_the_rule_counts_steps_and_its_streak_across_phases(forgotten_from, stop, tmp_path):
  mesh = parallel.make_mesh()
  # Checks at steps 0, 4, 8 (phase 0) and 12, 16, ... (phase 1): met from 8 on, the streak
  # begun in phase 0 ends at 12; met from 16 on, at 20. Phase 2 never runs.
  summary, w = run_phases(counting_watch(forgotten_from, mesh), tmp_path, (10, 20, 5), mesh)
  assert (summary["reason"], summary["step"], summary["budget"], w) == ("forgotten", stop, 35, stop)
  assert [c["step"] for c in summary["checks"]] == list(range(0, stop + 1, 4))
  assert not (tmp_path / "2").exists()


def test_a_stage_resumed_from_its_checkpoint_stops_where_it_would_have(tmp_path):
  mesh = parallel.make_mesh()
  whole, _ = run_phases(counting_watch(14, mesh), tmp_path / "whole", (10, 20), mesh)
  # A NaN at step 18 ends the first try; phase 1's last checkpoint is its step 6 (step 16,
  # saved after that step's check), from which the second try goes on to the check at 20.
  with pytest.raises(loop.NonFiniteLossError):
    run_phases(counting_watch(14, mesh), tmp_path / "resumed", (10, 20), mesh, fail_at=18)
  resumed, w = run_phases(counting_watch(14, mesh), tmp_path / "resumed", (10, 20), mesh)
  assert resumed == whole and w == 20
  # Run again, the stopped stage counts as finished: nothing moves.
  again, w = run_phases(counting_watch(14, mesh), tmp_path / "resumed", (10, 20), mesh)
  assert again == whole and w == 20


# -- runs on digits ---------------------------------------------------------------------

# NegGrad+ at 3x the tiny config's lr forgets class 0 in its second epoch here (at 2x the
# guard stops it); RandLabel at lr 1 (Adam) wrecks every class. Checks every 3 steps, 15 pool
# samples per class; no t-SNE.
RULE = {"stop.enabled": True, "stop.heldout_per_class": 15, "stop.check_every": 3,
        "stop.patience": 2, "stop.auc_tolerance": 0.1, "stop.forget_accuracy": 10.0,
        "neggrad.lr": 0.03, "neggrad.epochs": 3, "randlabel.lr": 1.0, "retrain.epochs": 1,
        "asr.trees": 10, "tsne.samples": 0}
METHODS = ("neggrad", "randlabel")


def rule_config(**changes):
  config = tiny_config.get_config()
  config.methods = METHODS
  for field, value in {**RULE, **changes}.items():
    *parents, leaf = field.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def record_of(workdir, name="neggrad"):
  with open(os.path.join(workdir, "seed_0", "eval", f"{name}.json")) as f:
    return json.load(f)


def without(workdir, copy, name):
  """A copy of `workdir` without method `name`'s stage and evaluation (to run it again)."""
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "seed_0" / f"unlearn_{name}")
  for path in glob.glob(str(copy / "seed_0" / "eval" / f"{name}*")):
    os.remove(path)
  return copy


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
  """The workdir of an in-process digits job with the rule on."""
  workdir = tmp_path_factory.mktemp("stopped")
  experiment.run(rule_config(plots=True), str(workdir))
  return workdir


def test_the_rule_stops_before_the_budget_and_again_at_the_same_step(stopped, tmp_path):
  first = record_of(stopped)
  summary = first["stop"]
  assert summary["reason"] == "forgotten" and summary["step"] < summary["budget"]
  assert summary["rule"] == {"reason": "forgotten", "step": summary["step"]}
  assert [c["step"] for c in summary["checks"]] == list(range(0, summary["step"] + 1, 3))
  assert first["metrics"]["Test_f"] <= 10.0  # forgotten by the test metric too
  with open(stopped / "results.md") as f:
    assert f"{summary['step']}/{summary['budget']} forgotten" in f.read()
  assert (stopped / "plots" / "forgetting_seed0.png").exists()
  # No pool index in D (D_f and D_r), nor among the attack's scored training samples.
  split = data.Split.load(stopped / "seed_0" / "split.npz")
  assert len(split.heldout) == 150
  attack = metrics.AttackSets.make(split.forget, split.remain, 360, 0)
  for indices in (split.train, split.forget, split.remain, attack.members, attack.forget):
    assert not np.isin(split.heldout, indices).any()
  # The method run again from its start stops at the same step, with the same trace.
  again = without(stopped, tmp_path / "again", "neggrad")
  experiment.run(rule_config(), str(again))
  assert record_of(again)["stop"] == summary
  assert record_of(again)["metrics"] == first["metrics"]


def test_a_run_killed_before_the_stop_resumes_to_the_same_stop(stopped, tmp_path):
  summary = record_of(stopped)["stop"]
  killed = without(stopped, tmp_path / "killed", "neggrad")
  flags = [f"--config.{k}={v}" for k, v in RULE.items()] + [
      "--config.methods=('neggrad',)", "--config.checkpoint_every_steps=2"]
  # Killed after its checkpoint of step 4, between the checks of steps 3 and 6.
  folder = killed / "seed_0" / "unlearn_neggrad" / "checkpoints"
  assert summary["step"] > 12
  assert start_and_kill(command(killed, *flags), 4, str(folder / "4")), "ran past step 4"
  assert max(int(step) for step in os.listdir(folder) if step.isdigit()) < summary["step"]
  run(killed, *flags, devices=4)
  assert record_of(killed)["stop"] == summary
  assert record_of(killed)["metrics"] == record_of(stopped)["metrics"]


def test_the_guard_stops_a_destructive_run_and_says_so(stopped):
  summary = record_of(stopped, "randlabel")["stop"]
  assert summary["reason"] == "guard" and summary["step"] < summary["budget"]
  last = summary["checks"][-1]
  assert last["step"] == summary["step"]
  assert last["remain_acc"] < summary["initial"]["remain_acc"] - 5.0
  assert all(c["remain_acc"] >= summary["initial"]["remain_acc"] - 5.0
             for c in summary["checks"][:-1])
  assert "guard" in stopping.describe(summary)
  with open(stopped / "results.md") as f:
    assert f"{summary['step']}/{summary['budget']} guard" in f.read()


def test_the_rule_run_takes_the_shard_ensemble_from_the_fixed_budget_run(stopped, tmp_path):
  """SISA's initial ensemble is work before any deletion request, the same with the rule on
  or off: the rule's run takes it from the fixed-budget run's workdir, and lands where a rule
  run that trains its own does."""
  shared = {"methods": ("sisa",), "pretrain.reuse_workdir": str(stopped),
            "retrain.reuse_workdir": str(stopped)}
  fixed, lent, own = tmp_path / "fixed", tmp_path / "lent", tmp_path / "own"
  experiment.run(rule_config(**shared, **{"stop.dry_run": True}), str(fixed))
  experiment.run(rule_config(**shared, method_setup_reuse_workdir=str(fixed)), str(lent))
  experiment.run(rule_config(**shared), str(own))
  def slices(workdir):
    return sorted(p.name for p in (workdir / "seed_0" / "unlearn_sisa").glob("train_*"))

  assert slices(fixed) == slices(own) == ["train_slice1"]
  assert slices(lent) == []  # nothing trained before the deletion request
  assert record_of(lent, "sisa")["setup_seconds"] == record_of(fixed, "sisa")["setup_seconds"]
  for field in ("metrics", "attack", "stop"):
    assert record_of(lent, "sisa")[field] == record_of(own, "sisa")[field], field
  # An ensemble made with other settings than the stopping rule's is refused, naming them.
  with pytest.raises(ValueError, match="sisa.shards"):
    experiment.run(rule_config(**shared, **{"sisa.shards": 3},
                               method_setup_reuse_workdir=str(fixed)), str(tmp_path / "other"))
