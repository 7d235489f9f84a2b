"""The whole job of spec §1 for every seed: split, pretrain, retrain, unlearn, evaluate.

    from mixunlearn_jax import config, experiment
    experiment.run(config.base_config(), "runs/demo")

Layout of a workdir:
    config.json                       the resolved config of the latest run
    seed_<s>/identity.json            the config fields each stage was made with
    seed_<s>/split.npz                forget/remain indices and training labels
    seed_<s>/<stage>/checkpoints/     Orbax checkpoints (pretrain, retrain,
                                      unlearn_<method>[/<phase>]) and TensorBoard events
    seed_<s>/eval/<model>.json        metrics, stage time and throughput
    results.json, results.md          mean ± std over seeds, gap to Retrain
Every stage and evaluation is skipped when finished and resumed when not. A
rerun may add methods and seeds or change operational fields; a stage whose
own fields changed is refused, or with `overwrite` deleted and redone
(engine/identity.py).
"""

import dataclasses
import functools
import json
import os
import shutil
import zlib

from absl import logging
import jax
import numpy as np
import optax

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax.engine import identity
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import supervised
from mixunlearn_jax.evaluation import metrics
from mixunlearn_jax.evaluation import report

INITIAL, RETRAIN = "initial", "retrain"


@dataclasses.dataclass(frozen=True)
class Job:
  """What every seed of a run shares."""
  config: object
  workdir: str
  dataset: data.Dataset
  mesh: object
  model: object
  preprocess: data.Preprocess


@dataclasses.dataclass(frozen=True)
class Trained:
  """A stage's model: what evaluation predicts with, and how the stage ran."""
  result: object  # classifier variables, or a method's own result
  stage: loop.StageResult
  predict: object = None  # predict(result, images) -> probabilities; None: the classifier's
  attack_predict: object = None  # what the membership attack reads; None: `predict`'s outputs
  setup_seconds: float = 0.0  # a method's sub-stages run with counts=False (SISA's ensemble)


@dataclasses.dataclass(frozen=True)
class SeedRun:
  """One seed of a job: its folder and its split."""
  job: Job
  seed: int
  dir: str
  split: data.Split


def run(config, workdir, *, overwrite=False):
  """Runs (or resumes) the job of `config` in `workdir`; returns the results dict.

  Everything that can be checked is checked before anything is written (the
  config, the methods, batch sizes, the data, each seed's split), so a
  refused run leaves nothing that blocks its corrected rerun.
  """
  parallel.maybe_initialize_distributed()
  validate(config)
  mesh = parallel.make_mesh()
  check_batch_sizes(config, mesh)
  dataset = data.load(config.data.name, data_dir=config.data.data_dir,
                      manual_dir=config.data.manual_dir, image_size=config.data.image_size or None,
                      download=config.data.download)
  for seed in config.seeds:
    new_split(config, dataset, seed)  # raises for a forget class the data lacks, etc.
  prepare_workdir(config, workdir, overwrite)
  logging.info("%s: %d training / %d test images of shape %s on %d devices.", dataset.name,
               len(dataset.train_labels), len(dataset.test_labels), dataset.image_shape,
               jax.device_count())
  job = Job(config, workdir, dataset, mesh, create_model(config, dataset),
            data.Preprocess(dataset.mean, dataset.std, config.data.crop_padding,
                            config.data.random_flip))
  todo = unfinished(config, workdir)
  if not todo:
    logging.info("Every model of this job was evaluated already: rebuilding the table only.")
  for seed in config.seeds:
    run_seed(job, seed, todo)
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
  if config.model.name not in models.names():
    raise ValueError(f"Unknown model {config.model.name!r}; known models: "
                     f"{', '.join(models.names())}.")
  if len(set(config.seeds)) != len(config.seeds):
    raise ValueError(f"seeds={tuple(config.seeds)} repeats a seed; give each seed once.")
  if len(set(config.methods)) != len(config.methods):
    raise ValueError(f"methods={tuple(config.methods)} repeats a method; name each once.")
  for name in config.methods:
    method = methods.get(name)
    if config.setup == "noisy" and not method.uses_labels:
      raise ValueError(f"The noisy setup is for label-aware methods only; remove {name!r}.")
    method.hyperparameters(config)  # raises for a variant's unknown field
  if not config.seeds:
    raise ValueError("seeds is empty; give at least one seed.")


def check_batch_sizes(config, mesh):
  """Every batch size of the config (the job's and the methods' sections') splits over the mesh."""
  for field in ("batch_size", "eval_batch_size"):
    parallel.check_batch_size(config[field], mesh, field)
  for name in config.methods:
    method = methods.get(name)
    for field, value in method.hyperparameters(config).items():
      if field.endswith("batch_size"):
        parallel.check_batch_size(value, mesh, f"{method.section}.{field}")


def unfinished(config, workdir):
  """{(seed, model)} whose evaluation is not saved yet."""
  return {(seed, name) for seed in config.seeds
          for name in (INITIAL, RETRAIN, *config.methods)
          if not os.path.exists(os.path.join(workdir, f"seed_{seed}", "eval", f"{name}.json"))}


def create_model(config, dataset):
  return models.create(config.model.name, num_classes=dataset.num_classes,
                       dtype=config.model.dtype, cpu_onednn=config.model.cpu_onednn,
                       **config.model.kwargs)


# -- the workdir and its stages' identities ---------------------------------------------


def stage_identities(config):
  """{stage: {field: value}} for every stage and evaluation this config runs."""
  stages = {identity.SPLIT: identity.stage_fields(config, identity.SPLIT)}
  for stage in (identity.PRETRAIN, identity.RETRAIN):
    stages[stage] = identity.stage_fields(config, stage)
  for name in config.methods:
    stages[f"unlearn_{name}"] = identity.stage_fields(config, name, methods.get(name))
  models_of = {INITIAL: identity.PRETRAIN, RETRAIN: identity.RETRAIN,
               **{name: f"unlearn_{name}" for name in config.methods}}
  for name, stage in models_of.items():
    stages[f"eval/{name}"] = identity.evaluation_fields(config, stages[stage])
  return stages


def _stage_paths(seed_dir, stage):
  if stage == identity.SPLIT:
    return [os.path.join(seed_dir, "split.npz")]
  if stage.startswith("eval/"):
    name = stage.removeprefix("eval/")
    return [os.path.join(seed_dir, "eval", f"{name}{suffix}")
            for suffix in (".json", "_losses.npz", "_samples.npz")]
  return [os.path.join(seed_dir, stage)]


def prepare_workdir(config, workdir, overwrite):
  """Checks every recorded stage against `config`; refuses, or deletes the changed ones.

  A stage whose recorded fields differ from this config's is refused with
  the fields' names, unless `overwrite`, which deletes just those stages.
  Then writes config.json (process 0).
  """
  expected = stage_identities(config)
  stale = {}
  for seed in config.seeds:
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    recorded = identity.read(seed_dir)
    for stage, fields in expected.items():
      changed = identity.differing(recorded.get(stage, {}), fields)
      # A stage that failed before saving anything blocks nothing.
      if changed and _has_output(seed_dir, stage):
        stale.setdefault(seed, {})[stage] = changed
  if stale and not overwrite:
    lines = "; ".join(f"seed {seed}: {stage} ({', '.join(fields)})"
                      for seed, stages in stale.items() for stage, fields in stages.items())
    raise ValueError(f"{workdir} holds stages made with other values of fields they depend "
                     f"on: {lines}. Use another --workdir, or pass --overwrite to delete and "
                     "redo just those stages.")
  if jax.process_index() != 0:
    return
  for seed, stages in stale.items():
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    for stage in stages:
      logging.info("Deleting seed %d's %s: its fields changed.", seed, stage)
      for path in _stage_paths(seed_dir, stage):
        shutil.rmtree(path) if os.path.isdir(path) else _remove(path)
      identity.forget(seed_dir, stage)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  # Written whole and renamed, so that processes sharing the workdir never
  # read a half-written file.
  with open(f"{path}.{os.getpid()}.tmp", "w") as f:
    json.dump(json.loads(config.to_json_best_effort()), f, indent=2)
  os.replace(f"{path}.{os.getpid()}.tmp", path)


def _has_output(seed_dir, stage):
  """Whether `stage` saved anything: its file, or a checkpoint in its folder or a sub-folder."""
  path = _stage_paths(seed_dir, stage)[0]
  if not os.path.isdir(path):
    return os.path.exists(path)
  return any(loop.has_checkpoint(root) for root, _, _ in os.walk(path))


def _remove(path):
  if os.path.exists(path):
    os.remove(path)


def _record(run_, stage):
  if jax.process_index() == 0:
    identity.record(run_.dir, stage, stage_identities(run_.job.config)[stage])


def derive_seed(seed, name):
  """A stable per-(seed, purpose) integer seed (unlike hash(), the same in every process)."""
  return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


# -- one seed ---------------------------------------------------------------------------


def run_seed(job, seed, todo=None):
  """Trains, unlearns and evaluates whatever of `seed` is not finished yet.

  `todo`, the job's unfinished (seed, model) pairs, numbers the progress lines.
  """
  run_ = SeedRun(job, seed, os.path.join(job.workdir, f"seed_{seed}"), make_split(job, seed))
  initial = functools.cache(functools.partial(pretrain, run_))
  trainers = {INITIAL: initial, RETRAIN: functools.partial(retrain, run_),
              **{name: functools.partial(unlearn, run_, name, initial)
                 for name in job.config.methods}}
  order = sorted(todo or (), key=lambda item: (job.config.seeds.index(item[0]),
                                                list(trainers).index(item[1])))
  for name, train in trainers.items():
    if (seed, name) in order:
      logging.info("Job: model %d of %d (seed %d, %s).", order.index((seed, name)) + 1,
                   len(order), seed, name)
    evaluate(run_, name, train)


def new_split(config, dataset, seed):
  """The split `config` gives for `seed` (raises for settings the data cannot meet)."""
  c = config
  return data.make_split(
      c.setup, dataset.train_labels, num_classes=dataset.num_classes, seed=seed,
      forget_class=c.forget_class, forget_classes=c.forget_classes,
      forget_fraction=c.forget_fraction, noisy_classes=c.noisy_classes,
      noisy_fraction=c.noisy_fraction, unlabelled_fraction=c.unlabelled_fraction)


def make_split(job, seed):
  """The seed's split, saved on first use; a saved one must equal what the config gives."""
  c, seed_dir = job.config, os.path.join(job.workdir, f"seed_{seed}")
  path = os.path.join(seed_dir, "split.npz")
  split = new_split(c, job.dataset, seed)
  if os.path.exists(path):
    saved = data.Split.load(path)
    if not (saved.forget.tolist() == split.forget.tolist()
            and saved.train_labels.tolist() == split.train_labels.tolist()):
      raise ValueError(f"{path} does not match the split this config and seed give.")
    return saved
  if jax.process_index() == 0:
    os.makedirs(seed_dir, exist_ok=True)
    # Written whole and renamed: the other processes read it meanwhile.
    with open(f"{path}.{os.getpid()}.tmp", "wb") as f:
      split.save(f)
    os.replace(f"{path}.{os.getpid()}.tmp", path)
    identity.record(seed_dir, identity.SPLIT, stage_identities(c)[identity.SPLIT])
  return split


def stage(run_, name, **kwargs):
  """loop.run_stage in the seed's folder `name`, with the config's intervals."""
  c = run_.job.config
  return loop.run_stage(name=f"seed {run_.seed} / {name}",
                        directory=os.path.join(run_.dir, name),
                        checkpoint_every=c.checkpoint_every_steps, log_every=c.log_every_steps,
                        write_summaries=jax.process_index() == 0, **kwargs)


def device_batches(run_, pipeline_fn, **kwargs):
  """batches(start_step) -> device batches of `pipeline_fn`, prefetched onto the mesh."""
  sharding = parallel.data_sharded(run_.job.mesh)
  return lambda start: parallel.device_prefetch(pipeline_fn(start_step=start, **kwargs), sharding)


# -- supervised stages --------------------------------------------------------------------


def initial_key(run_, stage_name):
  return jax.random.key(derive_seed(run_.seed, stage_name))


def theta0(run_):
  """The variables pretraining starts from (θ_0), recomputed from the same key."""
  job = run_.job
  init = functools.partial(supervised.init_variables, job.model,
                           image_shape=job.dataset.image_shape)
  return jax.jit(init, out_shardings=parallel.replicated(job.mesh))(
      initial_key(run_, identity.PRETRAIN))


def pretrain(run_):
  """f_D on all of D."""
  return supervised_stage(run_, identity.PRETRAIN, np.arange(len(run_.split.train_labels)))


def retrain(run_):
  """The gold standard on D_r."""
  return supervised_stage(run_, identity.RETRAIN, run_.split.remain)


def supervised_stage(run_, name, indices):
  """Trains a classifier from scratch on `indices` (or reuses one of another workdir)."""
  job, section = run_.job, run_.job.config[name]
  if section.reuse_workdir:
    return reused(run_, name, section.reuse_workdir)
  _record(run_, name)
  tx = optax.adam(section.lr)
  state = supervised.create_train_state(job.model, tx, initial_key(run_, name),
                                        job.dataset.image_shape, job.mesh)
  batch_size = job.config.batch_size
  num_steps = section.epochs * data.steps_per_epoch(len(indices), batch_size)
  result = stage(
      run_, name, state=state, num_steps=num_steps, examples_per_step=batch_size,
      step_fn=parallel.jit_step(supervised.train_step, job.mesh, model=job.model, tx=tx),
      batches=device_batches(
          run_, data.train_pipeline, images=job.dataset.train_images,
          labels=run_.split.train_labels, indices=indices, batch_size=batch_size,
          num_steps=num_steps, seed=derive_seed(run_.seed, name), preprocess=job.preprocess))
  return Trained(result.state.variables, result)


def reused(run_, name, other_workdir):
  """Loads a finished stage of another workdir trained on the same data.

  f_D only needs the same training labels (so a class-setup run can lend it
  to a data-setup run); Retrain also needs the same forget set.
  """
  job = run_.job
  other = os.path.join(other_workdir, f"seed_{run_.seed}")
  saved = data.Split.load(os.path.join(other, "split.npz"))
  same = saved.train_labels.tolist() == run_.split.train_labels.tolist()
  if name == identity.RETRAIN:
    same = same and saved.forget.tolist() == run_.split.forget.tolist()
  if not same:
    raise ValueError(f"{other} trained {name} on other data; it cannot be reused here.")
  tx = optax.adam(job.config[name].lr)
  state = supervised.create_train_state(job.model, tx, jax.random.key(0),
                                        job.dataset.image_shape, job.mesh)
  result = loop.restore_finished(os.path.join(other, name), state)
  return Trained(result.state.variables, result)


# -- unlearning ---------------------------------------------------------------------------


def unlearn(run_, name, initial):
  """Runs method `name` from f_D; its time is totalled over its sub-stages."""
  job, method = run_.job, methods.get(name)
  initial_variables = initial().result
  folder = f"unlearn_{name}"
  _record(run_, folder)
  results, setup = [], []

  def run_phase(phase, state, frozen, sub_folder, counts=True):
    """One phase as a checkpointed stage; its seed separates its data from other phases'.

    Its time counts as the method's, or with `counts=False` as its setup's.
    """
    methods.check_stream(method, phase.stream, phase.sets, run_.split.forget)
    for key, side in phase.stream.items():
      parallel.check_batch_size(side.batch_size, job.mesh, f"{name} {phase.name} {key} batch")
    step = jitted.setdefault(phase.step, parallel.jit_step(phase.step, job.mesh, num_frozen=1))
    directory = os.path.join(folder, sub_folder) if sub_folder else folder
    if phase.enter and not loop.has_checkpoint(os.path.join(run_.dir, directory)):
      state = jax.jit(phase.enter, out_shardings=parallel.replicated(job.mesh))(state)
    result = stage(
        run_, directory, state=state, step_fn=step, args=(frozen,), num_steps=phase.num_steps,
        examples_per_step=phase.examples_per_step,
        batches=phase_batches(run_, phase, phase.num_steps,
                              derive_seed(run_.seed, f"{name}/{sub_folder}" if sub_folder
                                          else name)))
    (results if counts else setup).append((result, phase.num_steps * phase.examples_per_step))
    return result.state

  jitted = {}
  ctx = methods.UnlearnContext(
      model=job.model, initial=initial_variables, theta0=functools.partial(theta0, run_),
      recipe=config_lib.pretraining_recipe(job.config),
      image_shape=job.dataset.image_shape, num_classes=job.dataset.num_classes,
      num_forget=len(run_.split.forget), num_remain=len(run_.split.remain),
      batch_size=job.config.batch_size, config=method.hyperparameters(job.config),
      seed=derive_seed(run_.seed, name), mesh=job.mesh, preprocess=job.preprocess,
      forget=run_.split.forget, remain=run_.split.remain,
      run=lambda phase, state, counts=True: run_phase(
          phase, state, {"initial": initial_variables}, phase.name, counts))
  program = method.build(ctx)
  frozen = {"initial": initial_variables,
            **jax.device_put(dict(program.frozen), parallel.replicated(job.mesh))}
  state = program.state
  for phase in program.phases:
    state = run_phase(phase, state, frozen, phase.name if len(program.phases) > 1 else "")
  if program.samples:
    batch = next(phase_batches(run_, program.phases[0], 1, derive_seed(run_.seed, name))(0))
    save(run_, f"{name}_samples.npz", parallel.host_value(program.samples(state, batch, frozen)))
  return Trained(program.result(state), _total(results), program.predict,
                 program.attack_predict, sum(r.seconds for r, _ in setup))


def phase_batches(run_, phase, num_steps, seed):
  """batches(start_step) -> device batches of `phase`'s stream over the seed's split."""
  job, split = run_.job, run_.split
  return device_batches(run_, data.stream_pipeline, images=job.dataset.train_images,
                        labels=split.train_labels, forget=split.forget, remain=split.remain,
                        stream=phase.stream, num_steps=num_steps, sets=phase.sets, seed=seed,
                        preprocess=job.preprocess)


def _total(results):
  """One StageResult for a method's sub-stages: times summed, throughput over all steps.

  A method may run no counted phase (SISA when no shard holds a deleted sample).
  """
  seconds = sum(r.seconds for r, _ in results)
  examples = sum(n for _, n in results)
  return loop.StageResult(results[-1][0].state if results else None, seconds,
                          examples / seconds if seconds > 0 else 0.0,
                          sum(r.compile_seconds for r, _ in results))


# -- evaluation ---------------------------------------------------------------------------


def evaluate(run_, name, train):
  """Evaluates model `name`, trained by `train() -> Trained`, unless that is done already.

  Writes eval/<name>.json (metrics,
  stage and compile time, throughput) last, so its presence marks the
  evaluation finished, and eval/<name>_losses.npz, the per-sample
  cross-entropy on D_f and the test set for the report's plots.
  """
  if os.path.exists(os.path.join(run_.dir, "eval", f"{name}.json")):
    return
  job, split = run_.job, run_.split
  trained = train()
  train_probs, test_probs = probabilities(run_, trained.result, trained.predict)
  attack_probs = (probabilities(run_, trained.result, trained.attack_predict)
                  if trained.attack_predict else None)
  scores, attack = metrics.evaluate(
      train_probs, test_probs, attack_probs=attack_probs, setup=job.config.setup, split=split,
      test_labels=job.dataset.test_labels, forget_class=job.config.forget_class,
      attack_sets=metrics.AttackSets.make(split.forget, split.remain,
                                          len(job.dataset.test_labels), run_.seed),
      seed=run_.seed, trees=job.config.asr.trees)
  record = {"metrics": scores, "attack": attack, "seconds": trained.stage.seconds,
            "compile_seconds": trained.stage.compile_seconds,
            "examples_per_sec": trained.stage.examples_per_sec}
  if trained.setup_seconds:
    record["setup_seconds"] = trained.setup_seconds
  logging.info("seed %d / %s: %s", run_.seed, name,
               ", ".join(f"{k}={v:.2f}" for k, v in record["metrics"].items()))
  save(run_, f"{name}_losses.npz", {
      "forget": metrics.per_sample_cross_entropy(train_probs[split.forget],
                                                 split.train_labels[split.forget]),
      "test": metrics.per_sample_cross_entropy(test_probs, job.dataset.test_labels)})
  save(run_, f"{name}.json", record)
  _record(run_, f"eval/{name}")


def probabilities(run_, result, predict=None):
  """Softmax outputs (or a method's own) on the training and the test set."""
  job = run_.job
  predict = metrics.make_predict(predict or metrics.classifier_probs(job.model), job.mesh)
  return [metrics.predict_probs(predict, result, images, labels, np.arange(len(labels)),
                                batch_size=job.config.eval_batch_size,
                                preprocess=job.preprocess, mesh=job.mesh)
          for images, labels in [(job.dataset.train_images, run_.split.train_labels),
                                 (job.dataset.test_images, job.dataset.test_labels)]]


def save(run_, filename, content):
  """Writes eval/<filename> (.json or .npz) from process 0."""
  if jax.process_index() != 0:
    return
  path = os.path.join(run_.dir, "eval", filename)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if filename.endswith(".json"):
    with open(path, "w") as f:
      json.dump(content, f, indent=2)
  else:
    np.savez(path, **content)
