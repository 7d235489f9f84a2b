r"""Fashion-MNIST, data-level unlearning (forget a random 40% of classes 5-9), with the
paper's settings (CNN, 5 seeds).

  python -m mixunlearn_jax.main --config=configs/fmnist_data.py --workdir=runs/fmnist_data --config.data.manual_dir=../shared/datasets/fashion_mnist

Cost: about 20-40 minutes per seed on 2 CPU cores (measured with other jobs running), minutes on a
GPU. Expected (docs/results.md, seed 0): MixUnlearn's Test within 1.5 points of Retrain
and ASR within 0.1 (about 50), but Train_f about 4.7 points above Retrain's (under-forgetting).
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("fashion_mnist", "data")
