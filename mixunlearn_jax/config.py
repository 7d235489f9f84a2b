"""The config schema with the spec's defaults; files in configs/ override it.

Every field a user might change lives here. Config files call
`base_config()` and set what differs, so a typo in an override
(`--config.mixunlearn.tau_mxi=5`) is an error naming the field.
"""

import pprint

import ml_collections

from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import mean_teacher


def base_config():
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2, 3, 4)
  c.setup = "class"  # class | data | noisy | semi
  c.forget_class = 0  # class setup
  c.forget_classes = (5, 6, 7, 8, 9)  # data and semi setups
  c.forget_fraction = 0.4
  c.noisy_classes = (0, 1, 2, 3, 4)
  c.noisy_fraction = 0.6
  c.unlabelled_fraction = 0.6  # semi setup
  # Sequential deletion requests (sequential.py): 1 is the paper's single request; k > 1
  # deletes classes forget_class, +1, ... (class setup) or D_f in k equal parts, in turn.
  c.requests = 1
  c.batch_size = 32  # global, over all devices
  c.eval_batch_size = 500
  c.methods = ("mixunlearn_aware", "mixunlearn_agnostic")
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 200

  c.model = ml_collections.ConfigDict()
  c.model.name = "cnn"  # see mixunlearn_jax.models.names()
  c.model.dtype = "float32"  # bfloat16 on accelerators; params stay float32
  c.model.kwargs = ml_collections.ConfigDict()  # e.g. stem='imagenet' for resnet18
  c.model.pretrained_npz = ""  # ViT: a local ImageNet-21k .npz to start f_D from
  # On one CPU device, run convolutions on oneDNN when it is installed (models/onednn.py).
  c.model.cpu_onednn = True

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data dir
  c.data.manual_dir = ml_collections.config_dict.placeholder(str)  # raw files, offline
  c.data.download = True  # may tfds download missing raw files (needs network)
  c.data.image_size = 0  # resize side for imagenet_val; 0 keeps the native size
  c.data.crop_padding = 0  # training augmentation: random crop after this padding
  c.data.random_flip = False

  # Initial model f_D on D, and the retrained gold standard on D_r (spec §5).
  for name, epochs in [("pretrain", 10), ("retrain", 20)]:
    stage = ml_collections.ConfigDict()
    stage.epochs = epochs
    stage.lr = 1e-3
    stage.reuse_workdir = ""  # take this stage's finished model from another workdir
    c[name] = stage
  # In the semi setup both are trained with Mean Teacher (engine/mean_teacher.py, which
  # gives each default's source) on top of their section's epochs and lr.
  c.mean_teacher = mean_teacher.default_config()
  # Take each method's work before any deletion request (SISA's and DSMixup's initial shard
  # ensembles) from this workdir where the method finished with the same fields but the
  # stopping rule's: a run with the rule beside the fixed-budget one (experiment.lent_setup).
  c.method_setup_reuse_workdir = ""

  # One section per method, named after it, with its defaults (methods/<name>.py):
  # mixunlearn (spec §4; both label modes), neggrad, scrub, randlabel, ...
  for section, defaults in methods.sections().items():
    c[section] = defaults()

  c.asr = ml_collections.ConfigDict()
  c.asr.trees = 100  # boosting iterations of the attacker
  # Attack protocols (spec §6): 'spec' (the default) and 'laf', the attack as LAF's code runs
  # it (needs the raw test files' order: data.manual_dir for MNIST and Fashion-MNIST). The
  # first is the ASR column and counts in the distance to Retrain; each other one adds a
  # column ASR_<protocol>.
  c.asr.protocols = ("spec",)

  # The stopping rule (engine/stopping.py): stop unlearning once D_f looks like unseen data.
  # Off by default, so the paper's fixed budgets stay as they were. On, it carves a held-out
  # pool out of the training set before pretraining (D, and so f_D, Retrain and every
  # method, then leave it out; no metric scores it): class and data setups only.
  c.stop = ml_collections.ConfigDict()
  c.stop.enabled = False
  c.stop.heldout_per_class = 100  # training samples of every class carved into the pool
  c.stop.check_every = 50  # steps between checks, counted over a method's phases together
  c.stop.patience = 3  # checks in a row that must meet the rule
  # Met: |AUC - 0.5| of the loss attack, D_f sample vs held-out samples of its classes, at most
  # this (0.5 turns the AUC condition off)...
  c.stop.auc_tolerance = 0.05
  c.stop.forget_accuracy = 1.0  # ...and, class setup, held-out forget-class accuracy (%) at most
  # Guard: stop at once when held-out accuracy on the other classes (data setups: all) falls
  # more than this many points below f_D's.
  c.stop.guard_tolerance = 5.0
  # Check and record, but run the fixed budget: the fixed budget on the same data, to compare.
  c.stop.dry_run = False

  # The report's figures (plots/: loss densities, t-SNE, mixed samples, the stopping rule's
  # traces). False draws none: a job's results do not change; `python -m mixunlearn_jax.report`
  # draws them later from the saved evaluations.
  c.plots = True

  # t-SNE of the models' embeddings (paper §5.6): each evaluation saves features['embed'] of
  # a fixed sample per seed, and the report draws plots/tsne_seed<s>.png from them.
  c.tsne = ml_collections.ConfigDict()
  c.tsne.samples = 300  # images drawn from each of D_f, D_r and the test set; 0: no t-SNE
  c.tsne.perplexity = 30.0  # sklearn.manifold.TSNE's (capped below the point count)
  c.tsne.max_iter = 500  # optimisation steps, the first 250 with early exaggeration
  return c


# Spec §4-§5 per dataset: model, augmentation and the paper's training budgets.
_CNN = dict(model="cnn", pretrain=(10, 1e-3), retrain=(20, 1e-3), unlearn=(20, 5e-5), augment=(0, False))
_RESNET = dict(model="resnet18", pretrain=(20, 5e-5), retrain=(40, 5e-5), unlearn=(40, 1e-5))
PAPER_DATASETS = {
    "mnist": _CNN,
    "fashion_mnist": _CNN,
    "cifar10": dict(_RESNET, augment=(4, True)),
    "svhn_cropped": dict(_RESNET, augment=(4, False)),  # no flips for digits
}


def paper_config(dataset, setup):
  """The paper's settings (5 seeds) for `dataset` in `setup`."""
  preset = PAPER_DATASETS[dataset]
  c = base_config()
  c.data.name, c.setup, c.model.name = dataset, setup, preset["model"]
  c.data.crop_padding, c.data.random_flip = preset["augment"]
  for stage, section in [("pretrain", "pretrain"), ("retrain", "retrain"),
                         ("unlearn", "mixunlearn")]:
    c[section].epochs, c[section].lr = preset[stage]
  return c


def pretraining_recipe(config):
  """How f_D was trained, as methods read it (`UnlearnContext.recipe`)."""
  return {"epochs": config.pretrain.epochs, "lr": config.pretrain.lr,
          "batch_size": config.batch_size, "optimizer": "adam"}


def parse_override(text, config):
  """'mixunlearn.alpha=0.3,0.75' -> ('mixunlearn.alpha', [0.3, 0.75]), typed like the field."""
  field, _, values = text.partition("=")
  kind = type(get_field(config, field))
  return field, [kind(v) if kind is not bool else v.lower() == "true" for v in values.split(",")]


def get_field(config, field):
  """The value of dotted `field` of `config`; a clear error for a typo."""
  current = config
  for part in field.split("."):
    if part not in current:
      raise ValueError(f"{field!r} is not a config field.")
    current = current[part]
  return current


def set_field(config, field, values):
  """Sets dotted `field` of `config` to `values[0]` (the form `parse_override` returns)."""
  if len(values) != 1:
    raise ValueError(f"{field}: one value expected, got {values}.")
  *parents, leaf = field.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = values[0]


def catalogue():
  """What a config can name, one line each."""
  lines = ["methods (config.methods; labels each may read; source):"]
  width = max(len(m.name) for m in methods.all_methods())
  lines += [f"  {m.name:{width}s} {m.labels:7s} {m.source}" for m in methods.all_methods()]
  lines += [f"models (config.model.name): {', '.join(models.names())}",
            f"datasets (config.data.name): {', '.join(data.names())}",
            f"setups (config.setup): {', '.join(data.SETUPS)}"]
  return "\n".join(lines)


def as_file(config):
  """A config file whose get_config() returns `config` resolved."""
  return (f'"""A resolved config; run it with --config=<this file>."""\n\n'
          "import ml_collections\n\n\ndef get_config():\n"
          f"  return ml_collections.ConfigDict({pprint.pformat(config.to_dict(), indent=2)})\n")
