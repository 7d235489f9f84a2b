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
    seed_<s>/eval/<model>_*.npz       what the plots read: per-sample losses,
                                      the t-SNE sample's embeddings, mixed samples
    results.json, results.md          mean ± std over seeds, gap to Retrain
    plots/                            the report's figures
Every stage and evaluation is skipped when finished and resumed when not. A
rerun may add methods and seeds or change operational fields; a stage whose
own fields changed is refused, or with `overwrite` deleted and redone
(engine/identity.py).
"""

import dataclasses
import functools
import glob
import json
import os
import shutil
import time
import zlib

from absl import logging
import jax
import numpy as np
import optax

from mixunlearn_jax import config as config_lib
from mixunlearn_jax import data
from mixunlearn_jax import methods
from mixunlearn_jax import models
from mixunlearn_jax import runtime
from mixunlearn_jax.engine import identity
from mixunlearn_jax.engine import loop
from mixunlearn_jax.engine import mean_teacher
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.engine import stopping
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
  raw_test_order: np.ndarray | None = None  # data.raw_test_order; None: the arrays' own order


class Progress:
  """The job's position and an ETA for the whole job, from the models it finished so far."""

  def __init__(self, todo, seeds, names):
    self.order = sorted(todo, key=lambda item: (list(seeds).index(item[0]),
                                                list(names).index(item[1])))
    self.started = time.monotonic()

  def log(self, seed, name):
    if (seed, name) not in self.order:
      return
    done, total = self.order.index((seed, name)), len(self.order)
    line = f"Job: model {done + 1} of {total} (seed {seed}, {name})"
    if done:  # the mean time of the models done so far, for each one left
      elapsed = time.monotonic() - self.started
      line += f"; {elapsed:.0f} s so far, job eta ~{elapsed / done * (total - done):.0f} s"
    logging.info("%s.", line)


@dataclasses.dataclass(frozen=True)
class Trained:
  """A stage's model: what evaluation predicts with, and how the stage ran."""
  result: object  # classifier variables, or a method's own result
  stage: loop.StageResult
  predict: object = None  # predict(result, images) -> probabilities; None: the classifier's
  attack_predict: object = None  # what the membership attack reads; None: `predict`'s outputs
  setup_seconds: float = 0.0  # a method's sub-stages run with counts=False (SISA's ensemble)
  stop: dict | None = None  # the stopping rule's summary (stopping.Watch.summary), when on


@dataclasses.dataclass(frozen=True)
class SeedRun:
  """One seed of a job: its folder and its split.

  `request`: with sequential deletion requests (sequential.py), the samples
  this request deletes, while `split.forget` holds every request's so far
  (what Retrain leaves out and the metrics score); None: `split.forget`.
  """
  job: Job
  seed: int
  dir: str
  split: data.Split
  request: np.ndarray | None = None

  @property
  def deleting(self):
    """The D_f that unlearning reads now."""
    return self.split.forget if self.request is None else self.request


def run(config, workdir, *, overwrite=False):
  """Runs (or resumes) the job of `config` in `workdir`; returns the results dict.

  Everything that can be checked is checked before anything is written (the
  config, the methods, batch sizes, the data, each seed's split), so a
  refused run leaves nothing that blocks its corrected rerun.
  """
  parallel.maybe_initialize_distributed()
  job = make_job(config, workdir)
  prepare_workdir(config, workdir, overwrite)
  logging.info("%s: %d training / %d test images of shape %s on %d devices.", job.dataset.name,
               len(job.dataset.train_labels), len(job.dataset.test_labels),
               job.dataset.image_shape, jax.device_count())
  if config.requests > 1:
    # Imported here: sequential.py builds on this module.
    from mixunlearn_jax import sequential  # pylint: disable=g-import-not-at-top
    return sequential.run(job)
  todo = unfinished(config, workdir)
  if not todo:
    logging.info("Every model of this job was evaluated already: rebuilding the table only.")
  progress = Progress(todo, config.seeds, model_names(config))
  for seed in config.seeds:
    run_seed(job, seed, progress)
  if jax.process_index() == 0:
    return report.rebuild(workdir, metrics.metric_names(config.setup), config.to_dict())
  return None


def make_job(config, workdir):
  """The Job of `config`: validated, its data loaded and each seed's split checked; writes
  nothing."""
  validate(config)
  mesh = parallel.make_mesh()
  check_batch_sizes(config, mesh)
  dataset = data.load(config.data.name, data_dir=config.data.data_dir,
                      manual_dir=config.data.manual_dir, image_size=config.data.image_size or None,
                      download=config.data.download)
  for seed in config.seeds:
    new_split(config, dataset, seed)  # raises for a forget class the data lacks, etc.
  raw_test_order = (data.raw_test_order(dataset, config.data.manual_dir)
                    if "laf" in config.asr.protocols else None)
  return Job(config, workdir, dataset, mesh, create_model(config, dataset),
             data.Preprocess(dataset.mean, dataset.std, config.data.crop_padding,
                             config.data.random_flip), raw_test_order)


def trainers(run_, initial):
  """{model: train() -> Trained} of a seed (or a request): f_D, Retrain, each method."""
  return {INITIAL: initial, RETRAIN: functools.partial(retrain, run_),
          **{name: functools.partial(unlearn, run_, name, initial)
             for name in run_.job.config.methods}}


def validate(config):
  """Errors for values that would otherwise fail deep inside the run."""
  if config.setup not in data.SETUPS:
    raise ValueError(f"setup={config.setup!r}; known setups: {', '.join(data.SETUPS)}.")
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
    if config.setup == "semi" and method.labels != "none":
      raise ValueError(f"The semi setup hides most labels and is for label-agnostic methods "
                       f"only; {name!r} reads {method.labels} labels: remove it.")
    method.hyperparameters(config)  # raises for a variant's unknown field
  if config.stop.enabled:
    validate_stop(config)
  if config.requests < 1:
    raise ValueError(f"requests must be at least 1, got {config.requests}.")
  if config.requests > 1 and config.stop.enabled:
    raise ValueError("The stopping rule does not yet watch sequential requests: set "
                     "stop.enabled=False or requests=1.")
  if not config.seeds:
    raise ValueError("seeds is empty; give at least one seed.")
  if config.model.pretrained_npz:
    validate_pretrained(config)
  protocols = tuple(config.asr.protocols)
  if (not protocols or len(set(protocols)) != len(protocols)
      or not set(protocols) <= set(metrics.PROTOCOLS)):
    raise ValueError(f"asr.protocols={protocols}: name one or more of "
                     f"{', '.join(metrics.PROTOCOLS)}, each once (the first is the ASR column).")


def validate_pretrained(config):
  """`model.pretrained_npz` names a file that the supervised stages can start from."""
  path = config.model.pretrained_npz
  if config.model.name not in models.VIT_VARIANTS:
    raise ValueError(f"model.pretrained_npz loads ViT checkpoints, but model.name is "
                     f"{config.model.name!r}; use one of {', '.join(models.VIT_VARIANTS)}.")
  if config.setup == "semi":
    raise ValueError("model.pretrained_npz is not supported in the semi setup (its Mean "
                     "Teacher starts from scratch).")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"model.pretrained_npz={path!r} is not a file.")


def validate_stop(config):
  """The stopping rule compares D_f with held-out samples of its own classes and labels."""
  if config.setup not in ("class", "data"):
    raise ValueError(f"stop.enabled works in the class and data setups, not {config.setup!r}: "
                     "its D_f is not a sample of its classes with their labels.")
  for field in ("heldout_per_class", "check_every", "patience"):
    if config.stop[field] < 1:
      raise ValueError(f"stop.{field} must be at least 1, got {config.stop[field]}.")


def check_batch_sizes(config, mesh):
  """Every batch size of the config (the job's and the methods' sections') splits over the mesh."""
  for field in ("batch_size", "eval_batch_size"):
    parallel.check_batch_size(config[field], mesh, field)
  for name in config.methods:
    method = methods.get(name)
    for field, value in method.hyperparameters(config).items():
      if field.endswith("batch_size"):
        parallel.check_batch_size(value, mesh, f"{method.section}.{field}")


def model_names(config):
  """Every model a seed of the job evaluates, in the order it trains them."""
  return (INITIAL, RETRAIN, *config.methods)


def unfinished(config, workdir):
  """{(seed, model)} whose evaluation is not saved yet."""
  return {(seed, name) for seed in config.seeds for name in model_names(config)
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
    stages[model_stage(name)] = identity.stage_fields(config, name, methods.get(name))
  for name in (INITIAL, RETRAIN, *config.methods):
    stages[f"eval/{name}"] = identity.evaluation_fields(config, stages[model_stage(name)])
  return stages


def model_stage(name):
  """The stage (a folder of a seed's) that trains model `name`: f_D's, Retrain's or a method's."""
  return {INITIAL: identity.PRETRAIN, RETRAIN: identity.RETRAIN}.get(name, f"unlearn_{name}")


def _stage_paths(seed_dir, stage):
  if stage == identity.SPLIT:
    return [os.path.join(seed_dir, "split.npz")]
  if stage.startswith("eval/"):
    name = stage.removeprefix("eval/")
    return [os.path.join(seed_dir, "eval", f"{name}{suffix}")
            for suffix in (".json", "_losses.npz", "_samples.npz", "_embed.npz")]
  return [os.path.join(seed_dir, stage)]


def prepare_workdir(config, workdir, overwrite):
  """Checks every recorded stage against `config`; refuses, or deletes the changed ones.

  A stage whose recorded fields differ from this config's is refused with
  the fields' names, unless `overwrite`, which deletes just those stages.
  Then writes config.json (process 0).
  """
  expected = stage_identities(config)
  stale = {}  # {(folder, its name in messages): {stage: changed fields}}
  for seed in config.seeds:
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    # Sequential deletion requests keep their stages in request_<r>/ (sequential.py).
    requests = sorted(glob.glob(os.path.join(seed_dir, "request_*")))
    for folder in (seed_dir, *requests):
      recorded = identity.read(folder)
      where = f"seed {seed}" + (f" {os.path.basename(folder)}" if folder != seed_dir else "")
      for stage, fields in expected.items():
        changed = identity.differing(recorded.get(stage, {}), fields)
        # A stage that failed before saving anything blocks nothing.
        if changed and _has_output(folder, stage):
          stale.setdefault((folder, where), {})[stage] = changed
  if stale and not overwrite:
    lines = "; ".join(f"{where}: {stage} ({', '.join(fields)})"
                      for (_, where), stages in stale.items() for stage, fields in stages.items())
    raise ValueError(f"{workdir} holds stages made with other values of fields they depend "
                     f"on: {lines}. Use another --workdir, or pass --overwrite to delete and "
                     "redo just those stages.")
  if jax.process_index() != 0:
    return
  for (folder, where), stages in stale.items():
    for stage in stages:
      logging.info("Deleting %s's %s: its fields changed.", where, stage)
      for path in _stage_paths(folder, stage):
        shutil.rmtree(path) if os.path.isdir(path) else _remove(path)
      identity.forget(folder, stage)
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


def run_seed(job, seed, progress=None):
  """Trains, unlearns and evaluates whatever of `seed` is not finished yet.

  `progress` (a Progress over the job's unfinished models) logs each model's position.
  """
  run_ = seed_run(job, seed)
  for name, train in trainers(run_, functools.cache(functools.partial(pretrain, run_))).items():
    if progress:
      progress.log(seed, name)
    evaluate(run_, name, train)


def seed_run(job, seed):
  return SeedRun(job, seed, os.path.join(job.workdir, f"seed_{seed}"), make_split(job, seed))


def new_split(config, dataset, seed):
  """The split `config` gives for `seed` (raises for settings the data cannot meet)."""
  c = config
  return data.make_split(
      c.setup, dataset.train_labels, num_classes=dataset.num_classes, seed=seed,
      forget_class=c.forget_class, forget_classes=c.forget_classes,
      forget_fraction=c.forget_fraction, noisy_classes=c.noisy_classes,
      noisy_fraction=c.noisy_fraction, unlabelled_fraction=c.unlabelled_fraction,
      heldout_per_class=c.stop.heldout_per_class if c.stop.enabled else 0)


def make_split(job, seed):
  """The seed's split, saved on first use; a saved one must equal what the config gives."""
  c, seed_dir = job.config, os.path.join(job.workdir, f"seed_{seed}")
  path = os.path.join(seed_dir, "split.npz")
  split = new_split(c, job.dataset, seed)
  if os.path.exists(path):
    saved = data.Split.load(path)
    if not (saved.forget.tolist() == split.forget.tolist()
            and saved.train_labels.tolist() == split.train_labels.tolist()
            and np.array_equal(saved.heldout, split.heldout)):
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
  directory = os.path.join(run_.dir, name)
  # Named by its folder in the workdir: 'seed_0/request_2/unlearn_neggrad'.
  return loop.run_stage(name=os.path.relpath(directory, run_.job.workdir), directory=directory,
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
  """The variables pretraining starts from (θ_0), recomputed from the same key and file."""
  job = run_.job
  init = functools.partial(supervised.init_variables, job.model,
                           image_shape=job.dataset.image_shape)
  variables = jax.jit(init, out_shardings=parallel.replicated(job.mesh))(
      initial_key(run_, identity.PRETRAIN))
  if job.config.model.pretrained_npz:
    variables = dict(variables, params=pretrained(job, variables["params"]))
  return variables


def pretrained(job, params):
  """`params` with every weight but the head from `model.pretrained_npz`, replicated.

  f_D and Retrain both fine-tune the checkpoint, as the paper's ViT runs
  fine-tune ImageNet-21k weights (appendix A.11); the head, sized for this
  dataset's classes, keeps its initialisation. A stage's own checkpoint,
  when it has one, is restored over this start.
  """
  loaded = models.load_pretrained_npz(job.config.model.pretrained_npz, jax.device_get(params))
  return jax.device_put(jax.tree.map(np.asarray, loaded), parallel.replicated(job.mesh))


def pretrain(run_):
  """f_D on all of D."""
  return supervised_stage(run_, identity.PRETRAIN, run_.split.train)


def retrain(run_):
  """The gold standard on D_r."""
  return supervised_stage(run_, identity.RETRAIN, run_.split.remain)


def supervised_stage(run_, name, indices):
  """Trains a classifier from scratch on `indices` (or reuses one of another workdir)."""
  job, section = run_.job, run_.job.config[name]
  if section.reuse_workdir:
    return reused(run_, name, section.reuse_workdir)
  _record(run_, name)
  batch_size = job.config.batch_size
  steps_per_epoch = data.steps_per_epoch(len(indices), batch_size)
  num_steps = section.epochs * steps_per_epoch
  state, step_fn = trainer(run_, name, steps_per_epoch)
  result = stage(
      run_, name, state=state, num_steps=num_steps, examples_per_step=batch_size,
      step_fn=step_fn,
      batches=device_batches(
          run_, data.train_pipeline, images=job.dataset.train_images,
          labels=run_.split.train_labels, labelled=run_.split.labelled, indices=indices,
          batch_size=batch_size, num_steps=num_steps, seed=derive_seed(run_.seed, name),
          preprocess=job.preprocess))
  return Trained(result.state.variables, result)


def trainer(run_, name, steps_per_epoch):
  """(initial state, jitted step) of supervised stage `name`.

  In the semi setup, Mean Teacher on the split's labelled samples (the
  state's `variables` are the teacher's); otherwise Adam on cross-entropy.
  """
  job = run_.job
  tx, key = optax.adam(job.config[name].lr), initial_key(run_, name)
  if job.config.setup != "semi":
    state = supervised.create_train_state(job.model, tx, key, job.dataset.image_shape, job.mesh)
    if job.config.model.pretrained_npz:
      # A fresh Adam state holds no parameter values, so it suits the loaded ones too.
      state = state.replace(params=pretrained(job, state.params))
    return state, parallel.jit_step(supervised.train_step, job.mesh, model=job.model, tx=tx)
  schedule = mean_teacher.Schedule.make(job.config.mean_teacher, steps_per_epoch)
  noise_key = jax.random.key(derive_seed(run_.seed, f"{name}/mean_teacher"))
  state = mean_teacher.create_state(job.model, tx, key, noise_key, job.dataset.image_shape,
                                    job.mesh)
  return state, parallel.jit_step(mean_teacher.train_step, job.mesh, model=job.model, tx=tx,
                                  schedule=schedule)


def reused(run_, name, other_workdir):
  """Loads a finished stage of another workdir trained on the same data.

  f_D only needs the same training labels (so a class-setup run can lend it
  to a data-setup run) and the same hidden ones; Retrain also needs the
  same forget set.
  """
  other = os.path.join(other_workdir, f"seed_{run_.seed}")
  saved = data.Split.load(os.path.join(other, "split.npz"))
  # A mask of None (every label known) equals only None; so does a held-out pool.
  same = (saved.train_labels.tolist() == run_.split.train_labels.tolist()
          and np.array_equal(saved.labelled, run_.split.labelled)
          and np.array_equal(saved.heldout, run_.split.heldout))
  if name == identity.RETRAIN:
    same = same and saved.forget.tolist() == run_.split.forget.tolist()
  if not same:
    raise ValueError(f"{other} trained {name} on other data; it cannot be reused here.")
  state, _ = trainer(run_, name, steps_per_epoch=1)  # the restore target's structure
  result = loop.restore_finished(os.path.join(other, name), state)
  return Trained(result.state.variables, result)


# -- unlearning ---------------------------------------------------------------------------


def unlearn(run_, name, initial):
  """Runs method `name` from f_D; its time is totalled over its sub-stages."""
  job, method = run_.job, methods.get(name)
  initial_variables = initial().result
  folder = model_stage(name)
  _record(run_, folder)
  results, setup = [], []

  def run_phase(phase, state, frozen, sub_folder, counts=True, monitor=None):
    """One phase as a checkpointed stage; its seed separates its data from other phases'.

    Its time counts as the method's, or with `counts=False` as its setup's;
    `monitor` (the stopping rule) may end it early.
    """
    methods.check_stream(method, phase.stream, phase.sets, run_.deleting)
    for key, side in phase.stream.items():
      parallel.check_batch_size(side.batch_size, job.mesh, f"{name} {phase.name} {key} batch")
    step = jitted.setdefault(phase.step, parallel.jit_step(phase.step, job.mesh, num_frozen=1))
    directory = os.path.join(folder, sub_folder) if sub_folder else folder
    lent = None if counts else lent_setup(run_, name, directory, state)
    if lent:
      setup.append((lent, lent.steps * phase.examples_per_step))
      return lent.state
    if phase.enter and not loop.has_checkpoint(os.path.join(run_.dir, directory)):
      state = jax.jit(phase.enter, out_shardings=parallel.replicated(job.mesh))(state)
    result = stage(
        run_, directory, state=state, step_fn=step, args=(frozen,), num_steps=phase.num_steps,
        examples_per_step=phase.examples_per_step,
        batches=phase_batches(run_, phase, phase.num_steps,
                              derive_seed(run_.seed, f"{name}/{sub_folder}" if sub_folder
                                          else name)), monitor=monitor)
    (results if counts else setup).append((result, result.steps * phase.examples_per_step))
    return result.state

  jitted = {}
  ctx = methods.UnlearnContext(
      model=job.model, initial=initial_variables, theta0=functools.partial(theta0, run_),
      recipe=config_lib.pretraining_recipe(job.config),
      image_shape=job.dataset.image_shape, num_classes=job.dataset.num_classes,
      num_forget=len(run_.deleting), num_remain=len(run_.split.remain),
      batch_size=job.config.batch_size, config=method.hyperparameters(job.config),
      seed=derive_seed(run_.seed, name), mesh=job.mesh, preprocess=job.preprocess,
      forget=run_.deleting, remain=run_.split.remain,
      run=lambda phase, state, counts=True: run_phase(
          phase, state, {"initial": initial_variables}, phase.name, counts))
  program = method.build(ctx)
  frozen = {"initial": initial_variables,
            **jax.device_put(dict(program.frozen), parallel.replicated(job.mesh))}
  state = program.state
  # The rule watches the program's phases as one run (not ctx.run's auxiliary models): a
  # stop in one phase skips the phases after it.
  watch = stop_watch(run_, program, initial_variables)
  for phase in program.phases:
    state = run_phase(phase, state, frozen, phase.name if len(program.phases) > 1 else "",
                      monitor=watch)
    if watch and watch.advance(phase.num_steps, results[-1][0]):
      break
  summary = watch and watch.summary(sum(phase.num_steps for phase in program.phases))
  if summary:
    logging.info("seed %d / %s: %s.", run_.seed, name, stopping.describe(summary))
  if program.samples:
    batch = next(phase_batches(run_, program.phases[0], 1, derive_seed(run_.seed, name))(0))
    save(run_, f"{name}_samples.npz", parallel.host_value(program.samples(state, batch, frozen)))
  return Trained(program.result(state), _total(results), program.predict,
                 program.attack_predict, sum(r.seconds for r, _ in setup), summary)


def lent_setup(run_, name, directory, state):
  """Method `name`'s setup sub-stage `directory` as it finished in another workdir, or None.

  A method's work before any deletion request (ctx.run(..., counts=False): SISA's and
  DSMixup's initial shard ensembles) does not depend on the stopping rule's settings, so a
  run with the rule takes it from the fixed-budget run's workdir
  (`config.method_setup_reuse_workdir`) instead of training it again. Taken only once the
  method is evaluated there (no process writes it any more), from a stage made with the
  same fields but the rule's own; None (train it here) while it is not, when its
  checkpoint is gone there (a workdir restored from evaluation records), or when this
  run has a checkpoint of its own.
  """
  other_workdir = run_.job.config.method_setup_reuse_workdir
  if not other_workdir or loop.has_checkpoint(os.path.join(run_.dir, directory)):
    return None
  other = os.path.join(other_workdir, os.path.relpath(run_.dir, run_.job.workdir))
  if not (os.path.exists(os.path.join(other, "eval", f"{name}.json"))
          and loop.has_checkpoint(os.path.join(other, directory))):
    logging.info("%s has no evaluated %s: training %s here.", other, name, directory)
    return None
  stage_name = model_stage(name)
  theirs = identity.read(other).get(stage_name, {})
  ours = identity.stage_fields(run_.job.config, name, methods.get(name))
  changed = identity.differing(identity.before_request(theirs), identity.before_request(ours))
  if changed:
    raise ValueError(f"{other} made {stage_name} with other values of {', '.join(changed)}: "
                     "its setup cannot be reused here (method_setup_reuse_workdir).")
  logging.info("%s: taken as finished from %s.", directory, other)
  return loop.restore_finished(os.path.join(other, directory), state)


def stop_watch(run_, program, initial_variables):
  """The stopping rule over `program`'s phases (engine/stopping.py); None when it is off."""
  job = run_.job
  if not job.config.stop.enabled:
    return None
  pool = stopping.place_pool(run_.split, job.config.setup, run_.seed,
                             images=job.dataset.train_images, preprocess=job.preprocess,
                             chunk=job.config.eval_batch_size, mesh=job.mesh)
  classifier = metrics.classifier_probs(job.model)
  # f_D's statistics, once: the guard's reference and the trace's step 0.
  initial = jax.jit(stopping.measure(lambda variables: variables, classifier))(
      initial_variables, pool)
  return stopping.Watch(
      stopping.Rule.from_config(job.config),
      stopping.measure(program.result, program.predict or classifier, program.attack_predict),
      pool, job.mesh, {k: float(v) for k, v in jax.device_get(initial).items()})


def phase_batches(run_, phase, num_steps, seed):
  """batches(start_step) -> device batches of `phase`'s stream over the seed's split."""
  job, split = run_.job, run_.split
  return device_batches(run_, data.stream_pipeline, images=job.dataset.train_images,
                        labels=split.train_labels, forget=run_.deleting, remain=split.remain,
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
                          sum(r.compile_seconds for r, _ in results),
                          results[-1][0].metrics if results else {},
                          steps=sum(r.steps for r, _ in results))


# -- evaluation ---------------------------------------------------------------------------


def evaluate(run_, name, train):
  """Evaluates model `name`, trained by `train() -> Trained`, unless that is done already.

  Writes eval/<name>.json (metrics, the machine, stage and compile time,
  throughput) last, so its presence marks the
  evaluation finished, eval/<name>_losses.npz, the per-sample
  cross-entropy on D_f and the test set for the report's plots, and
  eval/<name>_embed.npz, the embeddings of the t-SNE sample (a single
  classifier only: an ensemble's vote has no one embedding).
  """
  if os.path.exists(os.path.join(run_.dir, "eval", f"{name}.json")):
    return
  job, split = run_.job, run_.split
  try:
    trained = train()
    train_probs, test_probs, attack_probs = outputs(run_, name, trained)
  except loop.NonFiniteLossError as e:
    if name in (INITIAL, RETRAIN):  # every other model needs them
      raise
    diverged(run_, name, e)
    return
  scores, attack = metrics.evaluate(
      train_probs, test_probs, attack_probs=attack_probs, setup=job.config.setup, split=split,
      test_labels=job.dataset.test_labels,
      forget_class=np.unique(split.train_labels[split.forget]),  # every request's so far
      attack_sets=attack_sets(run_), seed=run_.seed, trees=job.config.asr.trees)
  record = {"metrics": scores, "attack": attack, "machine": runtime.machine(),
            "seconds": trained.stage.seconds,
            "compile_seconds": trained.stage.compile_seconds,
            "examples_per_sec": trained.stage.examples_per_sec}
  if trained.setup_seconds:
    record["setup_seconds"] = trained.setup_seconds
  if trained.stop:
    record["stop"] = trained.stop
  logging.info("seed %d / %s: %s", run_.seed, name,
               ", ".join(f"{k}={v:.2f}" for k, v in record["metrics"].items()))
  save(run_, f"{name}_losses.npz", {
      "forget": metrics.per_sample_cross_entropy(train_probs[split.forget],
                                                 split.train_labels[split.forget]),
      "test": metrics.per_sample_cross_entropy(test_probs, job.dataset.test_labels)})
  if job.config.tsne.samples:
    if trained.predict is None:
      save(run_, f"{name}_embed.npz", embeddings(run_, trained.result))
    else:
      logging.info("seed %d / %s: no embedding for the t-SNE plot: its predictions are not "
                   "one classifier's.", run_.seed, name)
  save(run_, f"{name}.json", record)
  _record(run_, f"eval/{name}")


def outputs(run_, name, trained):
  """(train, test, attack) outputs of a trained model (attack: None when it reads the first two).

  A model whose losses stayed finite can still output NaN: a step after the
  last loss check blows its weights up (SCRUB's ascent on D_f, stopped by the
  guard right after). No metric or attacker reads NaN, so this is divergence
  too, raised as NonFiniteLossError.
  """
  train_probs, test_probs = probabilities(run_, trained.result, trained.predict)
  attack_probs = (probabilities(run_, trained.result, trained.attack_predict)
                  if trained.attack_predict else None)
  if not all(np.isfinite(p).all() for p in (train_probs, test_probs, *(attack_probs or ()))):
    stage = os.path.relpath(os.path.join(run_.dir, model_stage(name)), run_.job.workdir)
    raise loop.NonFiniteLossError(stage, trained.stage.steps, {"outputs": "nan"})
  return train_probs, test_probs, attack_probs


def diverged(run_, name, error):
  """Records that method `name` diverged, in place of its evaluation, so the job goes on.

  A baseline run at defaults tuned for another dataset may diverge (NegGrad+'s
  unbounded ascent on D_f): the table then says where, instead of the job
  failing after hours. Like an evaluation, the record marks the model
  finished; its last good checkpoint stays, and `--overwrite` after a config
  change reruns it.
  """
  logging.warning("seed %d / %s diverged: %s It is reported as diverged; the job goes on.",
                  run_.seed, name, error)
  save(run_, f"{name}.json", {"diverged": {"stage": error.stage, "step": error.step,
                                           "values": {k: str(v) for k, v in error.values.items()}}})
  _record(run_, f"eval/{name}")


def attack_sets(run_):
  """The attack's index sets, one per protocol in `asr.protocols` (the first is 'ASR')."""
  job, split = run_.job, run_.split
  num_test = len(job.dataset.test_labels)
  order = np.arange(num_test) if job.raw_test_order is None else job.raw_test_order
  make = {"spec": lambda: metrics.AttackSets.make(split.forget, split.remain, num_test, run_.seed),
          "laf": lambda: metrics.AttackSets.laf(split.forget, split.remain, order, run_.seed)}
  return [make[protocol]() for protocol in job.config.asr.protocols]


def embeddings(run_, variables):
  """features['embed'] of the seed's fixed sample (metrics.embedding_sample), for the t-SNE.

  Returns {'embed', 'index' (into the training or the test set), 'set' (the
  name in metrics.EMBEDDING_SETS), 'label' (the true class)}.
  """
  job, split = run_.job, run_.split
  sample = metrics.embedding_sample(split.forget, split.remain, len(job.dataset.test_labels),
                                    run_.seed, job.config.tsne.samples)
  embed = metrics.make_predict(metrics.classifier_embeddings(job.model), job.mesh)
  parts = {"embed": [], "index": [], "set": [], "label": []}
  for name in metrics.EMBEDDING_SETS:
    images, labels = ((job.dataset.test_images, job.dataset.test_labels) if name == "test"
                      else (job.dataset.train_images, job.dataset.train_labels))
    indices = sample[name]
    parts["embed"].append(metrics.predict_probs(
        embed, variables, images, labels, indices, batch_size=job.config.eval_batch_size,
        preprocess=job.preprocess, mesh=job.mesh))
    parts["index"].append(indices)
    parts["set"].append(np.full(len(indices), name))
    parts["label"].append(labels[indices])
  return {key: np.concatenate(values) for key, values in parts.items()}


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
