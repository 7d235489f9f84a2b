r"""Fashion-MNIST, data-level unlearning (forget a random 40% of classes 5-9), with the
paper's settings (CNN, 5 seeds) but tau_real = 4; the baselines' hyperparameters tuned by the
paper's rule (below).

  python -m mixunlearn_jax.main --config=configs/fmnist_data.py --workdir=runs/fmnist_data --config.data.manual_dir=../shared/datasets/fashion_mnist

tau_real: at the paper's default 20, MixUnlearn under-forgets here (seed 0: Train_f 94.7
against Retrain's 90.0). The sweep in docs/results.md (tau_real 2/5/10/20, omega 1/30, 40
epochs, seed 0) found 5, of the paper's grid, meeting every target on seed 0, but over seeds
0-4 it under-forgets on every seed (Train_f 0.2-3.5 above Retrain's). 4, off the grid,
centres Train_f on Retrain's: seeds 0-4, label-aware Train_r / Train_f / Test / ASR gaps
0.22 / 0.55 / 0.60 / 0.09 (Train_f per seed -1.6 to +1.5); label-agnostic 2.30 / 2.21 / 0.39 / 0.04 (its
targets are f_D's predictions, so its Train_r cannot pass f_D's own, about 94.5). 3
over-forgets (seed 2: Train_f 81.0, Train_r 93.7); 2 destroys classes 5-9.

Cost: about 20-40 minutes per seed on 2 CPU cores (measured with other jobs running), minutes
on a GPU. Expected: docs/results.md.
"""

from mixunlearn_jax import config


def get_config():
  c = config.paper_config("fashion_mnist", "data")
  c.mixunlearn.tau_real = 4.0
  # launch/tune.sh (the paper's grid, seed 0, closest to Retrain; docs/results.md): distance
  # 2.22 against 7.37 at the default 1.0, which over-forgets (Train_f 76.1, Retrain 89.2).
  c.randlabel.retain_weight = 10.0
  # The same search over L-Mix's alpha (LAF's section; LAF does not read it): 0.3 (1.65; 0.5
  # and 0.75 1.79-1.94, 1 and 1.5 over-forget: Train_f 84.7-85.8 against Retrain's 90.5).
  c.laf.mix_alpha = 0.3
  # NegGrad+: alpha 0.5 and under diverge; 0.9091 (retain weight 10) 1.20, 0.9901 1.80.
  c.neggrad.alpha = 0.9091
  # GLI: K = 2 of 2-5 (2.29; every K leaves Train_f at 96.4-96.8, Retrain's 90.5).
  c.gli.iterations = 2
  # Unrolling (no grid in the paper; its eta is nominal): scale 1e-4 at the final weights (2.53;
  # 1e-4 to 0.01 all leave f_D as it is, 0.1 loses 65 points of Train_r).
  c.unrolling.update(scale_factor=0.0001, reference="final")
  # Teacher-Student: retain weight 100, the grid's largest (1.28; 1e-4 to 1 forget a third to
  # half of D_f and lose 17-27 points of Test), then T 0.5 (1.14; 1 to 3: 1.28-1.47), as on MNIST.
  c.teacher_student.update(retain_weight=100.0, temperature=0.5)
  # Boundary Shrink keeps its default epsilon 0.1, the grid's best (24.6; Train_r 72.4): every
  # epsilon wrecks the model here. SCRUB keeps its defaults: its max phase diverges at every
  # point of the grid (the KL to f_D grows from 0.2 to 3,000 in ten steps, NaN by step 60).
  return c
