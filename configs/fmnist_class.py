r"""Fashion-MNIST, class-level unlearning (forget every training image of class 0), with the
paper's settings (CNN, 5 seeds).

  python -m mixunlearn_jax.main --config=configs/fmnist_class.py --workdir=runs/fmnist_class --config.data.manual_dir=../shared/datasets/fashion_mnist

Cost: about 12 minutes per seed on 2 quiet CPU cores (measured for mnist_class seed 1), minutes on a
GPU. Expected (docs/results.md, seeds 0-4): Retrain Test_f = 0; MixUnlearn Test_r within 1 point
of Retrain, Test_f = 0 (label-agnostic: 6.8 on one seed of five), ASR 7-8 points below Retrain's.
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("fashion_mnist", "class")
