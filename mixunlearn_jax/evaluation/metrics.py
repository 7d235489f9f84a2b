"""Accuracies and membership-inference ASR (spec §6).

Each model's softmax outputs on the training and test sets are computed once
(jitted, batch-sharded, every example exactly once); every metric is then a
cheap function of those outputs.
"""

import dataclasses
import math

import jax
import numpy as np
from sklearn import ensemble
import threadpoolctl

from mixunlearn_jax.data import pipeline
from mixunlearn_jax.engine import parallel

CLASS_METRICS = ("Test_r", "Test_f", "ASR")
DATA_METRICS = ("Train_r", "Train_f", "Test", "ASR")


def metric_names(setup):
  return CLASS_METRICS if setup == "class" else DATA_METRICS


def classifier_probs(model, logit_scale=1.0):
  """`predict(variables, images) -> softmax probabilities` (float32) of one classifier.

  `logit_scale` k multiplies the logits first: the same predictions, k times as sure
  (confidence.py; k = 1 is exact).
  """

  def predict(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return jax.nn.softmax(logits.astype(np.float32) * logit_scale)

  return predict


def classifier_embeddings(model):
  """`embed(variables, images) -> features['embed']` (float32) of one classifier."""

  def embed(variables, images):
    _, features = model.apply(variables, images, train=False)
    return features["embed"].astype(np.float32)

  return embed


def make_predict(predict, mesh):
  """`predict(result, images) -> probabilities` jitted: result replicated, images sharded.

  The outputs are replicated, so every process holds the whole batch's
  probabilities (XLA gathers them from all processes' devices).
  """
  return jax.jit(predict, in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
                 out_shardings=parallel.replicated(mesh))


def predict_probs(predict, variables, images, labels, indices, *, batch_size, preprocess, mesh):
  """Softmax outputs for `indices`, in order, in every process.

  Each process feeds its slice of every batch; the padding ends the last
  batch, so the outputs' first len(indices) rows are the examples.
  """
  outputs = []
  batches = pipeline.eval_pipeline(images, labels, indices, batch_size=batch_size,
                                   preprocess=preprocess)
  images = (batch["image"] for batch in batches)
  for batch_images in parallel.device_prefetch(images, parallel.data_sharded(mesh)):
    outputs.append(jax.device_get(predict(variables, batch_images)))
  return np.concatenate(outputs)[:len(indices)] if outputs else np.zeros((0, 0), np.float32)


def accuracy(probs, labels):
  """Top-1 accuracy in percent."""
  return 100.0 * float(np.mean(np.argmax(probs, axis=-1) == labels)) if len(labels) else float("nan")


def per_sample_cross_entropy(probs, labels):
  """-log p(label) per sample, with probabilities clipped away from zero."""
  return -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))


PROTOCOLS = ("spec", "laf")  # the attack's protocols (spec §6), config.asr.protocols
LAF_CAP = 5024  # LAF's code: at most this many members and non-members to fit on


def asr_name(protocol, first):
  """The metric a protocol's ASR is reported as: 'ASR' for the first one, else 'ASR_<name>'."""
  return "ASR" if first else f"ASR_{protocol}"


@dataclasses.dataclass(frozen=True)
class AttackSets:
  """Index sets of a membership-inference protocol (fixed per seed).

  The attacker is fitted on members (label 1) against non-members (label 0)
  and scored on `forget` (label 1) with `heldout` (label 0).
  """
  members: np.ndarray  # training indices the attacker is fitted on as members
  nonmembers: np.ndarray  # test indices it is fitted on as non-members
  heldout: np.ndarray  # test indices it is scored on
  forget: np.ndarray  # training indices of D_f it is scored on
  protocol: str = "spec"  # which attacker (_ATTACKERS)

  @classmethod
  def make(cls, forget, remain, num_test, seed):
    """The spec's protocol: members a |D_f|-sized sample of D_r, non-members the test
    set's first half; scored on D_f (at most the second half's size) and as many test
    images of the second half: two equal sides."""
    rng = np.random.default_rng([seed, 7])
    members = rng.choice(remain, size=min(len(forget), len(remain)), replace=False)
    half = num_test // 2
    count = min(len(forget), num_test - half)
    scored = np.sort(rng.choice(forget, size=count, replace=False))
    heldout = np.sort(rng.choice(np.arange(half, num_test), size=count, replace=False))
    return cls(np.sort(members), np.arange(half), heldout, scored)

  @classmethod
  def laf(cls, forget, remain, raw_test_order, seed):
    """LAF's code's protocol: members a |D_f|-sized sample of D_r, the first LAF_CAP
    drawn; non-members the first LAF_CAP test images in the raw files' order
    (`raw_test_order`, data.raw_test_order); fitted on 99% of the two together (a 1%
    split it never uses, as sklearn's train_test_split(test_size=0.01) cuts it);
    scored on all of D_f and the other test images, sides of their own sizes."""
    rng = np.random.default_rng([seed, 8])
    members = rng.choice(remain, size=min(len(forget), len(remain)), replace=False)[:LAF_CAP]
    nonmembers = np.asarray(raw_test_order[:LAF_CAP])
    total = len(members) + len(nonmembers)
    fit = rng.permutation(total)[:total - math.ceil(0.01 * total)]
    member = fit < len(members)
    return cls(np.sort(members[fit[member]]), np.sort(nonmembers[fit[~member] - len(members)]),
               np.sort(raw_test_order[LAF_CAP:]), np.sort(forget), protocol="laf")


# The attackers' settings: the spec's, scikit-learn's defaults; LAF's, XGBoost's defaults (its
# code's attacker) as far as scikit-learn's histogram boosting has them: learning rate 0.3,
# depth 6, L2 1 (XGBoost bounds a leaf by hessian weight 1, scikit-learn by 20 samples).
_ATTACKERS = {"spec": {},
              "laf": {"learning_rate": 0.3, "max_depth": 6, "max_leaf_nodes": None,
                      "l2_regularization": 1.0}}


EMBEDDING_SETS = ("forget", "remain", "test")


def embedding_sample(forget, remain, num_test, seed, size):
  """{'forget', 'remain', 'test': sorted indices}: up to `size` of each set, fixed per seed.

  D_f and D_r index the training set, 'test' the test set. Every model of a
  seed embeds the same images, so their t-SNE plots compare like with like.
  """
  rng = np.random.default_rng([seed, 11])
  pools = {"forget": forget, "remain": remain, "test": np.arange(num_test)}
  return {name: np.sort(rng.choice(pools[name], size=min(size, len(pools[name])), replace=False))
          for name in EMBEDDING_SETS}


def membership_attack(train_probs, test_probs, sets: AttackSets, *, seed, trees=100):
  """The membership-inference attack (spec §6): ASR and its two sides, in percent.

  A gradient-boosted-trees attacker on sorted softmax vectors is fitted on
  members (label 1) vs non-members (label 0) and scored on D_f (label 1)
  together with held-out test samples (label 0). ASR is the pooled accuracy:
  with the spec's sets, two sides of one size, the mean of `forget_as_member`
  (D_f called a member) and `heldout_as_nonmember` (held-out test samples
  called non-members); the two tell which side moves a model's ASR away from
  Retrain's.
  """
  features = lambda p: -np.sort(-p, axis=-1)  # noqa: E731 (descending)
  x_fit = np.concatenate([features(train_probs[sets.members]), features(test_probs[sets.nonmembers])])
  y_fit = np.concatenate([np.ones(len(sets.members)), np.zeros(len(sets.nonmembers))])
  # One OpenMP thread: the same trees (checked), and on a busy CPU the threads' waits for
  # each other made a fit 10x slower (1,000 features: 2.2 s of CPU instead of 0.2 s).
  with threadpoolctl.threadpool_limits(1):
    attacker = ensemble.HistGradientBoostingClassifier(
        max_iter=trees, early_stopping=False, random_state=seed,
        **_ATTACKERS[sets.protocol]).fit(x_fit, y_fit)
    # LAF's sets score no test image when the test set has at most LAF_CAP (digits).
    called_member = lambda p: (attacker.predict(features(p)) == 1 if len(p)  # noqa: E731
                               else np.zeros(0, bool))
    forget_member = called_member(train_probs[sets.forget])
    heldout_member = called_member(test_probs[sets.heldout])
  percent = lambda hits: 100.0 * float(np.mean(hits)) if len(hits) else float("nan")  # noqa: E731
  return {"ASR": percent(np.concatenate([forget_member, ~heldout_member])),
          "forget_as_member": percent(forget_member),
          "heldout_as_nonmember": percent(~heldout_member)}


def evaluate(train_probs, test_probs, *, setup, split, test_labels, forget_class, attack_sets, seed,
             trees=100, attack_probs=None):
  """(metrics, the attack's breakdown) for one model, from its softmax outputs.

  `attack_sets`: one AttackSets, or several (one per protocol): the first
  one's ASR is the setup's 'ASR', the others' are added as 'ASR_<protocol>'
  and their breakdowns under the breakdown's key <protocol>.
  `attack_probs` ((train, test) outputs), if given, is what the attack reads
  instead (e.g. an ensemble's mean softmax where accuracy reads its vote).
  """
  attack_train, attack_test = attack_probs if attack_probs is not None else (train_probs,
                                                                               test_probs)
  first, *others = attack_sets if isinstance(attack_sets, (list, tuple)) else [attack_sets]
  attack = membership_attack(attack_train, attack_test, first, seed=seed, trees=trees)
  extra = {}
  for sets in others:
    attack[sets.protocol] = membership_attack(attack_train, attack_test, sets, seed=seed,
                                              trees=trees)
    extra[asr_name(sets.protocol, first=False)] = attack[sets.protocol]["ASR"]
  results = {"ASR": attack["ASR"]}
  if setup == "class":
    forgotten = np.isin(test_labels, forget_class)  # one class, or several (sequential)
    results["Test_r"] = accuracy(test_probs[~forgotten], test_labels[~forgotten])
    results["Test_f"] = accuracy(test_probs[forgotten], test_labels[forgotten])
  else:
    labels = split.train_labels
    results["Train_r"] = accuracy(train_probs[split.remain], labels[split.remain])
    results["Train_f"] = accuracy(train_probs[split.forget], labels[split.forget])
    results["Test"] = accuracy(test_probs, test_labels)
  return {**{name: results[name] for name in metric_names(setup)}, **extra}, attack
