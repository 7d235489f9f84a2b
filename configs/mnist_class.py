r"""MNIST, class-level unlearning (forget every training image of class 0), with the paper's
settings (CNN, 5 seeds).

  python -m mixunlearn_jax.main --config=configs/mnist_class.py --workdir=runs/mnist_class --config.data.manual_dir=../shared/datasets/mnist

Cost: about 30 minutes per seed on 2 CPU cores (measured for mnist_class), minutes on a
GPU. Expected (results.md): Retrain Test_f = 0; MixUnlearn Test_r within about 1 point
of Retrain, Test_f near 0, ASR near Retrain's.
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("mnist", "class")
