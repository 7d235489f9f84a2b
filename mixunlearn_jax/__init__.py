"""mixunlearn-jax: MixUnlearn (Adversarial Mixup Unlearning, ICLR 2025) in JAX/Flax."""

import os

__version__ = "0.1.0"

# XLA:CPU hands convolutions to YNNPACK by default, whose kernel gradients run
# about 2x slower than Eigen's (ResNet-18's unlearning step: 3.6 s -> 2.4 s on
# 2 cores; docs/performance.md). Keep YNNPACK for dots only. XLA reads the
# flag when JAX starts its first backend, so importing this package first is
# enough; a user's own setting of the flag wins. Other backends ignore it.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
if _YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}=individual_dot".strip()
