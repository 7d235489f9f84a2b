"""LAF (Shen et al., ICLR 2024; BASELINES.md §10), LAF+R (§10.5) and L-Mix (§12).

Before unlearning, two VAEs (models/vae.py) learn f_D's embeddings, each a
checkpointed sub-stage of the method trained through `ctx.run`: h_f on D_f,
h_r on D_r (or, `remain_vae_data='all'`, on all of D as the released
notebook does). Frozen, their sampling noise still on, they drive the
unlearning phase. Each of its steps takes, on one pair of forget and remain
batches,
- the extractor-unlearning (UE) update: Adam (lr_ue) on L_UE, so that h_r
  reconstructs remain embeddings well and h_f forget embeddings badly; the
  head above the embedding gets no gradient from it;
- then, on the updated model, the representation-alignment (RA) update with
  its own Adam (lr_ra) on L_RA, which keeps remain embeddings on f_D's and
  pushes forget embeddings off theirs.
BatchNorm stays in inference mode (the notebook evaluates, so calls
model.eval(), before it unlearns). LAF+R then fine-tunes the head alone with
CE on D_r labels, the only labels it reads. L-Mix adds to the RA update
MSE(p(x_mix), λ onehot(ỹ) + (1 - λ) ŷ(x_r)) on x_mix = λ x_f + (1 - λ) x_r,
with ỹ a random class per forget sample (RandLabel's) and ŷ a self-label.
An epoch is LAF's zip of the two loaders: min(#forget, #remain) batches.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mixunlearn_jax import data
from mixunlearn_jax import losses
from mixunlearn_jax import models
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.methods import base
from mixunlearn_jax.methods import common
from mixunlearn_jax.methods import randlabel


def default_config():
  """LAF's hyperparameter.md row for the CNN in class removal.

  The other rows (ResNet-18, data and noisy-label removal) differ in
  latent_dim, epochs, lr_ue, lr_ra and temperature: a config file sets
  them, e.g. `c.laf.update(laf.paper_row('resnet18', 'data'))`.
  """
  c = ml_collections.ConfigDict()
  # The two VAEs (Train.py:vae_train).
  c.latent_dim = 8  # 16 for ResNet-18
  c.vae_epochs = 10
  c.vae_lr = 1e-3
  c.vae_batch_size = 32
  c.vae_kl_weight = 0.025
  c.remain_vae_data = "remain"  # h_r on 'remain' (the paper) or 'all' of D (the notebook; open)
  # Unlearning (VUnlearning.py:extractor_unlearning).
  c.epochs = 20  # an epoch: min(#forget, #remain) paired batches
  c.batch_size = 32
  c.lr_ue = 5e-5
  c.lr_ra = 1e-4
  c.temperature = 20.0  # τ of L_RA
  # LAF+R's repair of the head (classifier_unlearning); the repo leaves its lr open.
  c.repair_epochs = 1
  c.repair_lr = 1e-4  # the recipe's base lr (open)
  # L-Mix: defined only in the MixUnlearn text; its open points are switches.
  c.mix_alpha = 0.75  # λ ~ Beta(α, α), one λ per batch; the paper's grid is 0.3-1.5
  c.mix_weight = 1.0  # of the MSE term (open)
  c.mix_update = "ra"  # the term joins the 'ra' update, or takes its 'own' Adam update at lr_ra
  c.self_label = "initial"  # ŷ(x_r): f_D's outputs, or the 'current' model's (held fixed)
  c.mix_outputs = "probs"  # the MSE on 'probs' (softmax) or 'logits'
  c.fixed_targets = True  # one ỹ per forget sample for the run; False: a new one every epoch
  return c


_CHOICES = {"remain_vae_data": ("remain", "all"), "mix_update": ("ra", "own"),
            "self_label": ("initial", "current"), "mix_outputs": ("probs", "logits")}

# LAF's hyperparameter.md: (model, setup) -> the fields its rows set.
PAPER_ROWS = {
    ("cnn", "data"): dict(latent_dim=8, epochs=20, lr_ue=5e-5, lr_ra=1e-4, temperature=5.0),
    ("cnn", "class"): dict(latent_dim=8, epochs=20, lr_ue=5e-5, lr_ra=1e-4, temperature=20.0),
    ("cnn", "noisy"): dict(latent_dim=8, epochs=20, lr_ue=5e-5, lr_ra=1e-4, temperature=20.0),
    ("resnet18", "data"): dict(latent_dim=16, epochs=40, lr_ue=1e-5, lr_ra=4e-5,
                               temperature=20.0),
    ("resnet18", "class"): dict(latent_dim=16, epochs=40, lr_ue=1e-5, lr_ra=5e-5,
                                temperature=20.0),
    ("resnet18", "noisy"): dict(latent_dim=16, epochs=40, lr_ue=1e-5, lr_ra=4e-5,
                                temperature=5.0),
}


def paper_row(model, setup):
  """The §10.4 hyperparameters of `model` ('cnn', 'resnet18') in `setup`, as a dict."""
  if (model, setup) not in PAPER_ROWS:
    raise ValueError(f"LAF gives no hyperparameters for {model!r} in the {setup!r} setup; "
                     f"it has {sorted(PAPER_ROWS)}.")
  return dict(PAPER_ROWS[model, setup])


def head_layers(model):
  """Top-level parameter names of the classifier head above the embedding (LAF's fc2)."""
  heads = ((models.CNN, ("Dense_1", "Dense_2")), (models.ResNet, ("Dense_1",)),
           (models.ViT, ("head",)))
  for kind, names in heads:
    if isinstance(model, kind):
      return names
  raise ValueError(f"LAF+R does not know the head of {type(model).__name__}.")


# -- the VAEs ---------------------------------------------------------------------------


@flax.struct.dataclass
class VAEState:
  step: jax.Array
  key: jax.Array  # step s samples its noise from fold_in(key, s)
  params: Any
  opt_state: Any


def vae_step(state, batch, frozen, *, model, vae, tx, kl_weight):
  """One Adam step of a VAE on f_D's embeddings of the batch."""
  initial = frozen["initial"]
  _, features, _ = common.forward(model, initial["params"], initial["batch_stats"],
                                  batch["data"]["image"], train=False)
  embed = jax.lax.stop_gradient(features["embed"].astype(jnp.float32))

  def loss_fn(params):
    recon, _, mu, sigma = vae.apply({"params": params}, embed,
                                    rngs={"noise": jax.random.fold_in(state.key, state.step)})
    return losses.vae_loss(recon, embed, mu, sigma, kl_weight)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  params, opt_state = adam_update(tx, grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"l_vae": loss}


def init_vae_state(ctx, vae, tx, key):
  """A fresh VAE over the width of f_D's embedding, replicated on the mesh."""

  def init(key, initial):
    key_params, key_noise, key_state = jax.random.split(key, 3)
    embed = jax.eval_shape(lambda x: ctx.model.apply(initial, x, train=False)[1]["embed"],
                           jnp.zeros((1, *ctx.image_shape)))
    params = vae.init({"params": key_params, "noise": key_noise},
                      jnp.zeros(embed.shape, jnp.float32))["params"]
    return VAEState(jnp.zeros((), jnp.int32), key_state, params, tx.init(params))

  return jax.jit(init, out_shardings=parallel.replicated(ctx.mesh))(key, ctx.initial)


def train_vaes(ctx, vae, keys):
  """{'forget_vae': h_f, 'remain_vae': h_r} params, each trained by `ctx.run` (a sub-stage)."""
  hp = ctx.config
  tx = optax.adam(hp.vae_lr)
  step = functools.partial(vae_step, model=ctx.model, vae=vae, tx=tx, kl_weight=hp.vae_kl_weight)
  trained = {}
  for key, (name, source) in zip(keys, [("forget_vae", "forget"),
                                        ("remain_vae", hp.remain_vae_data)]):
    stream = {"data": data.Side(source, hp.vae_batch_size)}
    num_steps = hp.vae_epochs * data.steps_per_pass(stream["data"], ctx.num_forget,
                                                    ctx.num_remain)
    state = init_vae_state(ctx, vae, tx, key)
    trained[name] = ctx.run(base.Phase(name, stream, step, num_steps), state).params
  return trained


# -- unlearning -------------------------------------------------------------------------


@flax.struct.dataclass
class LAFState:
  step: jax.Array
  variables: dict  # {'params', 'batch_stats'}, initialised from f_D
  opt: dict  # an Adam state per update: 'ue', 'ra' and, where the method has them, 'mix', 'repair'


@flax.struct.dataclass
class Teacher:
  """f_D on [x_f; x_r], computed once per step; no gradient reaches it."""
  logits: jax.Array
  embed: jax.Array


@flax.struct.dataclass
class Mixture:
  """L-Mix's inputs: x_mix = λ x_f + (1 - λ) x_r and ỹ for each forget sample."""
  images: jax.Array
  random_class: jax.Array
  lam: jax.Array


def adam_update(tx, grads, opt_state, params):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def ue_loss(params, batch_stats, images, frozen, noise_keys, *, model, vae):
  """L_UE of the unlearner on images = [x_f; x_r], through the frozen VAEs."""
  _, features, _ = common.forward(model, params, batch_stats, images, train=False)
  embed_f, embed_r = jnp.split(features["embed"].astype(jnp.float32), 2)
  recon_f = vae.apply({"params": frozen["forget_vae"]}, embed_f, rngs={"noise": noise_keys[0]})[0]
  recon_r = vae.apply({"params": frozen["remain_vae"]}, embed_r, rngs={"noise": noise_keys[1]})[0]
  return losses.extractor_unlearning(recon_r, embed_r, recon_f, embed_f)


def mix_term(logits_mix, logits_remain, teacher_logits_remain, mix, *, hp):
  """MSE(out(x_mix), λ onehot(ỹ) + (1 - λ) ŷ(x_r)), ŷ held fixed; mean over batch and classes."""
  self_label = teacher_logits_remain if hp.self_label == "initial" else logits_remain
  target_remain = jax.lax.stop_gradient(randlabel.outputs(self_label, hp.mix_outputs))
  target_forget = jax.nn.one_hot(mix.random_class, logits_mix.shape[-1])
  return losses.mixup_squared_error(randlabel.outputs(logits_mix, hp.mix_outputs), target_forget,
                                    target_remain, mix.lam).mean()


def alignment_loss(params, batch_stats, images, teacher, mix, *, model, hp, terms):
  """(objective, metrics) of an update after UE: the sum of `terms` ('ra', 'mix', weighted).

  images = [x_f; x_r]; `mix` (None without 'mix') adds x_mix to the same forward pass.
  """
  x = images if mix is None else jnp.concatenate([images, mix.images])
  logits, features, _ = common.forward(model, params, batch_stats, x, train=False)
  n = images.shape[0] // 2
  metrics, objective = {}, 0.0
  if "ra" in terms:
    embed = features["embed"].astype(jnp.float32)
    metrics["l_ra"] = losses.representation_alignment(
        embed[n:2 * n], teacher.embed[n:], embed[:n], teacher.embed[:n], hp.temperature)
    objective += metrics["l_ra"]
  if "mix" in terms:
    metrics["l_mix"] = mix_term(logits[2 * n:], logits[n:2 * n], teacher.logits[n:], mix, hp=hp)
    objective += hp.mix_weight * metrics["l_mix"]
  return objective, metrics


def mixture(batch, key, step, *, hp, targets_key, num_classes, steps_per_epoch):
  """x_mix with one λ ~ Beta(α, α) per batch, and ỹ from (seed, dataset index[, epoch])."""
  lam = jax.random.beta(key, hp.mix_alpha, hp.mix_alpha)
  epoch = None if hp.fixed_targets else step // steps_per_epoch
  random_class = randlabel.random_targets(targets_key, batch["forget"]["index"], num_classes,
                                          epoch)
  images = lam * batch["forget"]["image"] + (1.0 - lam) * batch["remain"]["image"]
  return Mixture(images, random_class, lam)


def unlearn_step(state, batch, frozen, *, model, vae, txs, updates, hp, key, mix_inputs):
  """One UE update, then each update of `updates` ((optimizer, terms) pairs), on one pair.

  `mix_inputs(batch, key, step) -> Mixture` for L-Mix, else None.
  """
  images = jnp.concatenate([batch["forget"]["image"], batch["remain"]["image"]])
  initial = frozen["initial"]
  logits0, features0, _ = common.forward(model, initial["params"], initial["batch_stats"],
                                         images, train=False)
  teacher = jax.lax.stop_gradient(Teacher(logits0, features0["embed"].astype(jnp.float32)))
  # Keys derive from (seed, step) only, so a resumed run draws the same noise and λ.
  key_forget, key_remain, key_mix = jax.random.split(jax.random.fold_in(key, state.step), 3)
  params, batch_stats, opt = state.variables["params"], state.variables["batch_stats"], {}

  l_ue, grads = jax.value_and_grad(ue_loss)(params, batch_stats, images, frozen,
                                            (key_forget, key_remain), model=model, vae=vae)
  params, opt["ue"] = adam_update(txs["ue"], grads, state.opt["ue"], params)
  metrics = {"l_ue": l_ue}
  mix = mix_inputs(batch, key_mix, state.step) if mix_inputs else None
  for name, terms in updates:
    (_, aux), grads = jax.value_and_grad(alignment_loss, has_aux=True)(
        params, batch_stats, images, teacher, mix if "mix" in terms else None, model=model,
        hp=hp, terms=terms)
    params, opt[name] = adam_update(txs[name], grads, state.opt[name], params)
    metrics.update(aux)
  return state.replace(step=state.step + 1, variables={"params": params,
                                                       "batch_stats": batch_stats},
                       opt={**state.opt, **opt}), metrics


def repair_step(state, batch, frozen, *, model, tx, head):
  """LAF+R: one Adam step of the head alone on CE with D_r labels."""
  del frozen
  params, batch_stats = state.variables["params"], state.variables["batch_stats"]
  remain = batch["remain"]

  def loss_fn(head_params):
    logits, _, _ = common.forward(model, {**params, **head_params}, batch_stats,
                                  remain["image"], train=False)
    return losses.cross_entropy(logits, remain["label"]).mean()

  head_params = {name: params[name] for name in head}
  loss, grads = jax.value_and_grad(loss_fn)(head_params)
  head_params, opt_state = adam_update(tx, grads, state.opt["repair"], head_params)
  return state.replace(step=state.step + 1,
                       variables={"params": {**params, **head_params},
                                  "batch_stats": batch_stats},
                       opt={**state.opt, "repair": opt_state}), {"ce_remain": loss}


def init_state(ctx, txs, head):
  """The unlearner as a copy of f_D; an Adam state per update (the repair's over the head)."""

  def init(initial):
    params = initial["params"]
    opt = {name: tx.init({k: params[k] for k in head} if name == "repair" else params)
           for name, tx in txs.items()}
    return LAFState(jnp.zeros((), jnp.int32),
                    {"params": params, "batch_stats": initial["batch_stats"]}, opt)

  return jax.jit(init, out_shardings=parallel.replicated(ctx.mesh))(ctx.initial)


def build(ctx: base.UnlearnContext, *, mix, repair) -> base.Program:
  hp = ctx.config
  for field, choices in _CHOICES.items():
    if field in hp and hp[field] not in choices:
      raise ValueError(f"laf.{field}={hp[field]!r}; use one of {choices}.")
  vae = models.EmbeddingVAE(latent_dim=hp.latent_dim)
  key_forget_vae, key_remain_vae, key_step, key_targets = jax.random.split(
      jax.random.key(ctx.seed), 4)
  frozen = train_vaes(ctx, vae, (key_forget_vae, key_remain_vae))

  updates = [("ra", ("ra", "mix") if mix and hp.mix_update == "ra" else ("ra",))]
  if mix and hp.mix_update == "own":
    updates.append(("mix", ("mix",)))
  txs = {"ue": optax.adam(hp.lr_ue), "ra": optax.adam(hp.lr_ra),
         **({"mix": optax.adam(hp.lr_ra)} if len(updates) > 1 else {}),
         **({"repair": optax.adam(hp.repair_lr)} if repair else {})}
  stream = {"forget": data.Side("forget", hp.batch_size, index=mix),
            "remain": data.Side("remain", hp.batch_size)}
  per_epoch = min(data.steps_per_pass(side, ctx.num_forget, ctx.num_remain)
                  for side in stream.values())
  mix_inputs = functools.partial(mixture, hp=hp, targets_key=key_targets,
                                 num_classes=ctx.num_classes, steps_per_epoch=per_epoch)
  step = functools.partial(unlearn_step, model=ctx.model, vae=vae, txs=txs,
                           updates=tuple(updates), hp=hp, key=key_step,
                           mix_inputs=mix_inputs if mix else None)
  phases = [base.Phase("unlearn", stream, step, hp.epochs * per_epoch)]
  head = head_layers(ctx.model) if repair else ()
  if repair:
    remain = {"remain": data.Side("remain", hp.batch_size, labels=True)}
    phases.append(base.Phase("repair", remain, functools.partial(
        repair_step, model=ctx.model, tx=txs["repair"], head=head), hp.repair_epochs * per_epoch))
  return base.Program(init_state(ctx, txs, head), tuple(phases), lambda state: state.variables,
                      frozen=frozen)


# The fields of the shared section that only one of the three reads.
_MIX = ("mix_alpha", "mix_weight", "mix_update", "self_label", "mix_outputs", "fixed_targets")
_REPAIR = ("repair_epochs", "repair_lr")
_LAF = "Shen et al., Label-Agnostic Forgetting, ICLR 2024 (ShaofeiShen768/LAF)"
METHODS = (
    base.Method("laf", "none", functools.partial(build, mix=False, repair=False), "laf",
                default_config, source=_LAF, features=("embed",), ignores=_MIX + _REPAIR),
    base.Method("laf_r", "remain", functools.partial(build, mix=False, repair=True), "laf",
                default_config, source=f"LAF+R, LAF then one epoch repairing the head: {_LAF}",
                features=("embed",), ignores=_MIX),
    base.Method("lmix", "none", functools.partial(build, mix=True, repair=False), "laf",
                default_config, source="L-Mix as defined in the MixUnlearn paper (ICLR 2025), "
                                       "on LAF", features=("embed",), ignores=_REPAIR),
)
