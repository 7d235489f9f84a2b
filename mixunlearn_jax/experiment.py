"""The whole job of spec §1 for every seed: pretrain, retrain, unlearn, evaluate.

    from mixunlearn_jax import config, experiment
    experiment.run(config.base_config(), "runs/demo")

Layout of a workdir:
    config.json                       the resolved config (a rerun must match it,
                                      except for the seeds)
    seed_<s>/split.npz                forget/remain indices and training labels
    seed_<s>/<stage>/checkpoints/     Orbax checkpoints (pretrain, retrain,
                                      unlearn_<method>) and TensorBoard events
    seed_<s>/eval/<model>.json        metrics, stage time and throughput
    results.json, results.md          mean ± std over seeds, gap to Retrain
Every stage and evaluation is skipped when finished and resumed when not.
"""

import functools
import json
import os
import shutil
import zlib

from absl import logging
import jax
import numpy as np
import optax

from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.evaluation import metrics
from mixunlearn_jax.evaluation import report


def run(config, workdir, *, overwrite=False):
  """Runs (or resumes) the job of `config` in `workdir`; returns the results dict."""
  parallel.maybe_initialize_distributed()
  validate(config)
  prepare_workdir(config, workdir, overwrite)
  mesh = parallel.make_mesh()
  for field in ("batch_size", "eval_batch_size"):
    parallel.check_batch_size(config[field], mesh, field)
  dataset = data.load(config.data.name, data_dir=config.data.data_dir,
                      manual_dir=config.data.manual_dir, image_size=config.data.image_size or None,
                      download=config.data.download)
  logging.info("%s: %d training / %d test images of shape %s on %d devices.", dataset.name,
               len(dataset.train_labels), len(dataset.test_labels), dataset.image_shape,
               jax.device_count())
  for seed in config.seeds:
    Seed(config, dataset, seed, workdir, mesh).run()
  if jax.process_index() == 0:
    return report.rebuild(workdir, metrics.metric_names(config.setup))
  return None


def validate(config):
  """Errors for values that would otherwise fail deep inside the run."""
  if config.setup not in data.SETUPS:
    raise ValueError(f"setup={config.setup!r}; known setups: {', '.join(data.SETUPS)}.")
  if config.setup == "semi":
    raise NotImplementedError("The semi setup needs Mean-Teacher pretraining, which is not "
                              "implemented yet.")
  models.create(config.model.name)  # raises for unknown model names
  for name in config.methods:
    method = methods.get(name)
    if config.setup == "noisy" and not method.uses_labels:
      raise ValueError(f"The noisy setup is for label-aware methods only; remove {name!r}.")
  if not config.seeds:
    raise ValueError("seeds is empty; give at least one seed.")


def prepare_workdir(config, workdir, overwrite):
  """Refuses a workdir that holds a run of another config, unless `overwrite`.

  `seeds` may differ: every seed has its own folder, so a rerun with more
  seeds extends a run, and one process per seed may share a workdir (a last
  run with all the seeds then finds every stage done and writes the table).
  """
  path = os.path.join(workdir, "config.json")
  resolved = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    changed = sorted(set(_diff(previous, resolved)) - {"seeds"})
    if changed:
      if not overwrite:
        raise ValueError(f"{workdir} holds a run of another config (differs in {changed}). "
                         "Use another --workdir, or pass --overwrite to delete that run.")
      if jax.process_index() == 0:
        shutil.rmtree(workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    # Written whole and renamed, so that processes sharing the workdir never
    # read a half-written file.
    with open(f"{path}.{os.getpid()}.tmp", "w") as f:
      json.dump(resolved, f, indent=2)
    os.replace(f"{path}.{os.getpid()}.tmp", path)


def _diff(a, b, prefix=""):
  for key in set(a) | set(b):
    x, y = a.get(key), b.get(key)
    if isinstance(x, dict) and isinstance(y, dict):
      yield from _diff(x, y, f"{prefix}{key}.")
    elif x != y:
      yield prefix + key


def derive_seed(seed, name):
  """A stable per-(seed, purpose) integer seed (unlike hash(), the same in every process)."""
  return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


class Seed:
  """One seed's stages; each returns classifier variables and a timing record."""

  def __init__(self, config, dataset, seed, workdir, mesh):
    self.config, self.dataset, self.seed, self.mesh = config, dataset, seed, mesh
    self.dir = os.path.join(workdir, f"seed_{seed}")
    self.model = models.create(config.model.name, num_classes=dataset.num_classes,
                               dtype=config.model.dtype, cpu_onednn=config.model.cpu_onednn,
                               **config.model.kwargs)
    self.preprocess = data.Preprocess(dataset.mean, dataset.std, config.data.crop_padding,
                                      config.data.random_flip)
    self.split = self._split()
    self._initial = None

  def run(self):
    """Trains, unlearns and evaluates whatever is not finished yet."""
    self._evaluated("initial", self.initial)
    self._evaluated("retrain", functools.partial(self._supervised, "retrain", self.split.remain))
    for name in self.config.methods:
      self._evaluated(name, functools.partial(self._unlearn, name))

  def initial(self):
    """f_D: trained on D (or restored once finished); computed once per Seed."""
    if self._initial is None:
      self._initial = self._supervised("pretrain", np.arange(len(self.split.train_labels)))
    return self._initial

  # -- data ------------------------------------------------------------------

  def _split(self):
    path = os.path.join(self.dir, "split.npz")
    c = self.config
    split = data.make_split(
        c.setup, self.dataset.train_labels, num_classes=self.dataset.num_classes, seed=self.seed,
        forget_class=c.forget_class, forget_classes=c.forget_classes,
        forget_fraction=c.forget_fraction, noisy_classes=c.noisy_classes,
        noisy_fraction=c.noisy_fraction, unlabelled_fraction=c.unlabelled_fraction)
    if os.path.exists(path):
      saved = data.Split.load(path)
      if not (saved.forget.tolist() == split.forget.tolist()
              and saved.train_labels.tolist() == split.train_labels.tolist()):
        raise ValueError(f"{path} does not match the split this config and seed give.")
      return saved
    if jax.process_index() == 0:
      os.makedirs(self.dir, exist_ok=True)
      split.save(path)
    return split

  def _device_batches(self, pipeline_fn, **kwargs):
    sharding = parallel.data_sharded(self.mesh)
    return lambda start: parallel.device_prefetch(pipeline_fn(start_step=start, **kwargs), sharding)

  # -- stages ----------------------------------------------------------------

  def _stage(self, name, **kwargs):
    directory = os.path.join(self.dir, name)
    return loop.run_stage(name=f"seed {self.seed} / {name}", directory=directory,
                          checkpoint_every=self.config.checkpoint_every_steps,
                          log_every=self.config.log_every_steps,
                          write_summaries=jax.process_index() == 0, **kwargs)

  def _supervised(self, stage, indices):
    """Trains a classifier from scratch on `indices` (pretrain: D, retrain: D_r)."""
    section = self.config[stage]
    if section.reuse_workdir:
      return self._reused(stage, section.reuse_workdir)
    tx = optax.adam(section.lr)
    key = jax.random.key(derive_seed(self.seed, stage))
    state = supervised.create_train_state(self.model, tx, key, self.dataset.image_shape, self.mesh)
    batch_size = self.config.batch_size
    num_steps = section.epochs * data.steps_per_epoch(len(indices), batch_size)
    result = self._stage(
        stage, state=state, num_steps=num_steps, examples_per_step=batch_size,
        step_fn=parallel.jit_step(supervised.train_step, self.mesh, model=self.model, tx=tx),
        batches=self._device_batches(
            data.train_pipeline, images=self.dataset.train_images,
            labels=self.split.train_labels, indices=indices, batch_size=batch_size,
            num_steps=num_steps, seed=derive_seed(self.seed, stage), preprocess=self.preprocess))
    return result.state.variables, result

  def _reused(self, stage, other_workdir):
    """Loads a finished stage of another workdir trained on the same data.

    f_D only needs the same training labels (so a class-setup run can lend it
    to a data-setup run); Retrain also needs the same forget set.
    """
    other = os.path.join(other_workdir, f"seed_{self.seed}")
    saved = data.Split.load(os.path.join(other, "split.npz"))
    same = saved.train_labels.tolist() == self.split.train_labels.tolist()
    if stage == "retrain":
      same = same and saved.forget.tolist() == self.split.forget.tolist()
    if not same:
      raise ValueError(f"{other} trained {stage} on other data; it cannot be reused here.")
    tx = optax.adam(self.config[stage].lr)
    state = supervised.create_train_state(self.model, tx, jax.random.key(0),
                                          self.dataset.image_shape, self.mesh)
    result = loop.restore_finished(os.path.join(other, stage), state)
    return result.state.variables, result

  def _unlearn(self, name):
    initial, _ = self.initial()
    method = methods.get(name)
    ctx = methods.UnlearnContext(
        model=self.model, initial=initial, image_shape=self.dataset.image_shape,
        num_classes=self.dataset.num_classes, num_forget=len(self.split.forget),
        num_remain=len(self.split.remain), batch_size=self.config.batch_size,
        config=self.config[method.config_key], seed=derive_seed(self.seed, name),
        mesh=self.mesh, run_stage=self._stage)
    program = method.build(ctx)
    step = parallel.jit_step(program.step, self.mesh, num_frozen=1)
    batches = self._device_batches(
        data.paired_pipeline, images=self.dataset.train_images, labels=self.split.train_labels,
        forget=self.split.forget, remain=self.split.remain, batch_size=self.config.batch_size,
        num_steps=program.num_steps, seed=derive_seed(self.seed, name),
        preprocess=self.preprocess, with_labels=method.uses_labels)
    result = self._stage(
        f"unlearn_{name}", state=program.state, num_steps=program.num_steps,
        examples_per_step=self.config.batch_size,
        step_fn=lambda state, batch: step(state, batch, initial), batches=batches)
    if program.samples:
      samples = jax.device_get(program.samples(result.state, next(batches(0)), initial))
      self._save(f"{name}_samples.npz", samples)
    return program.classifier(result.state), result

  # -- evaluation ------------------------------------------------------------

  def _evaluated(self, name, train):
    """Evaluates model `name`, trained by `train()`, unless that is done already.

    Writes eval/<name>.json (metrics, stage time, throughput) last, so its
    presence marks the evaluation finished, and eval/<name>_losses.npz, the
    per-sample cross-entropy on D_f and the test set for the report's plots.
    """
    if os.path.exists(os.path.join(self.dir, "eval", f"{name}.json")):
      return
    variables, result = train()
    train_probs, test_probs = self._probs(variables)
    scores, attack = metrics.evaluate(
        train_probs, test_probs, setup=self.config.setup, split=self.split,
        test_labels=self.dataset.test_labels, forget_class=self.config.forget_class,
        attack_sets=metrics.AttackSets.make(self.split.forget, self.split.remain,
                                            len(self.dataset.test_labels), self.seed),
        seed=self.seed, trees=self.config.asr.trees)
    record = {"metrics": scores, "attack": attack, "seconds": result.seconds,
              "examples_per_sec": result.examples_per_sec}
    logging.info("seed %d / %s: %s", self.seed, name,
                 ", ".join(f"{k}={v:.2f}" for k, v in record["metrics"].items()))
    self._save(f"{name}_losses.npz", {
        "forget": metrics.per_sample_cross_entropy(train_probs[self.split.forget],
                                                   self.split.train_labels[self.split.forget]),
        "test": metrics.per_sample_cross_entropy(test_probs, self.dataset.test_labels)})
    self._save(f"{name}.json", record)

  def _probs(self, variables):
    predict = metrics.make_predict(self.model, self.mesh)
    return [metrics.predict_probs(predict, variables, images, labels, np.arange(len(labels)),
                                  batch_size=self.config.eval_batch_size,
                                  preprocess=self.preprocess, mesh=self.mesh)
            for images, labels in [(self.dataset.train_images, self.split.train_labels),
                                   (self.dataset.test_images, self.dataset.test_labels)]]

  def _save(self, filename, content):
    """Writes eval/<filename> (.json or .npz) from process 0."""
    if jax.process_index() != 0:
      return
    path = os.path.join(self.dir, "eval", filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if filename.endswith(".json"):
      with open(path, "w") as f:
        json.dump(content, f, indent=2)
    else:
      np.savez(path, **content)
