"""SISA (Bourtoule et al. 2021; BASELINES.md §4) and DSMixup (Zhou et al. 2022; §5).

Exact unlearning by an ensemble of shard models. D is permuted (the method's
seed) and cut into S contiguous shards, each into R slices. Shard s's model
is trained in R stages, stage k on slices 1..k for ⌊kē⌋ - ⌊(k-1)ē⌋ epochs
(ē = 2R/(R+1)·e/R), starting from the weights after stage k-1. The S models
are one stacked pytree trained by one vmapped step, each on its own shard's
batches (one stream side per shard, over a named set). That initial ensemble
exists before any deletion request, so its stages (`train_slice<k>`) are
recorded apart from the unlearning time (`setup_seconds`).

Unlearning D_f: shards without a D_f index keep their models bit for bit.
SISA retrains each affected shard on its surviving points, from the
checkpoint before its first slice with a deleted point (with R = 1, a fresh
model: the shard's own initialisation, which never saw D_f). DSMixup merges
the affected shards in groups of `group_size` (pairs: "mixes two shards"),
pools each group's surviving points, and trains one model on them from
scratch, which replaces the group in the vote (option (i) of §5: fewer
models; an odd one out is retrained as SISA would). The retraining stages
(`retrain_slice<k>`) are the method's phases and its time.

Prediction: a uniform vote over the models' one-hot argmax (`vote='argmax'`)
or softmax; accuracy takes the argmax of the vote shares, so ties go to the
lowest class. The membership attack reads the models' mean softmax
(`attack_outputs='softmax'`) or the vote shares.

Models of one stage train together for their own step counts: a model whose
set is smaller (or that waits for a later slice) is held (`limit`) once its
epochs are done, so every model gets exactly its epochs. The shard axis is
the vmapped one and is replicated like any state; each model's batch is
sharded over the 'data' mesh axis as in every other stage, so any S runs on
any number of devices (the per-model batch must split over them).
"""

import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import base
from mixunlearn_jax.methods import common


def default_config():
  """BASELINES.md §4's suggestion: S = 5, R = 1, constituents on LAF's recipe."""
  c = ml_collections.ConfigDict()
  c.shards = 5  # S (open point: the paper's count is unknown)
  c.slices = 1  # R (open point)
  # 'laf': the epochs, lr, batch_size and weight_decay below (LAF's Adam recipe, BASELINES.md
  # §0); 'pretrain': f_D's recipe (the job's pretrain epochs and lr, batch_size, no decay).
  c.recipe = "laf"
  c.epochs = 20  # e, over all slices
  c.lr = 1e-4
  c.batch_size = 32  # per shard model
  c.weight_decay = 1e-4  # PyTorch Adam's (added to the gradient); recipe 'laf' only
  c.vote = "argmax"  # each model's vote: 'argmax' (one-hot, SISA's default) or 'softmax'
  c.attack_outputs = "softmax"  # the attack reads the models' mean 'softmax', or the 'vote'
  return c


def dsmixup_config():
  c = default_config()
  c.group_size = 2  # affected shards pooled per retrained model (open point: pairs)
  return c


@flax.struct.dataclass
class EnsembleState:
  """M models stacked on a leading axis, each with its own progress in the current stage."""
  step: jax.Array  # [M] steps each model has taken in this stage
  limit: jax.Array  # [M] steps each model takes in this stage (0: held)
  variables: dict  # {'params', 'batch_stats'}, each leaf [M, ...]
  opt_state: Any  # stacked likewise


# -- sharding and planning (NumPy) -------------------------------------------------------


def shard_slices(indices, shards, slices, seed):
  """[shard][slice] -> training indices: a seeded permutation cut into contiguous blocks."""
  order = np.random.default_rng([seed, 4]).permutation(np.asarray(indices))
  return [np.array_split(shard, slices) for shard in np.array_split(order, shards)]


def stage_epochs(epochs, slices):
  """Epochs of stages 1..R: ⌊kē⌋ - ⌊(k-1)ē⌋ with ē = 2R/(R+1)·e/R (SISA's scripts)."""
  mean = 2 * slices / (slices + 1) * epochs / slices
  return [math.floor(k * mean) - math.floor((k - 1) * mean) for k in range(1, slices + 1)]


def plan(layout, forget, group_size=1):
  """[(shards, first stage)]: the models to retrain after deleting `forget`.

  A shard is affected when one of its slices holds a D_f index; its first
  stage is the first such slice (1-based). Affected shards, in order, are
  grouped `group_size` at a time; a group of several restarts at stage 1.
  """
  first = {}
  for shard, slices in enumerate(layout):
    hits = [k for k, indices in enumerate(slices, 1) if np.isin(indices, forget).any()]
    if hits:
      first[shard] = hits[0]
  affected = sorted(first)
  groups = [tuple(affected[i:i + group_size]) for i in range(0, len(affected), group_size)]
  return [(group, first[group[0]] if len(group) == 1 else 1) for group in groups]


def unit_set(layout, shards, stage, forget):
  """The surviving points of `shards`' slices 1..stage, pooled."""
  pool = np.concatenate([indices for shard in shards for indices in layout[shard][:stage]])
  return pool[~np.isin(pool, forget)]


def unit_name(shards):
  return f"shard{shards[0]}" if len(shards) == 1 else "shards" + "+".join(map(str, shards))


# -- the step ----------------------------------------------------------------------------


def model_step(step, limit, variables, opt_state, image, label, *, model, tx):
  """One model's Adam step on mean cross-entropy, taken only while step < limit."""

  def loss_fn(params):
    logits, _, batch_stats = common.forward(model, params, variables["batch_stats"], image,
                                            train=True)
    return losses.cross_entropy(logits, label).mean(), batch_stats

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
  updates, new_opt_state = tx.update(grads, opt_state, variables["params"])
  new = {"params": optax.apply_updates(variables["params"], updates), "batch_stats": batch_stats}
  active = step < limit
  keep = lambda a, b: jnp.where(active, a, b)  # noqa: E731 (a held model stays bit for bit)
  return (step + active, jax.tree.map(keep, new, variables),
          jax.tree.map(keep, new_opt_state, opt_state), loss, active)


def step(state, batch, frozen, *, model, tx, keys):
  """Every model's step at once: model i reads side keys[i] of the batch."""
  del frozen  # trained from scratch: f_D is never read
  images = jnp.stack([batch[key]["image"] for key in keys])
  labels = jnp.stack([batch[key]["label"] for key in keys])
  steps, variables, opt_state, loss, active = jax.vmap(
      functools.partial(model_step, model=model, tx=tx))(
          state.step, state.limit, state.variables, state.opt_state, images, labels)
  state = state.replace(step=steps, variables=variables, opt_state=opt_state)
  training = jnp.sum(active)
  return state, {"loss": jnp.sum(loss * active) / jnp.maximum(training, 1),
                 "models_training": training}


def begin(state, *, limit):
  """A stage's start: every model's step count reset, its limit set."""
  return state.replace(step=jnp.zeros_like(state.step), limit=jnp.asarray(limit, jnp.int32))


def stage_phase(name, sets, active, epochs, batch_size, step_fn):
  """A stage over `sets` (one model each, in order); inactive models are held."""
  limits = [epochs * data.steps_per_epoch(len(indices), batch_size) if on else 0
            for indices, on in zip(sets.values(), active)]
  stream = {key: data.Side(key, batch_size, labels=True) for key in sets}
  return base.Phase(name, stream, step_fn, max(limits),
                    enter=functools.partial(begin, limit=np.asarray(limits, np.int32)),
                    sets=sets)


# -- models on the mesh ------------------------------------------------------------------


def init_ensemble(ctx, tx, count):
  """`count` fresh models, model i from key (seed, i), with their optimizer states."""

  def init(key):
    variables = supervised.init_variables(ctx.model, key, ctx.image_shape)
    return variables, tx.init(variables["params"])

  def ensemble(key):
    keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(count))
    variables, opt_state = jax.vmap(init)(keys)
    zeros = jnp.zeros((count,), jnp.int32)
    return EnsembleState(zeros, zeros, variables, opt_state)

  return jax.jit(ensemble, out_shardings=parallel.replicated(ctx.mesh))(jax.random.key(ctx.seed))


def gather(picks, mesh):
  """A new stacked state of model i of state s for each (s, i) in `picks`, steps reset.

  New buffers (a gather), so later stages' donation never frees a state kept here.
  """
  states = list({id(s): s for s, _ in picks}.values())
  where = [(next(j for j, s in enumerate(states) if s is state), i) for state, i in picks]

  def take(states):
    stacked = jax.tree.map(lambda *leaves: jnp.stack([leaves[j][i] for j, i in where]), *states)
    return begin(stacked, limit=np.zeros(len(where), np.int32))

  return jax.jit(take, out_shardings=parallel.replicated(mesh))(states)


# -- prediction --------------------------------------------------------------------------


def ensemble_logits(model, variables, images):
  """[M, N, classes] float32 logits of the stacked models on the same images."""
  logits = jax.vmap(lambda v: model.apply(v, images, train=False)[0])(variables)
  return logits.astype(jnp.float32)


def vote(logits, outputs="argmax"):
  """Uniform vote shares [N, classes]: the models' mean one-hot argmax (or softmax).

  Counts are exact in float32, so equal counts give equal shares and the
  argmax of the shares picks the lowest tied class.
  """
  if outputs == "argmax":
    return jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1]).mean(0)
  return jax.nn.softmax(logits).mean(0)


# -- the method --------------------------------------------------------------------------


def recipe(ctx):
  """(epochs, lr, batch_size, weight_decay) of the constituents."""
  hp = ctx.config
  if hp.recipe == "laf":
    return hp.epochs, hp.lr, hp.batch_size, hp.weight_decay
  if hp.recipe == "pretrain":
    return ctx.recipe["epochs"], ctx.recipe["lr"], ctx.recipe["batch_size"], 0.0
  raise ValueError(f"recipe={hp.recipe!r}; use 'laf' or 'pretrain'.")


def check(ctx, epochs_per_stage, group_size):
  hp = ctx.config
  if ctx.forget is None or ctx.remain is None:
    raise ValueError("SISA/DSMixup need the D_f and D_r indices (ctx.forget, ctx.remain).")
  if min(hp.shards, hp.slices, group_size) < 1:
    raise ValueError(f"shards={hp.shards}, slices={hp.slices} and group_size={group_size} "
                     "must be positive.")
  if min(epochs_per_stage) < 1:
    raise ValueError(f"{epochs_per_stage} epochs per slice stage: every stage needs one; "
                     "use more epochs or fewer slices.")
  for field, options in [("vote", ("argmax", "softmax")),
                         ("attack_outputs", ("softmax", "vote"))]:
    if hp[field] not in options:
      raise ValueError(f"{field}={hp[field]!r}; use one of {options}.")


def train_ensemble(ctx, tx, layout, epochs_per_stage, batch_size, step_fn):
  """The initial ensemble: [state after stage k for k = 0..R] (0: the initialisation)."""
  after = [init_ensemble(ctx, tx, len(layout))]
  for k, epochs in enumerate(epochs_per_stage, 1):
    sets = {f"shard{s}": np.concatenate(slices[:k]) for s, slices in enumerate(layout)}
    phase = stage_phase(f"train_slice{k}", sets, [True] * len(layout), epochs, batch_size,
                        step_fn)
    start = gather([(after[-1], s) for s in range(len(layout))], ctx.mesh)
    after.append(ctx.run(phase, start, counts=False))
  return after


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  epochs, lr, batch_size, weight_decay = recipe(ctx)
  epochs_per_stage = stage_epochs(epochs, hp.slices)
  group_size = hp.get("group_size", 1)  # SISA's section has none: each shard alone
  check(ctx, epochs_per_stage, group_size)
  tx = common.optimizer("adam", lr, weight_decay=weight_decay)
  layout = shard_slices(np.union1d(ctx.forget, ctx.remain), hp.shards, hp.slices, ctx.seed)
  shard_step = functools.partial(step, model=ctx.model, tx=tx,
                                 keys=tuple(f"shard{s}" for s in range(hp.shards)))
  after = train_ensemble(ctx, tx, layout, epochs_per_stage, batch_size, shard_step)
  units = plan(layout, ctx.forget, group_size)
  names = tuple(unit_name(shards) for shards, _ in units)
  retrain_step = functools.partial(step, model=ctx.model, tx=tx, keys=names)
  phases = []
  for k in range(min(first for _, first in units), hp.slices + 1):
    # A unit waiting for a later stage reads its slices 1..k, which hold no deletion.
    sets = {name: unit_set(layout, shards, k, ctx.forget)
            for name, (shards, first) in zip(names, units)}
    phases.append(stage_phase(f"retrain_slice{k}", sets, [first <= k for _, first in units],
                              epochs_per_stage[k - 1], batch_size, retrain_step))
  # A unit restarts from the checkpoint before its first stage (the first shard's
  # initialisation for stage 1), held until that stage begins.
  state = gather([(after[first - 1], shards[0]) for shards, first in units], ctx.mesh)
  attack_outputs = hp.vote if hp.attack_outputs == "vote" else "softmax"
  return base.Program(
      state, tuple(phases), functools.partial(result, after=after[-1], units=units, mesh=ctx.mesh),
      predict=functools.partial(predict, model=ctx.model, outputs=hp.vote),
      attack_predict=functools.partial(predict, model=ctx.model, outputs=attack_outputs))


def result(state, *, after, units, mesh):
  """The ensemble's variables: kept shards' models and the retrained ones, in shard order."""
  retrained = {shards[0]: u for u, (shards, _) in enumerate(units)}
  merged = {s for shards, _ in units for s in shards[1:]}
  picks = [(state, retrained[s]) if s in retrained else (after, s)
           for s in range(after.step.shape[0]) if s not in merged]
  return gather(picks, mesh).variables


def predict(variables, images, *, model, outputs):
  return vote(ensemble_logits(model, variables, images), outputs)


METHODS = (
    base.Method("sisa", "all", build, "sisa", default_config,
                source="SISA: Bourtoule et al., S&P 2021 (cleverhans-lab/machine-unlearning)"),
    base.Method("dsmixup", "all", build, "dsmixup", dsmixup_config,
                source="DSMixup: Zhou et al., TrustCom 2022 (no code; BASELINES.md §5)"),
)
