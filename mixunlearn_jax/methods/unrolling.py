"""Unrolling SGD (Thudi et al., EuroS&P 2022; BASELINES.md §6): add back D_f's first-order share.

To first order, SGD's E epochs at learning rate η and batch size b moved the
weights by -(η·E/b)·∇ℓ(x; θ_ref) for each training sample x, so

  θ_unl = θ_T + scale·Σ_{x∈D_f} ∇ℓ(x; θ_ref),   scale = factor·η·E/b,

with η, E, b pretraining's recipe. One pass over D_f, its last batch padded
and masked, sums the per-sample cross-entropy gradients at θ_ref into the
state, so each forget sample counts exactly once; `Program.result` adds the
sum to θ_T's parameters (BatchNorm statistics stay θ_T's). The gradients are
taken in inference mode, where samples do not interact, so the gradient of
the masked sum of losses is the sum of per-sample gradients.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import ml_collections

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.methods import base
from mixunlearn_jax.methods import common

REFERENCES = ("theta0", "final")


def default_config():
  """BASELINES.md's suggestion: θ_ref = pretraining's θ_0, the scale from its recipe."""
  c = ml_collections.ConfigDict()
  # Open point (BASELINES.md §14.4): θ_ref and the scale MixUnlearn used with Adam-trained f_D.
  c.reference = "theta0"  # θ_ref: 'theta0' (pretraining's start) or 'final' (θ_T = f_D)
  c.scale_factor = 1.0  # times η·E/b; f_D trained with Adam, so η is nominal: tune it
  c.batch_size = 32  # of the summing pass; the sum does not depend on it
  return c


@flax.struct.dataclass
class UnrollState:
  """The running sum Σ ∇ℓ(x; θ_ref) over the forget samples seen, and their count."""
  step: jax.Array
  grad_sum: dict  # like the parameters
  count: jax.Array


def summed_loss(params, batch_stats, side, *, model):
  """Σ mask·CE over a forget batch, in inference mode."""
  logits, _, _ = common.forward(model, params, batch_stats, side["image"], train=False)
  return jnp.sum(side["mask"] * losses.cross_entropy(logits, side["label"]))


def step(state, batch, frozen, *, model):
  side, reference = batch["forget"], frozen["reference"]
  loss, grads = jax.value_and_grad(summed_loss)(reference["params"], reference["batch_stats"],
                                                side, model=model)
  count = jnp.sum(side["mask"])
  state = state.replace(step=state.step + 1, count=state.count + count,
                        grad_sum=jax.tree.map(jnp.add, state.grad_sum, grads))
  return state, {"loss": loss / jnp.maximum(count, 1.0), "count": state.count}


def unrolled(initial, state, scale):
  """θ_T + scale·Σ ∇ℓ(x; θ_ref), with θ_T's BatchNorm statistics."""
  params = jax.tree.map(lambda p, g: p + scale * g, initial["params"], state.grad_sum)
  return {"params": params, "batch_stats": initial["batch_stats"]}


def build(ctx: base.UnlearnContext) -> base.Program:
  hp = ctx.config
  if hp.reference not in REFERENCES:
    raise ValueError(f"unrolling.reference={hp.reference!r}; use one of {REFERENCES}.")
  reference = ctx.theta0() if hp.reference == "theta0" else ctx.initial
  recipe = ctx.recipe
  scale = hp.scale_factor * recipe["lr"] * recipe["epochs"] / recipe["batch_size"]
  # The samples themselves, not augmented views: the sum is over exactly D_f.
  stream = {"forget": data.Side("forget", hp.batch_size, labels=True, augment=False,
                                one_pass=True)}
  num_steps = data.steps_per_pass(stream["forget"], ctx.num_forget, ctx.num_remain)
  phase = base.Phase("unlearn", stream, functools.partial(step, model=ctx.model), num_steps)

  def init(params):
    return UnrollState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params),
                       jnp.zeros((), jnp.float32))

  state = jax.jit(init, out_shardings=parallel.replicated(ctx.mesh))(ctx.initial["params"])
  return base.Program(state, (phase,), functools.partial(unrolled, ctx.initial, scale=scale),
                      frozen={"reference": reference})


METHODS = (base.Method("unrolling", "all", build, "unrolling", default_config,
                       source="Unrolling SGD: Thudi et al., EuroS&P 2022 "
                              "(cleverhans-lab/unrolling-sgd)"),)
