"""Per-stage identity: the config fields each stage of a seed depends on.

A workdir holds stages (the split, f_D, Retrain, one per method) and their
evaluations. Each records, when it starts, the fields it was made with. A
rerun may add methods or seeds, or change fields no finished stage depends
on (`OPERATIONAL`); a stage whose own fields changed is refused with their
names, and `--overwrite` deletes just those stages (and their evaluations).

What depends on what:
- the split: the data and setup fields (`COMMON`: everything but the
  operational fields and the sections below);
- pretrain / retrain: COMMON and their own section, plus the `mean_teacher`
  section in the semi setup (which trains them with it);
- a method: COMMON, the pretrain section (f_D is its start; in the semi setup
  `mean_teacher` too) and the fields of its own section it reads (less its
  `ignores`), with its variant's overrides applied;
- an evaluation: its model's stage, the `asr` section and `tsne.samples`
  (the embeddings it saves; the t-SNE's own settings only change the plot);
- the stopping rule (`stop`): with `stop.enabled`, the held-out pool changes
  D, so every stage depends on `stop.enabled` and `stop.heldout_per_class`,
  and a method's stage on the whole section; off, on `stop.enabled` alone.
Fields that a stage's record lacks (added to the config since) are not
compared, so new fields with defaults do not invalidate old workdirs.
"""

import json
import os

OPERATIONAL = frozenset({
    "seeds", "methods", "checkpoint_every_steps", "log_every_steps", "eval_batch_size",
    "data.data_dir", "data.manual_dir", "data.download", "model.cpu_onednn",
    "pretrain.reuse_workdir", "retrain.reuse_workdir", "method_setup_reuse_workdir", "plots",
    "tsne.perplexity", "tsne.max_iter"})
SPLIT, PRETRAIN, RETRAIN = "split", "pretrain", "retrain"
EVALUATION_SECTIONS = ("asr", "tsne")  # what evaluations depend on besides their model
MEAN_TEACHER = "mean_teacher"
STOP, POOL = "stop", ("stop.enabled", "stop.heldout_per_class")
_FILE = "identity.json"


def flatten(tree, prefix=""):
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def _json(config):
  return json.loads(config.to_json_best_effort())


def stage_fields(config, stage, method=None):
  """{field: value} that `stage` ('split', 'pretrain', 'retrain' or a method's) depends on.

  `method`, a methods.Method, for a method's stage; its section is taken
  with the variant's overrides.
  """
  from mixunlearn_jax import methods  # pylint: disable=import-outside-toplevel
  flat = flatten(_json(config))
  sections = {m.section for m in methods.all_methods()} | {
      *EVALUATION_SECTIONS, PRETRAIN, RETRAIN, MEAN_TEACHER, STOP}
  common = {k: v for k, v in flat.items()
            if k not in OPERATIONAL and k.split(".")[0] not in sections}
  own = lambda section: {k: v for k, v in flat.items()  # noqa: E731
                         if k.split(".")[0] == section and k not in OPERATIONAL}
  rule = own(STOP) if flat.get("stop.enabled") else {
      k: v for k, v in flat.items() if k == "stop.enabled"}
  common.update({k: v for k, v in rule.items() if k in POOL})
  if stage == SPLIT:
    return common
  trainer = own(MEAN_TEACHER) if config.setup == "semi" else {}
  if stage in (PRETRAIN, RETRAIN):
    return {**common, **own(stage), **trainer}
  hyperparameters = flatten(json.loads(method.hyperparameters(config).to_json_best_effort()),
                            f"{method.section}.")
  return {**common, **own(PRETRAIN), **trainer, **hyperparameters, **rule}


def before_request(fields):
  """A method's `fields` that its work before any deletion request depends on: all but the
  stopping rule's own (its held-out pool changes D, so `POOL` stays)."""
  return {k: v for k, v in fields.items() if k.split(".")[0] != STOP or k in POOL}


def evaluation_fields(config, stage_identity):
  return {**stage_identity, **{k: v for k, v in flatten(_json(config)).items()
                               if k.split(".")[0] in EVALUATION_SECTIONS
                               and k not in OPERATIONAL}}


def differing(recorded, current):
  """Sorted fields whose values differ, over the fields both records hold."""
  return sorted(k for k in set(recorded) & set(current) if recorded[k] != current[k])


def read(seed_dir):
  """{stage: fields} recorded in a seed's folder ({} for a new seed)."""
  path = os.path.join(seed_dir, _FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def record(seed_dir, stage, fields):
  """Adds `stage`'s fields to the seed's record (process 0 only)."""
  recorded = read(seed_dir)
  if recorded.get(stage) != fields:
    _write(seed_dir, {**recorded, stage: fields})


def forget(seed_dir, stage):
  """Drops `stage` from the seed's record (its files are deleted by the caller)."""
  recorded = read(seed_dir)
  if recorded.pop(stage, None) is not None:
    _write(seed_dir, recorded)


def _write(seed_dir, recorded):
  """Written whole and renamed, so no process reads a half-written record."""
  os.makedirs(seed_dir, exist_ok=True)
  temporary = os.path.join(seed_dir, f"{_FILE}.{os.getpid()}.tmp")
  with open(temporary, "w") as f:
    json.dump(recorded, f, indent=1, sort_keys=True)
  os.replace(temporary, os.path.join(seed_dir, _FILE))
