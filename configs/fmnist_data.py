r"""Fashion-MNIST, data-level unlearning (forget a random 40% of classes 5-9), with the
paper's settings (CNN, 5 seeds).

  python -m mixunlearn_jax.main --config=configs/fmnist_data.py --workdir=runs/fmnist_data --config.data.manual_dir=../shared/datasets/fashion_mnist

Cost: about 30 minutes per seed on 2 CPU cores (measured for mnist_class), minutes on a
GPU. Expected (results.md): MixUnlearn's Train_r, Train_f and Test within about 1.5
points of Retrain, ASR near Retrain's.
"""

from mixunlearn_jax import config


def get_config():
  return config.paper_config("fashion_mnist", "data")
