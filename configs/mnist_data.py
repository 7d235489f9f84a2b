r"""MNIST, data-level unlearning (forget a random 40% of classes 5-9), with the paper's
settings (CNN, 5 seeds).

  python -m mixunlearn_jax.main --config=configs/mnist_data.py --workdir=runs/mnist_data --config.data.manual_dir=../shared/datasets/mnist

Cost: about 20-40 minutes per seed on 2 CPU cores (measured with other jobs running), minutes on a
GPU. Expected (docs/results.md, seeds 0-4): MixUnlearn's Train_r, Train_f and Test within
0.9 points of Retrain on the means (Train_f 1.6-1.8 on seed 2), ASR within 0.2 (all about 50).
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("mnist", "data")
