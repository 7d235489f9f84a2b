"""LAF, LAF+R and L-Mix: the VAE, the losses and the updates against NumPy, streams, phases."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import losses
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import identity
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.methods import laf

SHAPE = (8, 8, 1)
HEAD = ("Dense_1", "Dense_2")  # the CNN's two dense layers above the 256-d embedding


@pytest.fixture(scope="module")
def setting():
  model, mesh = models.create("cnn"), parallel.make_mesh()
  initial = supervised.init_variables(model, jax.random.key(0), SHAPE)
  moved = jax.tree.map(lambda x: x + 0.05 * jnp.sign(x), initial)  # an unlearner away from f_D
  return model, mesh, initial, moved


def hyperparameters(name="lmix", **overrides):
  """`name`'s hyperparameters as a run hands them over: without the fields it ignores."""
  config = config_lib.base_config()
  config.laf.update(dict(batch_size=8, vae_batch_size=8, **overrides))
  return methods.get(name).hyperparameters(config)


def deterministic(vae_params):
  """A VAE whose σ = exp(-100) is zero in float32, so that z = μ and NumPy needs no noise."""
  log_var = dict(vae_params["log_var"], bias=jnp.full_like(vae_params["log_var"]["bias"], -200.0))
  return {**vae_params, "log_var": log_var}


def build(name, setting, **overrides):
  """(program, the auxiliary phases `ctx.run` was given); the VAEs come back deterministic."""
  model, mesh, initial, _ = setting
  ran = []

  def run(phase, state):
    ran.append((phase, state))
    return state.replace(params=deterministic(state.params))

  ctx = methods.UnlearnContext(
      model=model, initial=initial, image_shape=SHAPE, num_classes=10, num_forget=37,
      num_remain=90, batch_size=8, config=hyperparameters(name, **overrides), seed=3, mesh=mesh,
      run=run)
  return methods.get(name).build(ctx), ran


def images(rng, size):
  return rng.normal(size=(size, *SHAPE)).astype(np.float32)


def f64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def embed_np(model, variables, x):
  return np.asarray(model.apply(variables, x, train=False)[1]["embed"], np.float64)


def dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def relu(x):
  return np.maximum(x, 0.0)


def vae_np(p, e, z=None):
  """(ê, μ, σ) of the VAE in NumPy; z = μ unless given."""
  h = relu(dense(p["Dense_1"], relu(dense(p["Dense_0"], e))))
  mu, sigma = dense(p["mu"], h), np.exp(0.5 * dense(p["log_var"], h))
  h = relu(dense(p["Dense_3"], relu(dense(p["Dense_2"], mu if z is None else z))))
  return 1.0 / (1.0 + np.exp(-dense(p["output"], h))), mu, sigma


def vae_loss_np(recon, e, mu, sigma):
  kl = -0.5 * np.sum(np.log(sigma**2 + 1e-8) + 1 - mu**2 - sigma**2) / len(e)
  return np.sum((recon - e)**2) / len(e) + 0.025 * kl


def score_np(recon, e):
  r = ((recon - e)**2).sum(-1)
  return np.exp(r / (r + 1))


def one_minus_cos_np(a, b):
  return 1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def ra_np(e_r, t_r, e_f, t_f, tau):
  c = one_minus_cos_np(e_f, t_f) / tau
  logsumexp = c.max() + np.log(np.exp(c - c.max()).sum())
  return np.sum(one_minus_cos_np(e_r, t_r)) - len(e_r) * logsumexp


def softmax_np(z):
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


# -- the VAE and the losses against NumPy -----------------------------------------------


def test_vae_forward_and_loss_match_numpy():
  vae = models.EmbeddingVAE(latent_dim=8)
  e = np.random.default_rng(0).normal(size=(6, 256)).astype(np.float32)
  params = vae.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, e)["params"]
  recon, z, mu, sigma = vae.apply({"params": params}, e, rngs={"noise": jax.random.key(5)})
  assert z.shape == (6, 8) and recon.shape == (6, 256)
  recon_np, mu_np, sigma_np = vae_np(f64(params), np.float64(e), z=np.float64(z))
  np.testing.assert_allclose(mu, mu_np, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sigma, sigma_np, rtol=1e-5)
  np.testing.assert_allclose(recon, recon_np, rtol=1e-5)
  assert np.all((recon > 0) & (recon < 1))  # the sigmoid output of LAF's decoder
  assert np.abs(np.float64(z) - mu_np).min() > 0  # the noise is on
  again = vae.apply({"params": params}, e, rngs={"noise": jax.random.key(5)})[1]
  np.testing.assert_array_equal(z, again)
  loss = losses.vae_loss(recon, e, mu, sigma)
  np.testing.assert_allclose(float(loss), vae_loss_np(recon_np, np.float64(e), mu_np, sigma_np),
                             rtol=1e-5)


def test_ue_and_ra_losses_match_numpy():
  rng = np.random.default_rng(1)
  e_r, e_f = rng.normal(scale=0.05, size=(2, 5, 256))
  recon_r = rng.uniform(size=(5, 256))  # far from e_r; h_f reconstructs e_f closely
  recon_f = e_f + rng.normal(scale=0.05, size=(5, 256))
  expected = score_np(recon_r, e_r).sum() - score_np(recon_f, e_f).sum()
  ue = losses.extractor_unlearning(*(jnp.float32(x) for x in (recon_r, e_r, recon_f, e_f)))
  np.testing.assert_allclose(float(ue), expected, rtol=1e-5)
  t_r, t_f = e_r + rng.normal(scale=0.05, size=(2, 5, 256))
  ra = losses.representation_alignment(*(jnp.float32(x) for x in (e_r, t_r, e_f, t_f)), 5.0)
  np.testing.assert_allclose(float(ra), ra_np(e_r, t_r, e_f, t_f, 5.0), rtol=1e-5)


def test_vae_step_is_l_vae_on_f_d_embeddings_and_lowers_it(setting):
  model, mesh, initial, _ = setting
  _, ran = build("laf", setting)
  (phase, fresh), _ = ran
  step = parallel.jit_step(phase.step, mesh, num_frozen=1)
  x = images(np.random.default_rng(3), 8)
  batch = jax.device_put({"data": {"image": x}}, parallel.data_sharded(mesh))
  params = jax.tree.map(np.array, deterministic(fresh.params))
  copy = jax.tree.map(jnp.copy, fresh.replace(params=deterministic(fresh.params)))
  _, metrics = step(copy, batch, {"initial": initial})  # donates the copy, keeps `fresh`
  e = embed_np(model, initial, x)
  recon, mu, sigma = vae_np(f64(params), e)
  np.testing.assert_allclose(float(metrics["l_vae"]), vae_loss_np(recon, e, mu, sigma),
                             rtol=1e-5)
  state, first = fresh, None
  for _ in range(30):
    state, metrics = step(state, batch, {"initial": initial})
    first = first or float(metrics["l_vae"])
  assert float(metrics["l_vae"]) < 0.5 * first


# -- the method-level objectives against NumPy ------------------------------------------


def shrunk(variables, scale=0.01):
  """A classifier with smaller embeddings (toward the scale of the VAEs' outputs)."""
  params = variables["params"]
  return {**variables, "params": {**params, "Dense_0": jax.tree.map(lambda w: scale * w,
                                                                      params["Dense_0"])}}


def constant_decoders(frozen):
  """VAEs whose reconstructions are 0.5 (h_f) and about 0 (h_r) whatever the input.

  With shrunk embeddings the scores then differ between the sides instead of
  saturating at e, and L_UE's gradients are well conditioned in float32 (with
  the real VAEs their jitted and eager values differ by about 1e-5).
  """
  def output(vae, bias):
    return {**vae, "output": {"kernel": jnp.zeros_like(vae["output"]["kernel"]),
                              "bias": jnp.full_like(vae["output"]["bias"], bias)}}
  return {"forget_vae": output(frozen["forget_vae"], 0.0),
          "remain_vae": output(frozen["remain_vae"], -20.0)}


def test_ue_and_alignment_objectives_match_numpy(setting):
  model, _, initial, moved = setting
  program, _ = build("lmix", setting)
  small, vaes = shrunk(moved), constant_decoders(program.frozen)
  rng = np.random.default_rng(2)
  x_f, x_r = images(rng, 4), images(rng, 4)
  x = np.concatenate([x_f, x_r])
  keys = (jax.random.key(0), jax.random.key(1))
  ue = laf.ue_loss(small["params"], small["batch_stats"], x, {"initial": initial, **vaes}, keys,
                   model=model, vae=models.EmbeddingVAE(8))
  e = embed_np(model, small, x)
  recon_f = vae_np(f64(vaes["forget_vae"]), e[:4])[0]
  recon_r = vae_np(f64(vaes["remain_vae"]), e[4:])[0]
  expected = score_np(recon_r, e[4:]).sum() - score_np(recon_f, e[:4]).sum()
  np.testing.assert_allclose(float(ue), expected, rtol=1e-5)

  e = embed_np(model, moved, x)
  logits0, features0 = model.apply(initial, x, train=False)
  teacher = laf.Teacher(logits0, features0["embed"])
  lam, random_class = 0.3, np.array([2, 0, 9, 2])
  mix = laf.Mixture(jnp.float32(lam * x_f + (1 - lam) * x_r), jnp.asarray(random_class),
                    jnp.float32(lam))
  hp = hyperparameters(mix_weight=0.5, self_label="current", temperature=5.0)
  total, metrics = laf.alignment_loss(moved["params"], moved["batch_stats"], x, teacher, mix,
                                      model=model, hp=hp, terms=("ra", "mix"))
  t = embed_np(model, initial, x)
  ra = ra_np(e[4:], t[4:], e[:4], t[:4], 5.0)
  logits = lambda v, x: np.asarray(model.apply(v, x, train=False)[0], np.float64)  # noqa: E731
  target = lam * np.eye(10)[random_class] + (1 - lam) * softmax_np(logits(moved, x_r))
  l_mix = ((softmax_np(logits(moved, np.asarray(mix.images))) - target)**2).mean()
  np.testing.assert_allclose(float(metrics["l_ra"]), ra, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["l_mix"]), l_mix, rtol=1e-5)
  np.testing.assert_allclose(float(total), ra + 0.5 * l_mix, rtol=1e-5)
  hp.self_label = "initial"  # f_D's outputs as the remain part's target
  _, metrics = laf.alignment_loss(moved["params"], moved["batch_stats"], x, teacher, mix,
                                  model=model, hp=hp, terms=("mix",))
  target = lam * np.eye(10)[random_class] + (1 - lam) * softmax_np(logits(initial, x_r))
  l_mix = ((softmax_np(logits(moved, np.asarray(mix.images))) - target)**2).mean()
  assert set(metrics) == {"l_mix"}
  np.testing.assert_allclose(float(metrics["l_mix"]), l_mix, rtol=1e-5)


# -- the updates ----------------------------------------------------------------------


def adam_np(g, m, v, t, lr):
  """optax.adam's update of step t (b1 0.9, b2 0.999, eps 1e-8) in float64.

  Its bias corrections 1 - b^t are rounded to float32 as optax computes them
  (1 - 0.999 is 1.3e-5 off in float32).
  """
  m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
  correction = lambda b: np.float64(np.float32(1) - np.float32(b)**t)  # noqa: E731
  return -lr * (m / correction(0.9)) / (np.sqrt(v / correction(0.999)) + 1e-8), m, v


def paired(rng, size=8):
  return {"forget": {"image": images(rng, size)}, "remain": {"image": images(rng, size)}}


@pytest.fixture(scope="module")
def laf_steps(setting):
  """Two LAF steps (lr_ue 1e-2, lr_ra 2e-2) on two pairs of batches; the states on the host.

  The unlearner starts away from f_D: near f_D, 1 - cos loses float32 digits
  in L_RA's gradient.
  """
  model, mesh, initial, moved = setting
  f_d, start = shrunk(initial, 0.1), shrunk(moved, 0.1)
  program, _ = build("laf", (model, mesh, f_d, None), lr_ue=1e-2, lr_ra=2e-2)
  frozen = {"initial": f_d, **constant_decoders(program.frozen)}
  frozen_before = jax.tree.map(np.array, frozen)
  step = parallel.jit_step(program.phases[0].step, mesh, num_frozen=1)
  rng = np.random.default_rng(4)
  batches = [paired(rng), paired(rng)]
  state = program.state.replace(variables=jax.device_put(jax.tree.map(jnp.copy, start),
                                                         parallel.replicated(mesh)))
  states = [jax.tree.map(np.array, state)]
  for batch in batches:
    state, metrics = step(state, jax.device_put(batch, parallel.data_sharded(mesh)), frozen)
    assert np.isfinite(float(metrics["l_ue"])) and np.isfinite(float(metrics["l_ra"]))
    states.append(jax.tree.map(np.array, state))
  return program, batches, frozen, frozen_before, states


def test_each_step_is_one_ue_then_one_ra_adam_update_with_their_own_states(setting, laf_steps):
  model = setting[0]
  _, batches, frozen, _, states = laf_steps
  hp = hyperparameters(lr_ue=1e-2, lr_ra=2e-2)
  vae, keys = models.EmbeddingVAE(8), (jax.random.key(0), jax.random.key(1))
  f32 = lambda tree: jax.tree.map(jnp.float32, tree)  # noqa: E731
  extractor = lambda tree: {k: v for k, v in tree.items() if k not in HEAD}  # noqa: E731
  flat = lambda tree: np.concatenate([x.ravel() for x in jax.tree.leaves(tree)])  # noqa: E731
  for t, (batch, before, after) in enumerate(zip(batches, states, states[1:]), 1):
    params, bs = f64(before.variables["params"]), before.variables["batch_stats"]
    # Components whose Adam denominator sits at float32's noise (a gradient near but not
    # exactly 0 on step 1) turn that noise into a step of up to lr: they are left out.
    resolved = jax.tree.map(lambda p: np.ones(p.shape, bool), params)

    def adam(name, grads, lr):  # optax.adam on the state's own moments of this update
      nonlocal resolved
      moments = before.opt[name][0]
      grads, mu, nu = (jax.tree.map(np.float64, tree) for tree in (grads, moments.mu, moments.nu))
      resolved = jax.tree.map(lambda r, g, v: r & ((np.abs(g) + np.sqrt(v) > 1e-7)
                                                   | ((g == 0) & (v == 0))), resolved, grads, nu)
      return jax.tree.map(lambda p, g, m, v: p + adam_np(g, m, v, t, lr)[0], params, grads, mu,
                          nu)

    x = np.concatenate([batch["forget"]["image"], batch["remain"]["image"]])
    grads = jax.grad(laf.ue_loss)(f32(params), bs, x, frozen, keys, model=model, vae=vae)
    params = adam("ue", grads, 1e-2)
    logits0, features0 = model.apply(frozen["initial"], x, train=False)
    teacher = laf.Teacher(logits0, features0["embed"])
    grads = jax.grad(lambda p: laf.alignment_loss(p, bs, x, teacher, None, model=model, hp=hp,
                                                  terms=("ra",))[0])(f32(params))
    params = adam("ra", grads, 2e-2)
    start = extractor(f64(before.variables["params"]))
    delta = jax.tree.map(np.subtract, extractor(f64(after.variables["params"])), start)
    expected = jax.tree.map(np.subtract, extractor(params), start)
    mask = flat(extractor(resolved))
    assert mask.mean() > 0.99, mask.mean()
    got, want = flat(delta)[mask], flat(expected)[mask]
    assert np.linalg.norm(got - want) < 1e-5 * np.linalg.norm(want), t
    assert int(after.opt["ue"][0].count) == int(after.opt["ra"][0].count) == t


def test_unlearning_moves_no_head_parameter_and_never_the_vaes(laf_steps):
  program, _, frozen, frozen_before, states = laf_steps
  start, state = states[0].variables, states[-1]
  params = state.variables["params"]
  for name in params:
    moved = any(np.any(np.asarray(a) != np.asarray(b)) for a, b in
                zip(jax.tree.leaves(params[name]), jax.tree.leaves(start["params"][name])))
    assert moved == (name not in HEAD), name
  for name in ("ue", "ra"):  # no update ever saw a head gradient
    assert all(not np.any(np.asarray(m)) for m in jax.tree.leaves(
        {k: state.opt[name][0].mu[k] for k in HEAD}))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, frozen), frozen_before)
  assert set(program.frozen) == {"forget_vae", "remain_vae"}
  assert set(state.opt) == {"ue", "ra"}  # the state holds the classifier and two Adam states
  assert jax.tree.structure(state.variables) == jax.tree.structure(start)


def test_repair_moves_only_the_head_by_adam_on_remain_cross_entropy(setting):
  model, mesh, initial, _ = setting
  program, _ = build("laf_r", setting, repair_lr=1e-2)
  repair = program.phases[1]
  step = parallel.jit_step(repair.step, mesh, num_frozen=1)
  rng = np.random.default_rng(5)
  batches = [{"remain": {"image": images(rng, 8), "label": rng.integers(0, 10, 8)}}
             for _ in range(2)]
  state = program.state
  for batch in batches:
    state, _ = step(state, jax.device_put(batch, parallel.data_sharded(mesh)),
                    {"initial": initial, **program.frozen})
  head = {k: f64(initial["params"][k]) for k in HEAD}
  m, v = jax.tree.map(np.zeros_like, head), jax.tree.map(np.zeros_like, head)
  for t, batch in enumerate(batches, 1):
    e = embed_np(model, initial, batch["remain"]["image"])
    h = dense(head["Dense_1"], e)
    dz = (softmax_np(dense(head["Dense_2"], h)) - np.eye(10)[batch["remain"]["label"]]) / 8
    dh = dz @ head["Dense_2"]["kernel"].T
    grads = {"Dense_1": {"kernel": e.T @ dh, "bias": dh.sum(0)},
             "Dense_2": {"kernel": h.T @ dz, "bias": dz.sum(0)}}
    for layer in HEAD:
      for p in ("kernel", "bias"):
        step_np, m[layer][p], v[layer][p] = adam_np(grads[layer][p], m[layer][p], v[layer][p],
                                                    t, 1e-2)
        head[layer][p] = head[layer][p] + step_np
  params = f64(state.variables["params"])
  for layer in params:
    for p, value in params[layer].items():
      start = np.float64(initial["params"][layer][p])
      if layer in HEAD:
        expected = head[layer][p] - start
        error = np.linalg.norm(value - start - expected) / np.linalg.norm(expected)
        assert error < 1e-5, (layer, p, error)
      else:
        np.testing.assert_array_equal(value, start)


def test_lmix_mixture_has_one_lambda_per_batch_and_a_fixed_class_per_sample():
  hp = hyperparameters()
  rng = np.random.default_rng(6)
  batch = paired(rng, 100)
  batch["forget"]["index"] = np.arange(100, dtype=np.int32)
  mix = laf.mixture(batch, jax.random.key(1), 0, hp=hp, targets_key=jax.random.key(7),
                    num_classes=10, steps_per_epoch=5)
  lam = float(mix.lam)
  assert 0 < lam < 1 and np.ndim(mix.lam) == 0
  x_f, x_r = batch["forget"]["image"], batch["remain"]["image"]
  np.testing.assert_allclose(mix.images, lam * x_f + (1 - lam) * x_r, rtol=1e-5, atol=1e-6)
  assert set(np.asarray(mix.random_class).tolist()) == set(range(10))
  reordered = {"forget": {k: v[::-1] for k, v in batch["forget"].items()},
               "remain": batch["remain"]}
  later = laf.mixture(reordered, jax.random.key(2), 7, hp=hp, targets_key=jax.random.key(7),
                      num_classes=10, steps_per_epoch=5)
  assert float(later.lam) != lam
  np.testing.assert_array_equal(later.random_class, np.asarray(mix.random_class)[::-1])
  hp.fixed_targets = False  # a new ỹ every epoch: step 7 is in epoch 1
  redrawn = laf.mixture(batch, jax.random.key(1), 7, hp=hp, targets_key=jax.random.key(7),
                        num_classes=10, steps_per_epoch=5)
  assert np.any(np.asarray(redrawn.random_class) != np.asarray(mix.random_class))


# -- phases, streams and label access ---------------------------------------------------


@pytest.mark.parametrize("name", ["laf", "laf_r", "lmix"])
def test_vaes_train_as_sub_stages_and_only_laf_r_repair_reads_labels(setting, name):
  method = methods.get(name)
  program, ran = build(name, setting)
  names = [phase.name for phase, _ in ran] + [phase.name for phase in program.phases]
  assert names == ["forget_vae", "remain_vae", "unlearn"] + (["repair"] if name == "laf_r" else [])
  assert [phase.stream["data"].source for phase, _ in ran] == ["forget", "remain"]
  assert [phase.num_steps for phase, _ in ran] == [10 * 5, 10 * 12]  # 37 and 90 samples, 8 a batch
  assert program.phases[0].num_steps == 20 * 5  # an epoch: min(#forget, #remain) batches
  for phase in [phase for phase, _ in ran] + list(program.phases):
    methods.check_stream(method, phase.stream)
    for key, side in phase.stream.items():
      assert side.labels == (phase.name == "repair"), (phase.name, key)
      assert side.source == "remain" or not side.labels
  assert program.phases[0].stream["forget"].index == (name == "lmix")
  if name == "laf_r":
    assert program.phases[1].num_steps == 5  # one epoch of LAF's loop
  trained = {phase.name: deterministic(state.params) for phase, state in ran}
  for vae in ("forget_vae", "remain_vae"):  # the frozen VAEs are what ctx.run returned
    jax.tree.map(np.testing.assert_array_equal, program.frozen[vae], trained[vae])
  assert np.any(np.asarray(program.frozen["forget_vae"]["mu"]["kernel"])
                != np.asarray(program.frozen["remain_vae"]["mu"]["kernel"]))


def test_a_stage_identity_holds_only_the_shared_sections_fields_its_method_reads():
  config, tuned = config_lib.base_config(), config_lib.base_config()
  tuned.laf.update(mix_alpha=0.3, repair_lr=1e-3)
  fields = lambda c, name: identity.stage_fields(c, "unlearn", methods.get(name))  # noqa: E731
  assert identity.differing(fields(config, "laf"), fields(tuned, "laf")) == []
  assert identity.differing(fields(config, "laf_r"), fields(tuned, "laf_r")) == ["laf.repair_lr"]
  assert identity.differing(fields(config, "lmix"), fields(tuned, "lmix")) == ["laf.mix_alpha"]
  assert "laf.lr_ue" in fields(config, "laf") and "laf.lr_ue" in fields(config, "lmix")
  with pytest.raises(ValueError, match="overrides laf.mix_alpha"):
    methods.variant(methods.get("laf"), "laf_mixed", mix_alpha=1.0).hyperparameters(config)
  with pytest.raises(ValueError, match=r"ignores \['mix_alpa'\]"):
    dataclasses.replace(methods.get("laf"), ignores=("mix_alpa",))


def test_the_notebooks_remain_vae_trains_on_all_of_d(setting):
  _, ran = build("laf", setting, remain_vae_data="all")
  assert ran[1][0].stream["data"].source == "all"
  assert ran[1][0].num_steps == 10 * 16  # 127 samples
  with pytest.raises(ValueError, match="laf.remain_vae_data='both'"):
    build("laf", setting, remain_vae_data="both")


def test_defaults_are_lafs_cnn_class_row_and_paper_row_gives_the_others():
  defaults = config_lib.base_config().laf
  row = {"latent_dim": 8, "epochs": 20, "lr_ue": 5e-5, "lr_ra": 1e-4, "temperature": 20.0}
  assert {k: defaults[k] for k in row} == row == laf.paper_row("cnn", "class")
  assert laf.paper_row("resnet18", "class") == {"latent_dim": 16, "epochs": 40, "lr_ue": 1e-5,
                                                "lr_ra": 5e-5, "temperature": 20.0}
  assert laf.paper_row("cnn", "data")["temperature"] == 5.0
  assert laf.paper_row("resnet18", "noisy")["temperature"] == 5.0
  with pytest.raises(ValueError, match="vit_b16"):
    laf.paper_row("vit_b16", "class")
