"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): f_D and Retrain of the semi setup.

A student learns from cross-entropy on the labelled samples of each batch
and from a consistency cost on every sample: the mean squared error between
its softmax and that of a teacher whose weights are an exponential moving
average (EMA) of the student's. Student and teacher see the batch under
independent noise (random translation, Gaussian input noise), and the
consistency weight ramps up as exp(-5 (1 - t)^2). The teacher is the model
the job evaluates.

The costs follow the authors' TensorFlow code (mean_teacher/model.py in
CuriousAI/mean-teacher): the cross-entropy is summed over the labelled
samples and divided by the whole batch size, the consistency cost is the
squared error averaged over classes and the batch, and the EMA decay is one
value during the ramp-up and another after it. Not taken from them: their
learning-rate and Adam β schedules (each stage keeps its section's Adam lr)
and their network's dropout (the job's model is used as it is).
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixunlearn_jax import losses
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised


def default_config():
  """The `mean_teacher` section: the authors' defaults unless a comment says otherwise.

  Source: CuriousAI/mean-teacher, tensorflow/mean_teacher/model.py
  (Model.DEFAULT_HYPERPARAMS) and tensorflow/experiments/cifar10_final_eval.py.
  """
  c = ml_collections.ConfigDict()
  # The maximum weight of the consistency cost (MSE on softmax outputs). The code's default,
  # 100, is for fully labelled data; its CIFAR-10 runs with n of 50,000 labels use
  # 100 * n / 50,000 (its SVHN runs with 250-1,000 labels, 1), which for the semi setup's
  # 40% labelled samples is 40.
  c.consistency_weight = 40.0
  # Ramp-up length, in epochs of the stage's data: the consistency weight rises as
  # exp(-5 (1 - t)^2), t = step / ramp-up steps, and the EMA decay switches after it.
  # The authors ramp up over 40,000 of 150,000 steps (27%); 3 of f_D's 10 epochs are 30%.
  c.rampup_epochs = 3
  c.ema_decay_rampup = 0.99  # the teacher's EMA decay during the ramp-up
  c.ema_decay = 0.999  # and after it
  # Noise, drawn independently for student and teacher: Gaussian input noise (std, in
  # units of the normalised pixels; the authors normalise each image) and a random
  # translation by up to this many pixels each way, reflect-padded (0 turns either off).
  c.input_noise = 0.15
  c.translate = 2
  return c


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The section's values with the ramp-up in steps: what the step closes over."""
  consistency_weight: float
  rampup_steps: int
  ema_decay_rampup: float
  ema_decay: float
  input_noise: float
  translate: int

  @classmethod
  def make(cls, section, steps_per_epoch):
    fields = {f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section}
    return cls(rampup_steps=int(round(section.rampup_epochs * steps_per_epoch)), **fields)


@flax.struct.dataclass
class MeanTeacherState:
  """Student, teacher, the student's Adam state, the step and the noise key: one pytree."""
  step: jax.Array
  key: jax.Array
  params: Any  # the student's
  batch_stats: Any
  opt_state: Any
  teacher: dict  # {'params': EMA of the student's, 'batch_stats': its own}

  @property
  def variables(self):
    """What evaluation reads: the teacher."""
    return self.teacher


def create_state(model, tx, key, noise_key, image_shape, mesh):
  """Student and teacher both start at the variables `key` gives (θ_0), replicated."""

  def init(key, noise_key):
    variables = supervised.init_variables(model, key, image_shape)
    return MeanTeacherState(jnp.zeros((), jnp.int32), noise_key, variables["params"],
                            variables["batch_stats"], tx.init(variables["params"]), variables)

  return jax.jit(init, out_shardings=parallel.replicated(mesh))(key, noise_key)


def sigmoid_rampup(step, rampup_steps):
  """exp(-5 (1 - t)^2), t = step / rampup_steps clipped to [0, 1]; 1 without a ramp-up."""
  if not rampup_steps:
    return jnp.ones((), jnp.float32)
  t = jnp.clip(step / rampup_steps, 0.0, 1.0)
  return jnp.exp(-5.0 * jnp.square(1.0 - t))


def ema_decay(step, schedule):
  return jnp.where(step < schedule.rampup_steps, schedule.ema_decay_rampup, schedule.ema_decay)


def ema_update(teacher_params, student_params, decay):
  """teacher <- decay * teacher + (1 - decay) * student, leaf by leaf."""
  return jax.tree.map(lambda t, s: decay * t + (1.0 - decay) * s, teacher_params, student_params)


def perturb(key, images, schedule):
  """A random translation (reflect-padded, per image) then Gaussian noise; any image size."""
  key_shift, key_noise = jax.random.split(key)
  if schedule.translate:
    images = translate(key_shift, images, schedule.translate)
  if schedule.input_noise:
    images = images + schedule.input_noise * jax.random.normal(key_noise, images.shape,
                                                               images.dtype)
  return images


def translate(key, images, scale):
  """Shifts each image by (dy, dx) uniform in [-scale, scale]^2, reflecting at the edges."""
  batch, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (scale, scale), (scale, scale), (0, 0)), mode="reflect")
  offsets = jax.random.randint(key, (batch, 2), 0, 2 * scale + 1)
  crop = lambda image, offset: jax.lax.dynamic_slice(  # noqa: E731
      image, (offset[0], offset[1], 0), (height, width, channels))
  return jax.vmap(crop)(padded, offsets)


def class_cost(logits, labels, labelled):
  """Cross-entropy summed over the labelled samples, divided by the whole batch size.

  An unlabelled sample's label never enters: it is replaced before the
  cross-entropy and its term is zeroed (its gradient with it).
  """
  labels = jnp.where(labelled, labels, 0)
  per_sample = jnp.where(labelled, losses.cross_entropy(logits, labels), 0.0)
  return jnp.sum(per_sample) / logits.shape[0]


def consistency_cost(student_logits, teacher_probs):
  """MSE between the softmax outputs, averaged over classes and the batch."""
  return jnp.mean(losses.squared_error(jax.nn.softmax(student_logits.astype(jnp.float32)),
                                       teacher_probs))


def teacher_outputs(teacher, images, *, model):
  """The teacher's softmax (no gradient) and its BatchNorm statistics.

  The teacher runs in training mode and keeps statistics of its own inputs,
  as the authors' PyTorch code does (`ema_model.train()`).
  """
  (logits, _), updates = model.apply(teacher, images, train=True, mutable=["batch_stats"])
  probs = jax.nn.softmax(logits.astype(jnp.float32))
  return jax.lax.stop_gradient(probs), updates.get("batch_stats", {})


def student_loss(params, batch_stats, images, batch, teacher_probs, weight, *, model):
  """(class cost + weight * consistency cost, aux) of the student on its noisy images."""
  (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                     train=True, mutable=["batch_stats"])
  labelled = batch["labelled"]
  ce = class_cost(logits, batch["label"], labelled)
  consistency = consistency_cost(logits, teacher_probs)
  correct = jnp.where(labelled, jnp.argmax(logits, -1) == batch["label"], False)
  accuracy = jnp.sum(correct) / jnp.maximum(jnp.sum(labelled), 1)
  return ce + weight * consistency, {"class_cost": ce, "consistency": consistency,
                                     "accuracy": accuracy,
                                     "batch_stats": updates.get("batch_stats", {})}


def train_step(state, batch, *, model, tx, schedule):
  """One Adam step of the student, then the teacher's EMA update.

  `batch` is {'image', 'label', 'labelled'}; the noise keys come from
  (the state's key, step), so a resumed stage draws the same noise.
  """
  key_student, key_teacher = jax.random.split(jax.random.fold_in(state.key, state.step))
  teacher_probs, teacher_stats = teacher_outputs(
      state.teacher, perturb(key_teacher, batch["image"], schedule), model=model)
  weight = schedule.consistency_weight * sigmoid_rampup(state.step, schedule.rampup_steps)
  (loss, aux), grads = jax.value_and_grad(student_loss, has_aux=True)(
      state.params, state.batch_stats, perturb(key_student, batch["image"], schedule), batch,
      teacher_probs, weight, model=model)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  teacher = {"params": ema_update(state.teacher["params"], params,
                                  ema_decay(state.step, schedule)),
             "batch_stats": teacher_stats}
  state = state.replace(step=state.step + 1, params=params, batch_stats=aux["batch_stats"],
                        opt_state=opt_state, teacher=teacher)
  return state, {"loss": loss, "class_cost": aux["class_cost"],
                 "consistency": aux["consistency"], "consistency_weight": weight,
                 "accuracy": aux["accuracy"], "grad_norm": optax.tree.norm(grads)}
