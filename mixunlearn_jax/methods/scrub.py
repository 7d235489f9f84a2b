"""SCRUB (Kurmanji et al., NeurIPS 2023; BASELINES.md §8): max-min distillation from f_D.

Per epoch e = 1..E, with one optimizer shared by both phases and its learning
rate lr·0.1^(number of milestones < e):
- max phase (while e <= msteps): one pass over D_f minimising -D_T(f(x_f), f_D(x_f)),
  pushing the student away from the teacher; forget labels are never read;
- min phase: one pass over D_r minimising γ CE(f(x_r), y_r) + α D_T(f(x_r), f_D(x_r)).
Each pass is a phase of its own (checkpointed, resumable); a pass's last
batch is the remainder, masked, as PyTorch's loaders give it.
"""

import functools

import jax
import ml_collections

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax.methods import base
from mixunlearn_jax.methods import common


def default_config():
  """The large-scale notebook's defaults, which BASELINES.md keeps for the paper's grid."""
  c = ml_collections.ConfigDict()
  c.epochs = 3  # E
  c.max_epochs = 2  # msteps: epochs with a max phase
  c.lr = 5e-4
  c.lr_milestones = (3, 5, 9)  # lr x0.1 after each milestone epoch
  c.optimizer = "sgd"
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.temperature = 4.0  # T
  c.ce_weight = 0.99  # γ
  c.kd_weight = 0.001  # α: the retain-teacher weight of the paper's grid
  c.forget_batch_size = 32
  c.remain_batch_size = 128
  c.batchnorm_train = True  # the student trains in train mode
  return c


def epoch_lr(hp, epoch):
  """lr·0.1^(number of milestones < epoch), epochs counted from 1."""
  return hp.lr * 0.1 ** sum(milestone < epoch for milestone in hp.lr_milestones)


def _student_and_teacher(params, batch_stats, images, initial, *, model, hp):
  """(student logits, f_D's logits held fixed, the student's BatchNorm statistics)."""
  teacher, _, _ = common.forward(model, initial["params"], initial["batch_stats"], images,
                                 train=False)
  student, _, batch_stats = common.forward(model, params, batch_stats, images,
                                           train=hp.batchnorm_train)
  return student, jax.lax.stop_gradient(teacher), batch_stats


def max_loss(params, batch_stats, batch, initial, *, model, hp):
  """-D_T(student, teacher) on a forget batch, mean over its real samples."""
  side = batch["forget"]
  student, teacher, batch_stats = _student_and_teacher(params, batch_stats, side["image"],
                                                       initial, model=model, hp=hp)
  kd = common.masked_mean(losses.kd_divergence(student, teacher, hp.temperature), side["mask"])
  return -kd, {"kd_forget": kd, "batch_stats": batch_stats}


def min_loss(params, batch_stats, batch, initial, *, model, hp):
  """γ CE + α D_T(student, teacher) on a remain batch, mean over its real samples."""
  side = batch["remain"]
  student, teacher, batch_stats = _student_and_teacher(params, batch_stats, side["image"],
                                                       initial, model=model, hp=hp)
  ce = common.masked_mean(losses.cross_entropy(student, side["label"]), side["mask"])
  kd = common.masked_mean(losses.kd_divergence(student, teacher, hp.temperature), side["mask"])
  return hp.ce_weight * ce + hp.kd_weight * kd, {"ce_remain": ce, "kd_remain": kd,
                                                 "batch_stats": batch_stats}


def step(state, batch, frozen, *, loss_fn, model, tx, hp):
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.variables["params"], state.variables["batch_stats"], batch, frozen["initial"],
      model=model, hp=hp)
  state = common.apply_gradients(state, grads, aux.pop("batch_stats"), tx)
  return state, {"loss": loss, **aux}


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  if not 0 <= hp.max_epochs <= hp.epochs:
    raise ValueError(f"scrub.max_epochs={hp.max_epochs} must lie in [0, epochs={hp.epochs}].")
  tx = common.optimizer(hp.optimizer, hp.lr, momentum=hp.momentum,
                        weight_decay=hp.weight_decay)
  forget = {"forget": data.Side("forget", hp.forget_batch_size, one_pass=True)}
  remain = {"remain": data.Side("remain", hp.remain_batch_size, labels=True, one_pass=True)}
  steps = {name: data.steps_per_pass(side, ctx.num_forget, ctx.num_remain)
           for name, side in [("max", forget["forget"]), ("min", remain["remain"])]}
  phase_step = {name: functools.partial(step, loss_fn=loss_fn, model=ctx.model, tx=tx, hp=hp)
                for name, loss_fn in [("max", max_loss), ("min", min_loss)]}
  phases = []
  for epoch in range(1, hp.epochs + 1):
    enter = functools.partial(common.set_lr, lr=epoch_lr(hp, epoch))
    if epoch <= hp.max_epochs:
      phases.append(base.Phase(f"epoch{epoch}_max", forget, phase_step["max"], steps["max"],
                               enter))
    phases.append(base.Phase(f"epoch{epoch}_min", remain, phase_step["min"], steps["min"], enter))
  return base.Program(common.init_state(ctx, tx), tuple(phases), lambda state: state.variables)


METHODS = (base.Method("scrub", "remain", build, "scrub", default_config,
                       source="Kurmanji et al., NeurIPS 2023 (meghdadk/SCRUB notebooks)"),)
