r"""MNIST, class-level unlearning (forget every training image of class 0), with the paper's
settings (CNN, 5 seeds).

  python -m mixunlearn_jax.main --config=configs/mnist_class.py --workdir=runs/mnist_class --config.data.manual_dir=../shared/datasets/mnist

Cost: about 12 minutes per seed on 2 quiet CPU cores (measured for seed 1), minutes on a GPU.
Expected (docs/results.md, seeds 0-4): Retrain Test_f = 0; MixUnlearn Test_r within 0.5 points
of Retrain and Test_f = 0, but ASR about 6 points below Retrain's (explained there).
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("mnist", "class")
