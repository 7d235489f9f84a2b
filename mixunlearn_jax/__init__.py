"""mixunlearn-jax: MixUnlearn (Adversarial Mixup Unlearning, ICLR 2025) in JAX/Flax.

Importing the package changes nothing process-wide; the entry points
(main, sweep, benchmark) set XLA:CPU's flags (`runtime.configure`).
"""

__version__ = "0.1.0"
