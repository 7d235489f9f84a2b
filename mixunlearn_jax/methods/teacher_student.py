"""T-S, "bad teaching" (Chundawat et al., AAAI 2023; BASELINES.md §7): two frozen teachers.

The student starts from f_D and sees one shuffled stream: all of D_f (tag
u = 1) plus a fresh `remain_share` of D_r (u = 0) per pass. Each sample's
target is the incompetent teacher's softened output on D_f and the competent
teacher's on D_r, q = u·softmax(z_bad/T) + (1-u)·softmax(z_good/T). The
MixUnlearn paper's split form ('split') weighs the two halves,
L = KL_T(q ‖ student on x_f) + λ_r·KL_T(q ‖ student on x_r), each the mean
over its samples; the original ('single') takes PyTorch's kl_div 'mean',
over batch × classes. No class label enters the loss. A teacher is f_D
('initial'), a random network ('random', the original incompetent one) or
a model trained `teacher_epochs` on D_r with remain labels ('trained', the
reading of MixUnlearn's "teachers trained 10 epochs"), a checkpointed
sub-stage of the method; the config section records which ran.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import base
from mixunlearn_jax.methods import common

TEACHERS = ("trained", "initial", "random")
FORMS = ("split", "single")


def default_config():
  """The published usage (Adam 1e-4, batch 256, 1 epoch, T = 1) with MixUnlearn's teachers."""
  c = ml_collections.ConfigDict()
  c.epochs = 1  # passes over the mixed stream
  c.lr = 1e-4
  c.batch_size = 256
  c.remain_share = 0.3  # the share of D_r in each pass
  c.temperature = 1.0  # T; the paper's grid {0.5, 1, 2, 3}
  c.retain_weight = 1.0  # λ_r of the split form; the paper's grid {1e-4, 0.01, 0.1, 1, 10, 100}
  c.form = "split"  # 'split' (MixUnlearn's forget KL + λ_r retain KL) or 'single' (the original)
  # Open point: which teachers MixUnlearn trained, on which data (BASELINES.md §14.1).
  c.competent_teacher = "trained"  # 'trained' on D_r, 'initial' (f_D) or 'random'
  c.incompetent_teacher = "random"  # the original's: a random network, never trained
  c.teacher_epochs = 10  # epochs of a 'trained' teacher on D_r (pretraining's lr and batch)
  c.batchnorm_train = False  # the notebook evaluates f_D first, leaving the student in eval mode
  return c


def mixed_targets(competent_logits, incompetent_logits, tag, temperature):
  """q: the incompetent teacher's softened output where tag = 1 (D_f), the competent's where 0."""
  u = tag.astype(jnp.float32)[:, None]
  return (u * jax.nn.softmax(incompetent_logits / temperature, axis=-1)
          + (1.0 - u) * jax.nn.softmax(competent_logits / temperature, axis=-1))


def loss_fn(params, batch_stats, batch, frozen, *, model, hp):
  """(L, aux) on one mixed batch; padding (mask 0) counts in neither half."""
  side = batch["mixed"]
  x, forget, mask = side["image"], side["tag"].astype(jnp.float32), side["mask"]
  competent, incompetent = (
      common.forward(model, frozen[name]["params"], frozen[name]["batch_stats"], x,
                     train=False)[0] for name in ("competent", "incompetent"))
  target = jax.lax.stop_gradient(mixed_targets(competent, incompetent, side["tag"],
                                               hp.temperature))
  student, _, batch_stats = common.forward(model, params, batch_stats, x,
                                           train=hp.batchnorm_train)
  kl = losses.teacher_kl(student, target, hp.temperature)
  kl_forget = common.masked_mean(kl, mask * forget)
  kl_retain = common.masked_mean(kl, mask * (1.0 - forget))
  if hp.form == "split":
    loss = kl_forget + hp.retain_weight * kl_retain
  else:  # PyTorch's kl_div 'mean': over every (sample, class) element
    loss = common.masked_mean(kl, mask) / student.shape[-1]
  return loss, {"kl_forget": kl_forget, "kl_retain": kl_retain, "batch_stats": batch_stats}


def step(state, batch, frozen, *, model, tx, hp):
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.variables["params"], state.variables["batch_stats"], batch, frozen,
      model=model, hp=hp)
  state = common.apply_gradients(state, grads, aux.pop("batch_stats"), tx)
  return state, {"loss": loss, **aux}


def teacher_step(state, batch, frozen, *, model, tx):
  """Pretraining's supervised step on a remain batch (cross-entropy, Adam)."""
  del frozen
  return supervised.train_step(state, batch["remain"], model=model, tx=tx)


def trained_teacher(ctx):
  """A fresh network trained `teacher_epochs` on D_r with pretraining's recipe, checkpointed."""
  tx = optax.adam(ctx.recipe["lr"])
  stream = {"remain": data.Side("remain", ctx.recipe["batch_size"], labels=True)}
  num_steps = ctx.config.teacher_epochs * data.steps_per_pass(stream["remain"], ctx.num_forget,
                                                              ctx.num_remain)
  state = supervised.create_train_state(ctx.model, tx, jax.random.key(ctx.seed),
                                        ctx.image_shape, ctx.mesh)
  phase = base.Phase("teacher", stream,
                     functools.partial(teacher_step, model=ctx.model, tx=tx), num_steps)
  return ctx.run(phase, state).variables


def teachers(ctx):
  """{'competent', 'incompetent'}: the variables each configured teacher kind gives."""
  hp = ctx.config
  kinds = {"competent": hp.competent_teacher, "incompetent": hp.incompetent_teacher}
  for role, kind in kinds.items():
    if kind not in TEACHERS:
      raise ValueError(f"teacher_student.{role}_teacher={kind!r}; use one of {TEACHERS}.")
  made = {}
  for kind in dict.fromkeys(kinds.values()):  # a trained teacher serves both roles if asked twice
    if kind == "trained":
      made[kind] = trained_teacher(ctx)
    elif kind == "initial":
      made[kind] = ctx.initial
    else:  # a key apart from the trained teacher's initialisation
      made[kind] = supervised.init_variables(
          ctx.model, jax.random.fold_in(jax.random.key(ctx.seed), 1), ctx.image_shape)
  return {role: made[kind] for role, kind in kinds.items()}


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  if hp.form not in FORMS:
    raise ValueError(f"teacher_student.form={hp.form!r}; use one of {FORMS}.")
  frozen = teachers(ctx)
  tx = common.optimizer("adam", hp.lr)
  # One pass per epoch, its last batch masked: PyTorch's shuffled loader keeps the remainder.
  stream = {"mixed": data.Side("mixed", hp.batch_size, one_pass=True,
                               remain_share=hp.remain_share)}
  num_steps = hp.epochs * data.steps_per_pass(stream["mixed"], ctx.num_forget, ctx.num_remain)
  phase = base.Phase("unlearn", stream, functools.partial(step, model=ctx.model, tx=tx, hp=hp),
                     num_steps)
  return base.Program(common.init_state(ctx, tx), (phase,), lambda state: state.variables,
                      frozen=frozen)


METHODS = (base.Method("teacher_student", "remain", build, "teacher_student", default_config,
                       source="Bad teaching: Chundawat et al., AAAI 2023 "
                              "(vikram2000b/bad-teaching-unlearning)"),)
