r"""CIFAR-10, data-level unlearning (forget a random 40% of classes 5-9), with the paper's
settings (ResNet-18 (cifar stem), 5 seeds).

  python -m mixunlearn_jax.main --config=configs/cifar_data.py --workdir=runs/cifar_data

Cost: a GPU job (on 2 CPU cores one ResNet-18 unlearning step takes about 3.5 s, so a
seed takes days). Expected (results.md): MixUnlearn's Train_r, Train_f and Test within
about 1.5 points of Retrain, ASR near Retrain's.
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("cifar10", "data")
