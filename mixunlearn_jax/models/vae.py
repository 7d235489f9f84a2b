"""LAF's variational autoencoder of a classifier's embeddings (BASELINES.md §10.1)."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class EmbeddingVAE(nn.Module):
  """Encoder d_e→128→32 (ReLU) to μ and s (σ = exp(s/2)); decoder back, sigmoid output.

  The sigmoid squashes the reconstruction into (0, 1) although embeddings
  are unbounded: a quirk of LAF's `Model.py`, kept for fidelity. The
  latent noise ε comes from the 'noise' rng stream (`rngs={'noise': key}`),
  and stays on when LAF freezes the VAE. Returns (ê, z, μ, σ); its loss is
  `losses.vae_loss`.
  """
  latent_dim: int = 8  # 8 for the CNN, 16 for ResNet-18 (LAF's hyperparameter.md)
  hidden: tuple[int, ...] = (128, 32)

  @nn.compact
  def __call__(self, embed):
    x = embed.astype(jnp.float32)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    mu = nn.Dense(self.latent_dim, name="mu")(x)
    sigma = jnp.exp(0.5 * nn.Dense(self.latent_dim, name="log_var")(x))
    z = mu + sigma * jax.random.normal(self.make_rng("noise"), mu.shape)
    x = z
    for width in reversed(self.hidden):
      x = nn.relu(nn.Dense(width)(x))
    return nn.sigmoid(nn.Dense(embed.shape[-1], name="output")(x)), z, mu, sigma
