r"""MNIST, data-level unlearning (forget a random 40% of classes 5-9), with the paper's
settings (CNN, 5 seeds); the baselines' hyperparameters tuned by the paper's rule (below).

  python -m mixunlearn_jax.main --config=configs/mnist_data.py --workdir=runs/mnist_data --config.data.manual_dir=../shared/datasets/mnist

Cost: about 20-40 minutes per seed on 2 CPU cores (measured with other jobs running), minutes on a
GPU. Expected (docs/results.md, seeds 0-4): MixUnlearn's Train_r, Train_f and Test within
0.9 points of Retrain on the means (Train_f 1.6-1.8 on seed 2), ASR within 0.2 (all about 50).
"""

from mixunlearn_jax import config


def get_config():
  c = config.paper_config("mnist", "data")
  # launch/tune.sh (the paper's grid, seed 0, closest to Retrain; docs/results.md): distance
  # 0.40 against 4.79 at the default 1.0, which over-forgets (Train_f 88.2, Retrain 97.9).
  c.randlabel.retain_weight = 10.0
  # The same search over L-Mix's alpha (LAF's section; LAF does not read it): every value
  # over-forgets (Train_f 89.6-92.6, Retrain 97.9); 0.3 the least, distance 3.01 against 3.43
  # (3 seeds: 6.74 against 6.94; docs/results.md).
  c.laf.mix_alpha = 0.3
  # NegGrad+: alpha 0.5 and under diverge; 0.9091 (retain weight 10) 0.53, 0.9901 0.73.
  c.neggrad.alpha = 0.9091
  # GLI: K = 4 of 2-5 (0.55 against 0.64 at 2; every K leaves f_D almost as it is).
  c.gli.iterations = 4
  # SCRUB: its max steps on D_f collapse the model (NaN by step 200) at T 1 to 4; at T 0.5 the
  # retain weight 0.01 is closest (0.62; 100 diverges), near f_D (Train_f 99.8).
  c.scrub.update(temperature=0.5, kd_weight=0.01)
  # Unrolling (no grid in the paper; its eta is nominal): scale 0.01 at theta_0 (0.51); 0.1
  # costs 26 points of Train_r, the default 1 leaves a constant classifier (Test 10.3).
  c.unrolling.scale_factor = 0.01
  # Teacher-Student: retain weight 100, the grid's largest (0.49; 1e-4 to 1 forget a quarter of
  # D_f and lose 10 points of Test), then T 0.5 (0.43; 1 to 3: 0.45-0.55).
  c.teacher_student.update(retain_weight=100.0, temperature=0.5)
  # Boundary Shrink keeps its default epsilon 0.1, the grid's best (6.08; 0.5: 46.0).
  return c
