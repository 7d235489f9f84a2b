r"""The embedded default: class-level unlearning of digit 0 on scikit-learn's digits.

Needs no download (1,797 8x8 images ship with scikit-learn) and runs the whole
job (pretrain, retrain, MixUnlearn label-aware and label-agnostic, evaluation)
for two seeds in about 90 s on a 2-core x86-64 CPU (88 s measured 2026-11-30):

  python -m mixunlearn_jax.main --config=configs/digits_class.py --workdir=runs/digits_class

Expected (results.md): Test_f of both MixUnlearn models near 0, like Retrain,
against about 100 for the initial model; Test_r within a few points of Retrain.
"""

from mixunlearn_jax import config as base


def get_config():
  c = base.base_config()
  c.seeds = (0, 1)
  c.data.name = "digits"
  c.model.name = "cnn"
  c.eval_batch_size = 120
  c.pretrain.epochs = 20
  c.retrain.epochs = 20
  c.mixunlearn.epochs = 20
  c.mixunlearn.lr = 5e-4
  c.checkpoint_every_steps = 200
  c.log_every_steps = 50
  return c
