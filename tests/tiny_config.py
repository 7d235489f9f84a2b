r"""A seconds-long digits job for tests: one seed, a few epochs, frequent checkpoints.

  python -m mixunlearn_jax.main --config=tests/tiny_config.py --workdir=runs/tiny
"""

from mixunlearn_jax import config as base


def get_config():
  c = base.base_config()
  c.seeds = (0,)
  c.data.name = "digits"
  c.batch_size = 32
  c.eval_batch_size = 120
  c.pretrain.epochs = 3
  c.retrain.epochs = 3
  c.unlearn.epochs = 6
  c.unlearn.lr = 1e-3
  c.checkpoint_every_steps = 5
  c.log_every_steps = 5
  return c
