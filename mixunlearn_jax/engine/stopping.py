"""The stopping rule: stop unlearning once D_f looks like data the model never trained on.

Every `check_every` steps (counted over a method's phases together) one
compiled function scores the current model on a fixed pool held on the
devices and returns four scalars to the host:

- `auc`: the AUC of the loss attack (low cross-entropy = member) between a
  fixed sample of D_f (`probe`) and held-out samples of the same classes
  (`twin`), class by class as many of each; 0.5 means indistinguishable;
- `forget_acc`: accuracy on that sample of D_f;
- `heldout_forget_acc`: accuracy on those held-out samples of D_f's classes;
- `remain_acc`: held-out accuracy that unlearning should keep (`guard`):
  the other classes in the class setup, every held-out sample otherwise.

The held-out samples are a pool carved from the training set before
pretraining (`Split.heldout`): no model trains on them and no metric scores
them. A check keeps utility when remain_acc is at most `guard_tolerance`
points below f_D's. The rule is met when |auc - 0.5| <= auc_tolerance (and,
in the class setup, heldout_forget_acc <= forget_accuracy) at `patience`
checks in a row after step 0 that keep utility. The guard arms at the first
check that keeps utility, normally the check at step 0 of the method's
starting model (f_D for most methods; a method that retrains from scratch,
like SISA, arms it once it has learnt) and stops at once at a later check
that does not. The decision is a function of the checks alone, which every
checkpoint saves, so a resumed run stops where an uninterrupted one does.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import parallel

FORGOTTEN, GUARD, BUDGET = "forgotten", "guard", "budget"
_PROBE_STREAM = 11  # separates the D_f sample's randomness from other uses of the seed


@dataclasses.dataclass(frozen=True)
class Rule:
  """The thresholds of `config.stop` (see config.py); `forget_accuracy` None outside 'class'."""
  check_every: int
  patience: int
  auc_tolerance: float
  guard_tolerance: float
  forget_accuracy: float | None
  dry_run: bool = False

  @classmethod
  def from_config(cls, config):
    s = config.stop
    return cls(s.check_every, s.patience, s.auc_tolerance, s.guard_tolerance,
               s.forget_accuracy if config.setup == "class" else None, s.dry_run)


def decide(checks, rule, baseline):
  """(reason, step) of the first stop `rule` makes over `checks`, or None.

  `baseline` is f_D's remain_acc. A model without f_D's utility is never
  called forgotten: an untrained one would look it.
  """
  streak, armed = 0, False
  for check in checks:
    keeps = check["remain_acc"] >= baseline - rule.guard_tolerance  # False for NaN
    if armed and not keeps:
      return GUARD, check["step"]
    armed = armed or keeps
    forgotten = (keeps and check["step"] > 0 and abs(check["auc"] - 0.5) <= rule.auc_tolerance
                 and (rule.forget_accuracy is None
                      or check["heldout_forget_acc"] <= rule.forget_accuracy))
    streak = streak + 1 if forgotten else 0
    if streak >= rule.patience:
      return FORGOTTEN, check["step"]
  return None


# -- the statistics ------------------------------------------------------------------------


def attack_auc(losses, members, nonmembers):
  """AUC of calling low loss a member: P(l_nonmember > l_member) + P(equal) / 2.

  `members`, `nonmembers`: 0/1 weights over `losses` (padding is in neither).
  By sorting, not over all pairs, so that a large pool stays cheap.
  """
  # Rows that are no non-member sort first as -inf, which no loss equals or falls below.
  others = jnp.sort(jnp.where(nonmembers > 0, losses, -jnp.inf))
  below_or_tied = jnp.searchsorted(others, losses, side="right")
  tied = below_or_tied - jnp.searchsorted(others, losses, side="left")
  higher = len(others) - below_or_tied
  return jnp.sum(members * (higher + 0.5 * tied)) / (jnp.sum(members) * jnp.sum(nonmembers))


def statistics(probs, member_probs, labels, pool):
  """The rule's four scalars from one model's outputs on the pool (accuracies in %).

  `probs` give the accuracies, `member_probs` the attack's losses (a method's
  `attack_predict` outputs where it has one); `pool` holds the 0/1 masks.
  """
  losses = -jnp.log(jnp.maximum(jnp.take_along_axis(member_probs, labels[:, None], -1)[:, 0],
                                1e-12))
  correct = (jnp.argmax(probs, -1) == labels).astype(jnp.float32)
  accuracy = lambda mask: 100.0 * jnp.sum(mask * correct) / jnp.sum(mask)  # noqa: E731
  return {"auc": attack_auc(losses, pool["probe"], pool["twin"]),
          "forget_acc": accuracy(pool["probe"]),
          "heldout_forget_acc": accuracy(pool["twin"]),
          "remain_acc": accuracy(pool["guard"])}


def measure(result, predict, attack_predict=None):
  """`fn(state, pool) -> statistics` of the model `result(state)`, the pool in chunks.

  predict, attack_predict: (result, images) -> probabilities, as a Program's.
  """

  def fn(state, pool):
    variables = result(state)

    def outputs(images):
      probs = predict(variables, images)
      return probs, attack_predict(variables, images) if attack_predict else probs

    probs, member_probs = jax.lax.map(outputs, pool["image"])
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    masks = {k: flat(pool[k]) for k in ("probe", "twin", "guard")}
    return statistics(flat(probs).astype(jnp.float32), flat(member_probs).astype(jnp.float32),
                      flat(pool["label"]), masks)

  return fn


# -- the pool ------------------------------------------------------------------------------


def pool_indices(split, setup, seed):
  """(probe, twin, guard): training indices of the D_f sample and its held-out comparisons.

  Per class of D_f, as many D_f samples (a fixed draw) as the pool holds of
  that class, so the two samples the AUC compares have the same classes.
  """
  if split.heldout is None or not len(split.heldout):
    raise ValueError("The stopping rule needs a held-out pool: build the split with "
                     "stop.enabled (it carves stop.heldout_per_class samples per class).")
  labels, heldout = split.train_labels, split.heldout
  rng = np.random.default_rng([seed, _PROBE_STREAM])
  classes = np.unique(labels[split.forget])
  twin = heldout[np.isin(labels[heldout], classes)]
  probe = []
  for c in classes:
    members = split.forget[labels[split.forget] == c]
    probe.append(rng.choice(members, min(len(members), np.sum(labels[twin] == c)), replace=False))
  guard = heldout[~np.isin(labels[heldout], classes)] if setup == "class" else heldout
  return np.sort(np.concatenate(probe)), twin, guard


def place_pool(split, setup, seed, *, images, preprocess, chunk, mesh):
  """The pool on the devices: 'image' [n, chunk, ...]; 'label', 'probe', 'twin', 'guard' [n, chunk].

  Rows are the probe then the held-out samples, padded to whole chunks (the
  padding is in no mask); each chunk is sharded over the 'data' axis.
  """
  probe, twin, guard = pool_indices(split, setup, seed)
  rows = np.concatenate([probe, split.heldout])
  size = pipeline.steps_per_epoch(len(rows), chunk) * chunk
  labels = split.train_labels

  def padded(values, dtype):
    out = np.zeros(size, dtype)
    out[:len(rows)] = values
    return out.reshape(-1, chunk)

  # The probe holds D_f indices, twin and guard held-out ones: each row is in one set.
  host = {name: padded(np.isin(rows, indices), np.float32)
          for name, indices in [("probe", probe), ("twin", twin), ("guard", guard)]}
  host["label"] = padded(labels[rows], np.int32)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  placed = {k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
            for k, v in host.items()}
  # The images through the evaluation pipeline, this process's slice of each chunk.
  local = np.stack([batch["image"] for batch in pipeline.eval_pipeline(
      images, labels, rows, batch_size=chunk, preprocess=preprocess)])
  placed["image"] = jax.make_array_from_process_local_data(
      sharding, local, (size // chunk, chunk, *local.shape[2:]))
  return placed


# -- the rule in the loop ------------------------------------------------------------------


class Watch:
  """The rule over one method's counted phases: one step count and one history of checks.

  The loop (engine/loop.py) asks `due(step)`, calls `check(step, state)` and
  stops when `halt(checks)` gives a reason; `compile(state)` compiles the
  check before its clock starts. After each phase, `advance` adds the
  phase's checks and steps, so the rule runs on across phase boundaries.
  Checks fall on multiples of check_every of the global step, step 0 (the
  method's starting model) included.
  """

  def __init__(self, rule, fn, pool, mesh, baseline):
    """fn: `fn(state, pool) -> statistics` (`measure`); baseline: f_D's statistics."""
    self.rule, self.pool, self.baseline = rule, pool, baseline
    self.jitted = jax.jit(fn, in_shardings=(parallel.replicated(mesh),
                                             jax.tree.map(lambda x: x.sharding, pool)),
                          out_shardings=parallel.replicated(mesh))
    self.compiled = None
    self.offset, self.checks, self.stop = 0, [], None

  def due(self, step):
    """Whether the stage's `step` is a check: step 0 of a later phase is the last one's end."""
    return (self.offset + step) % self.rule.check_every == 0 and (step > 0 or self.offset == 0)

  def compile(self, state):
    """Seconds spent compiling the check (0 once compiled: every phase shares it)."""
    if self.compiled is not None:
      return 0.0
    start = time.perf_counter()
    self.compiled = self.jitted.lower(state, self.pool).compile()
    return time.perf_counter() - start

  def check(self, step, state):
    """The statistics of `state` at the stage's `step`, as host floats, with the global step."""
    values = jax.device_get(self.compiled(state, self.pool))
    return {"step": self.offset + step, **{k: float(v) for k, v in values.items()}}

  def halt(self, checks):
    """The reason to stop after this stage's `checks`, or None (always None in a dry run)."""
    if self.rule.dry_run:
      return None
    decision = decide([*self.checks, *checks], self.rule, self.baseline["remain_acc"])
    return decision[0] if decision else None

  def advance(self, num_steps, result):
    """Adds a finished phase (a StageResult); returns whether the rule stopped in it."""
    self.checks += result.stop["checks"]
    if result.stop["stopped"]:
      self.stop = (result.stop["stopped"], self.offset + result.steps)
    self.offset += num_steps
    return self.stop is not None

  def summary(self, budget):
    """What eval/<model>.json records: why and where it stopped (of `budget` steps), the trace."""
    would = decide(self.checks, self.rule, self.baseline["remain_acc"])
    reason, step = self.stop or (BUDGET, budget)
    return {"reason": reason, "step": step, "budget": budget,
            "rule": {"reason": would[0], "step": would[1]} if would else None,
            "dry_run": self.rule.dry_run, "rule_config": dataclasses.asdict(self.rule),
            "initial": self.baseline, "checks": self.checks}


def describe(summary):
  """One line for the log: where and why a method's unlearning stopped."""
  if summary["reason"] == GUARD:
    return (f"stopped by the guard at step {summary['step']} of {summary['budget']}: held-out "
            f"remain accuracy fell more than {summary['rule_config']['guard_tolerance']} points "
            f"below f_D's {summary['initial']['remain_acc']:.2f}")
  if summary["reason"] == FORGOTTEN:
    return f"forgotten at step {summary['step']} of {summary['budget']} (the rule met)"
  met = summary["rule"]
  return (f"ran its budget of {summary['budget']} steps"
          + (f"; the rule would have stopped it at step {met['step']} ({met['reason']})"
             if met else "; the rule was never met"))
