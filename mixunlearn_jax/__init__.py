"""mixunlearn-jax: MixUnlearn (Adversarial Mixup Unlearning, ICLR 2025) in JAX/Flax."""

__version__ = "0.1.0"
