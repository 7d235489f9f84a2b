"""mixunlearn-jax: MixUnlearn (Adversarial Mixup Unlearning, ICLR 2025) in JAX/Flax."""

import os

__version__ = "0.1.0"

# XLA:CPU's YNNPACK library runs convolutions' kernel gradients about 2x
# slower than Eigen's here, and reductions (BatchNorm's statistics) 10-35x
# faster than XLA's own loops. Hand it dots and reductions, not convolutions:
# ResNet-18's unlearning step 3.6 -> 2.3 s, its supervised step 1.05 -> 0.62 s
# on 2 cores (docs/performance.md, item 8). XLA reads the flag when JAX starts
# its first backend, so importing this package first is enough; a user's own
# setting of the flag wins. Other backends ignore it. It goes first because
# XLA silently ignores every flag after a token that is not a flag.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
if _YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      f"{_YNN_FLAG}=individual_dot,reduce {os.environ.get('XLA_FLAGS', '')}".strip())
