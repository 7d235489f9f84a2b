"""Losses as pure functions of probabilities, logits and targets.

MixUnlearn's (spec §3) reduce over the batch, in float32 whatever dtype the
model computed in; the baselines' terms are per sample, so that a method can
mask padding before it averages. The parameter-level losses, which decide
where gradients flow, live with each method under `methods/`.
"""

import jax
import jax.numpy as jnp

_NORM_EPS = 1e-8


def sharpen(probs, temperature):
  """Sharpen(q)_i = q_i^(1/T) / sum_j q_j^(1/T), computed in log space."""
  log_probs = jnp.log(jnp.maximum(probs.astype(jnp.float32), jnp.finfo(jnp.float32).tiny))
  return jax.nn.softmax(log_probs / temperature, axis=-1)


def sim_loss(a, b):
  """1 - cos(a, b) along the last axis, with an epsilon in the norms."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  norms = (jnp.maximum(jnp.linalg.norm(a, axis=-1), _NORM_EPS)
           * jnp.maximum(jnp.linalg.norm(b, axis=-1), _NORM_EPS))
  return 1.0 - jnp.sum(a * b, axis=-1) / norms


def contrastive(probs_mix, target_forget, target_remain, lam, temperature):
  """C(λ, τ) = mean_b[(1-λ) Sim(P_b, p(x_r^b))] - logsumexp_b(λ Sim(P_b, p(x_f^b)) / τ).

  `lam` is a scalar or one ratio per pair. This is the paper's Eq. 3/5
  divided by the batch size B.
  """
  lam = jnp.asarray(lam, jnp.float32)
  attract = jnp.mean((1.0 - lam) * sim_loss(probs_mix, target_remain))
  repel = jax.nn.logsumexp(lam * sim_loss(probs_mix, target_forget) / temperature)
  return attract - repel


def l_real(probs_forget, probs_remain, target_forget, target_remain, temperature):
  """L_real = mean_b Sim(P(x_r), p(x_r)) - logsumexp_b(Sim(P(x_f), p(x_f)) / τ_real)."""
  attract = jnp.mean(sim_loss(probs_remain, target_remain))
  repel = jax.nn.logsumexp(sim_loss(probs_forget, target_forget) / temperature)
  return attract - repel


def l_unlearn(mix_loss, real_loss, omega):
  """L_unlearn = L_mix + ω L_real."""
  return mix_loss + omega * real_loss


def cross_entropy(logits, labels):
  """Per-example softmax cross-entropy with integer labels, in float32."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def kd_divergence(student_logits, teacher_logits, temperature):
  """Per sample T² KL(softmax(t/T) || softmax(s/T)): SCRUB's distillation term D_T(s, t)."""
  log_p_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  return temperature**2 * kl


def squared_error(a, b):
  """Per sample mean over the last axis of (a - b)²: PyTorch's MSELoss before the batch mean."""
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=-1)


def teacher_kl(student_logits, teacher_probs, temperature):
  """Per sample KL(q || softmax(s/T)) to a teacher's softened outputs q, without T² (T-S).

  Bad teaching's code calls PyTorch's kl_div, which takes 0·log 0 as 0.
  """
  q = teacher_probs.astype(jnp.float32)
  log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jax.scipy.special.xlogy(q, q) - q * log_p_student, axis=-1)


def gli_objective(logits, labels, forget_logits, weight):
  """Per sample GLI's search objective J = -w CE(z, y) + MSE(z, z_f) on logits.

  Its batch mean is the notebooks' J (CE a batch mean, MSE a mean over all
  elements); ascent keeps the label while moving the logits from the forget batch's.
  """
  return -weight * cross_entropy(logits, labels) + squared_error(logits, forget_logits)


def vae_loss(recon, embed, mu, sigma, kl_weight=0.025):
  """LAF's L_VAE: (1/B) Σ ‖ê - e‖² + w (1/B) Σ -½ (log(σ² + 1e-8) + 1 - μ² - σ²)."""
  batch = embed.shape[0]
  recon, embed = recon.astype(jnp.float32), embed.astype(jnp.float32)
  reconstruction = jnp.sum(jnp.square(recon - embed)) / batch
  kl = -0.5 * jnp.sum(jnp.log(jnp.square(sigma) + 1e-8) + 1.0 - jnp.square(mu)
                      - jnp.square(sigma)) / batch
  return reconstruction + kl_weight * kl


def reconstruction_score(recon, embed):
  """Per sample exp(r / (r + 1)), r = ‖ê - e‖² summed over the embedding: L_UE's terms."""
  r = jnp.sum(jnp.square(recon.astype(jnp.float32) - embed.astype(jnp.float32)), axis=-1)
  return jnp.exp(r / (r + 1.0))


def extractor_unlearning(recon_remain, embed_remain, recon_forget, embed_forget):
  """L_UE = Σ_i score(h_r(e_i), e_i) - Σ_j score(h_f(e_j), e_j), summed over each batch."""
  return (jnp.sum(reconstruction_score(recon_remain, embed_remain))
          - jnp.sum(reconstruction_score(recon_forget, embed_forget)))


def representation_alignment(embed_remain, teacher_remain, embed_forget, teacher_forget,
                             temperature):
  """L_RA = Σ_i log(exp(a_i) / Σ_j exp(c_j / τ)) = Σ_i a_i - B_r log Σ_j exp(c_j / τ).

  a_i, c_j: 1 - cos between the embeddings and f_D's, on the remain and forget batch.
  """
  a = sim_loss(embed_remain, teacher_remain)
  c = sim_loss(embed_forget, teacher_forget)
  return jnp.sum(a) - a.shape[0] * jax.nn.logsumexp(c / temperature)


def mixup_squared_error(outputs_mix, target_forget, target_remain, lam):
  """Per sample MSE(out(x_mix), λ t_f + (1 - λ) t_r): L-Mix's term on vanilla mixtures."""
  lam = jnp.asarray(lam, jnp.float32)
  target = lam * target_forget.astype(jnp.float32) + (1.0 - lam) * target_remain.astype(
      jnp.float32)
  return squared_error(outputs_mix, target)
