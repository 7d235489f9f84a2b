r"""A seconds-long digits job for tests: one seed, a few epochs, frequent checkpoints.

  python -m mixunlearn_jax.main --config=tests/tiny_config.py --workdir=runs/tiny

Every registered method runs, with budgets under which each forgets class 0
on digits (Test_f at most half of f_D's).
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
  c.methods = ("mixunlearn_aware", "mixunlearn_agnostic", "neggrad", "scrub", "randlabel")
  c.mixunlearn.epochs = 6
  c.mixunlearn.lr = 1e-3
  c.neggrad.epochs = 3
  # SCRUB's small-scale recipe (BASELINES.md §8): the large-scale one does not forget here.
  c.scrub.update(optimizer="adam", lr=5e-4, epochs=5, max_epochs=3, temperature=2.0,
                 ce_weight=1.0, kd_weight=0.5, weight_decay=0.0, momentum=0.0)
  c.checkpoint_every_steps = 5
  c.log_every_steps = 5
  return c
