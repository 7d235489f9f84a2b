r"""SVHN, class-level unlearning (forget every training image of class 0), with the paper's
settings (ResNet-18 (cifar stem), 5 seeds).

  python -m mixunlearn_jax.main --config=configs/svhn_class.py --workdir=runs/svhn_class

Cost: a GPU job (on 2 CPU cores one ResNet-18 unlearning step takes about 3.5 s, so a
seed takes days). Expected (results.md): Retrain Test_f = 0; MixUnlearn Test_r within
about 1 point of Retrain, Test_f near 0, ASR near Retrain's.
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("svhn_cropped", "class")
